"""`dvx dataset …`: drafts and versions of datasets."""

from __future__ import annotations

import click

from dvx.cli.common import LazyGroup, common, emit, human_size, progress_bar, store_option, table

_STATUS_MARK = {"added": "A", "removed": "D", "modified": "M", "renamed": "R"}


def render_changes(changes, stat: bool = False) -> None:
    from dvx.api import summarise

    if not stat:
        for change in changes:
            text = f"{change.old_path} -> {change.path}" if change.kind == "renamed" else change.path
            click.echo(f"{_STATUS_MARK[change.kind]}  {text}")
    counts = summarise(changes)
    if not changes:
        click.echo("no changes")
        return
    click.echo(f"{counts['added']} added ({human_size(counts['bytes_added'])}), "
               f"{counts['modified']} modified ({human_size(counts['bytes_modified'])}), "
               f"{counts['removed']} removed ({human_size(counts['bytes_removed'])}), "
               f"{counts['renamed']} renamed")


def _draft(name: str | None):
    from dvx.api import Dataset

    return Dataset.open(name, store=store_option())


dataset_name_option = click.option("--dataset", "name", metavar="NAME",
                                   help="Draft to act on (default: the current draft).")
shared_draft_option = click.option("--draft", "draft_id", metavar="ID",
                                   help="Act on the shared draft ID (from `create --shared`) instead.")


def _shared(draft_id: str, name: str | None = None):
    """The shared draft ID (a draft in the store that several machines add to)."""
    from dvx.api import SharedDraft
    from dvx.errors import UsageError

    if name:
        raise UsageError("give either --draft ID (a shared draft) or a local draft's name, not both")
    return SharedDraft.open(draft_id, store=store_option())


@click.group("dataset", cls=LazyGroup, lazy={"delete": "dvx.cli.gc:dataset_delete"})
def dataset_group() -> None:
    """Create, change, commit and inspect dataset versions."""


@dataset_group.command("create")
@click.argument("name")
@click.option("--parent", "parents", multiple=True, metavar="REF",
              help="Parent version (repeat to merge; on a path in several parents the first wins). "
                   "Default: NAME's latest version.")
@click.option("-m", "--message", default="", help="Commit message (can also be given at commit).")
@click.option("--replace", is_flag=True, help="Discard an open draft of NAME first.")
@click.option("--shared", is_flag=True,
              help="Make a shared draft in the store and print its id: workers anywhere add to it with --draft ID.")
@common
def create(name: str, parents: tuple[str, ...], message: str, replace: bool, shared: bool) -> None:
    """Open a draft of the next version of NAME."""
    from dvx.api import Dataset

    if shared:
        from dvx.api import SharedDraft

        if replace:
            from dvx.errors import UsageError

            raise UsageError("--replace applies to local drafts; a shared draft always starts afresh")
        shared_draft = SharedDraft.create(name, list(parents) or None, message, store=store_option())
        header = shared_draft.header

        def human_shared() -> None:
            click.echo(header.id)  # alone on stdout, for DRAFT=$(dvx dataset create NAME --shared)
            base = f" from {', '.join(header.parent_refs)}" if header.parent_refs else " (new dataset)"
            click.echo(f"opened shared draft {header.id} of {name}{base}; "
                       f"add to it with `dvx dataset add PATH --draft {header.id}`", err=True)

        emit({"draft": header.id, "name": name, "parents": header.parent_refs,
              "store": shared_draft.repo.settings.store_url}, human_shared)
        return
    draft = Dataset.create(name, list(parents) or None, message, store=store_option(), replace=replace)
    state = draft.state()
    emit({"name": name, "parents": state.parent_refs, "store": state.store_url},
         lambda: click.echo(f"opened a draft of {name}"
                            + (f" from {', '.join(state.parent_refs)}" if state.parent_refs else " (new dataset)")))


@dataset_group.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--to", "to", default="", metavar="DIR", help="Folder in the dataset to put them under.")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip matching files (repeatable).")
@dataset_name_option
@shared_draft_option
@common
def add(paths: tuple[str, ...], to: str, exclude: tuple[str, ...], name: str | None, draft_id: str | None) -> None:
    """Add files or folders (a folder's contents go to the dataset root, or under --to)."""
    draft = _shared(draft_id, name) if draft_id else _draft(name)
    result = draft.add(*paths, to=to, exclude=exclude, progress=progress_bar)
    emit(result.to_dict(), lambda: click.echo(
        f"added {result.files} files ({human_size(result.bytes)}): read {result.read_files}, "
        f"unchanged {result.unchanged_files}; stored {human_size(result.stored_bytes)} new"
        + (f" in {result.packs} packs" if result.packs else "")))


@dataset_group.command("remove")
@click.argument("patterns", nargs=-1, required=True)
@dataset_name_option
@shared_draft_option
@common
def remove(patterns: tuple[str, ...], name: str | None, draft_id: str | None) -> None:
    """Remove files matching globs (relative to the dataset root) from the draft."""
    removed = (_shared(draft_id, name) if draft_id else _draft(name)).remove(*patterns)
    emit({"removed": removed}, lambda: click.echo(f"removed {len(removed)} files"))


@dataset_group.command("sync")
@click.argument("folder", type=click.Path())
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip matching files (repeatable).")
@dataset_name_option
@common
def sync(folder: str, exclude: tuple[str, ...], name: str | None) -> None:
    """Make the draft's root equal FOLDER: adds, modifies and removes files."""
    changes = _draft(name).sync(folder, exclude=exclude, progress=progress_bar)
    emit({"changes": [c.to_dict() for c in changes]}, lambda: render_changes(changes, stat=True))


@dataset_group.command("status")
@dataset_name_option
@shared_draft_option
@common
def status(name: str | None, draft_id: str | None) -> None:
    """What the draft changes against its parent(s); with --draft, the shared draft's state and parts."""
    if draft_id:
        info = _shared(draft_id, name).status()

        def human_shared() -> None:
            base = ", ".join(info["parents"]) or "nothing (new dataset)"
            state = info["state"] + (f" as {info['version']}" if info["version"] else "")
            click.echo(f"shared draft {info['id']} of {info['name']} against {base}: {state}")
            for part in info["parts"]:
                click.echo(f"{part['id']}  {part['author']}  {part['created'][:19]}  {part['files']} files, "
                           f"{human_size(part['bytes'])}" + (f", {part['removed']} removed" if part["removed"] else ""))
            click.echo(f"{len(info['parts'])} parts")

        emit(info, human_shared)
        return
    draft = _draft(name)
    changes = draft.status()
    state = draft.state()

    def human() -> None:
        base = ", ".join(state.parent_refs) or "nothing (new dataset)"
        click.echo(f"draft of {state.name} against {base}")
        render_changes(changes)

    emit({"name": state.name, "parents": state.parent_refs, "changes": [c.to_dict() for c in changes]}, human)


@dataset_group.command("commit")
@click.option("-m", "--message", default=None, help="Describe the version.")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Tag the new version (repeatable).")
@click.option("--force", is_flag=True, help="Move tags that point at another version.")
@click.option("--allow-empty", is_flag=True, help="Make a version even if nothing changed.")
@dataset_name_option
@shared_draft_option
@common
def commit(message: str | None, tags: tuple[str, ...], force: bool, allow_empty: bool, name: str | None,
           draft_id: str | None) -> None:
    """Turn the draft into a new immutable version NAME@vN (with --draft: merge the shared draft's parts)."""
    if draft_id:
        result = _shared(draft_id, name).commit(message, tags, force_tags=force)
    else:
        result = _draft(name).commit(message, tags, force_tags=force, allow_empty=allow_empty)
    version = result.version

    def human() -> None:
        if not result.created:
            click.echo(f"nothing changed; {version.ref} is current  {version.id}")
        else:
            click.echo(f"{version.ref}  {version.id}")

    emit(result.to_dict(), human)


@dataset_group.command("discard")
@click.argument("name", required=False)
@shared_draft_option
@common
def discard(name: str | None, draft_id: str | None) -> None:
    """Throw away an open draft (default: the current one), or the shared draft given by --draft."""
    if draft_id:
        shared = _shared(draft_id, name)
        shared.discard()
        emit({"discarded": shared.name, "draft": shared.id},
             lambda: click.echo(f"discarded shared draft {shared.id} of {shared.name}"))
        return
    draft = _draft(name)
    draft.discard()
    emit({"discarded": draft.name}, lambda: click.echo(f"discarded the draft of {draft.name}"))


@dataset_group.command("drafts")
@common
def drafts() -> None:
    """List open drafts for the store."""
    from dvx import api

    names = api.drafts(store=store_option())
    emit({"drafts": names}, lambda: [click.echo(n) for n in names] or (None if names else click.echo("no drafts")))


@dataset_group.command("list")
@common
def list_() -> None:
    """List datasets with their latest version."""
    from dvx import api

    rows = api.datasets(store=store_option())

    def human() -> None:
        if not rows:
            click.echo("no datasets yet: start with `dvx dataset create NAME`")
            return
        table([(r["name"], r["latest"], r["versions"], r["files"], human_size(r["bytes"]), r["created"][:19],
                "yes" if r["draft"] else "") for r in rows],
              ["NAME", "LATEST", "VERSIONS", "FILES", "SIZE", "CREATED", "DRAFT"])

    emit(rows, human)


@dataset_group.command("log")
@click.argument("name")
@click.option("--graph", is_flag=True, help="Draw parent links.")
@common
def log(name: str, graph: bool) -> None:
    """Versions of NAME, newest first."""
    from dvx import api

    versions = api.log(name, store=store_option())

    def human() -> None:
        for v in versions:
            tags = f" ({', '.join(v.tags)})" if v.tags else ""
            head = f"{'* ' if graph else ''}v{v.version}  {v.short_id}  {v.created[:19]}  {v.author}"
            click.echo(f"{head}  {v.files} files, {human_size(v.bytes)}{tags}")
            if v.message:
                click.echo(f"{'|   ' if graph else '    '}{v.message}")
            if graph:
                own = f"{name}@v{v.version - 1}"
                others = [p for p in v.parents if p != own]
                if len(v.parents) > 1 or others:
                    click.echo(f"|\\  merge of {', '.join(v.parents)}" if len(v.parents) > 1
                               else f"|   parent {', '.join(v.parents)}")
                elif v.version > 1:
                    click.echo("|")

    emit([v.to_dict() for v in versions], human)


@dataset_group.command("show")
@click.argument("ref")
@common
def show(ref: str) -> None:
    """Details of one version: id, parents, tags, sizes, stored bytes."""
    from dvx import api

    info = api.show(ref, store=store_option())

    def human() -> None:
        rows = [("ref", info["ref"]), ("id", info["id"]), ("created", info["created"]), ("author", info["author"]),
                ("message", info["message"]), ("parents", ", ".join(info["parents"]) or "-"),
                ("tags", ", ".join(info["tags"]) or "-"), ("files", info["files"]),
                ("size", human_size(info["bytes"])),
                ("stored", f"{human_size(info['stored_bytes'])} in {info['chunks']} chunks, {info['packs']} packs"),
                ("new in this version", human_size(info["stored_new_bytes"]))]
        for key, value in rows:
            click.echo(f"{key + ':':22}{value}")

    emit(info, human)

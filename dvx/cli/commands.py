"""Top-level commands: init, store, ls, diff, get, tag, push, fetch."""

from __future__ import annotations

import click

from dvx.cli.common import common, emit, human_size, options, progress_bar, store_option
from dvx.cli.dataset import render_changes


@click.command("init")
@click.option("--store", "store_url", metavar="URL", help="Store this project uses (written to dvx.toml).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
@click.option("--debug", is_flag=True, hidden=True)
@click.pass_context
def init(ctx: click.Context, store_url: str | None, as_json: bool, debug: bool) -> None:
    """Make the current folder a dvx project (writes dvx.toml and .dvx/)."""
    from dvx import api

    root = options(ctx)
    store_url = store_url or root.store
    path = api.init(".", store_url)
    if as_json or root.json:
        import json

        click.echo(json.dumps({"project_file": str(path), "store": store_url}))
    else:
        click.echo(f"wrote {path}" + (f" (store: {store_url})" if store_url else ""))


@click.command("store")
@common
def store() -> None:
    """Show which store is active, why, and where local state and caches live."""
    from dvx import api

    info = api.store_info(store=store_option())

    def human() -> None:
        click.echo(f"store:    {info['url']}")
        click.echo(f"from:     {info['source']}")
        click.echo(f"status:   {'initialised' if info['initialised'] else 'not created yet (created by the first `dvx dataset create`)'}")
        click.echo(f"project:  {info['project'] or '-'}")
        click.echo(f"state:    {info['state_dir']}")
        click.echo(f"cache:    {info['cache_dir']} (max {human_size(info['cache_max_bytes'])})")

    emit(info, human)


@click.command("ls")
@click.argument("ref")
@click.argument("path", required=False, default="")
@click.option("-r", "--recursive", is_flag=True, help="List every file below PATH.")
@common
def ls(ref: str, path: str, recursive: bool) -> None:
    """List the files and folders of a version."""
    from dvx import api

    rows = api.ls(ref, path, recursive, store=store_option())

    def human() -> None:
        for row in rows:
            if row["type"] == "folder":
                click.echo(f"{human_size(row['size']):>10}  {row['path']}  ({row['files']} files)")
            elif row["type"] == "link":
                click.echo(f"{'link':>10}  {row['path']} -> {row['link']}")
            else:
                click.echo(f"{human_size(row['size']):>10}  {row['path']}{'*' if row['executable'] else ''}")

    emit(rows, human)


@click.command("diff")
@click.argument("ref_a")
@click.argument("ref_b")
@click.option("--stat", is_flag=True, help="Only counts and bytes.")
@common
def diff(ref_a: str, ref_b: str, stat: bool) -> None:
    """What changed from REF_A to REF_B."""
    from dvx import api

    changes = api.diff(ref_a, ref_b, store=store_option())
    emit({"changes": [c.to_dict() for c in changes], "summary": api.summarise(changes)},
         lambda: render_changes(changes, stat))


@click.command("get")
@click.argument("ref")
@click.option("-o", "--output", "dest", metavar="DIR", type=click.Path(),
              help="Write a writable copy here (default: read-only copy in the shared cache).")
@click.option("--glob", "globs", multiple=True, metavar="GLOB", help="Only matching files (repeatable).")
@click.option("--part", metavar="I/N", help="Only worker I's share of N (0-based), split by file.")
@click.option("--shuffle-seed", type=int, metavar="S",
              help="With --part: split by this seed (as dvx.files(..., shuffle_seed=S)), e.g. the epoch.")
@click.option("--link", type=click.Choice(["copy", "hardlink", "symlink", "reflink"]), default="copy",
              show_default=True, help="How files reach -o DIR.")
@common
def get(ref: str, dest: str | None, globs: tuple[str, ...], part: str | None, shuffle_seed: int | None,
        link: str) -> None:
    """Fetch a version (or part of it) and print where it is."""
    from dvx import api

    path = api.get(ref, dest, list(globs), part, link, store=store_option(), progress=progress_bar,
                   shuffle_seed=shuffle_seed)
    emit({"ref": ref, "path": str(path)}, lambda: click.echo(str(path)))


@click.command("tag")
@click.argument("ref")
@click.argument("tag_name", metavar="TAG")
@click.option("--force", is_flag=True, help="Move the tag if it points at another version.")
@click.option("--delete", is_flag=True, help="Remove the tag (its history is kept).")
@common
def tag(ref: str, tag_name: str, force: bool, delete: bool) -> None:
    """Point TAG at the version REF (tags are unique per name)."""
    from dvx import api

    version = api.tag(ref, tag_name, force=force, delete=delete, store=store_option())
    emit({"tag": tag_name, "ref": version.ref, "id": version.id, "deleted": delete},
         lambda: click.echo(f"{'deleted tag ' + tag_name if delete else tag_name + ' -> ' + version.ref}"))





def _transfer_options(command):
    command = click.option("--model", is_flag=True, help="REFs name models (with their aliases, tags and "
                                                           "metrics) instead of datasets.")(command)
    command = click.option("--force-tags", is_flag=True,
                           help="Move tags that point at other versions there (default: keep them).")(command)
    return click.option("-j", "--jobs", type=click.IntRange(min=1), metavar="N",
                        help="Packs moved at once (default: DVX_JOBS, dvx.toml [transfer] jobs, or 4).")(command)


def _render_transfer(result) -> None:
    click.echo(f"{result.source} -> {result.destination}")
    click.echo(f"versions: {len(result.versions_copied)} copied, {len(result.versions_present)} already there"
               + (f" ({', '.join(result.versions_copied)})" if result.versions_copied else ""))
    click.echo(f"packs:    {result.packs_copied} copied ({human_size(result.bytes_copied)}), "
               f"{result.packs_present} already there")
    if result.tags_set:
        click.echo(f"tags:     {', '.join(result.tags_set)}")
    for tag in result.tags_kept:
        click.echo(f"kept tag {tag}: it points at another version there (use --force-tags to move it)", err=True)


@click.command("push")
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@click.option("--to", "to", required=True, metavar="STORE", help="Destination: a store URL or a name from dvx.toml.")
@_transfer_options
@common
def push(refs: tuple[str, ...], to: str, model: bool, force_tags: bool, jobs: int | None) -> None:
    """Copy versions (NAME = all its versions) with their lineage, data and tags to another store."""
    from dvx import api

    result = api.push(list(refs), to, kind="model" if model else "dataset", force_tags=force_tags, jobs=jobs,
                      store=store_option(), progress=progress_bar)
    emit(result.to_dict(), lambda: _render_transfer(result))


@click.command("fetch")
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@click.option("--from", "from_", required=True, metavar="STORE", help="Source: a store URL or a name from dvx.toml.")
@_transfer_options
@common
def fetch(refs: tuple[str, ...], from_: str, model: bool, force_tags: bool, jobs: int | None) -> None:
    """Copy versions (NAME = all its versions) with their lineage, data and tags from another store."""
    from dvx import api

    result = api.fetch(list(refs), from_, kind="model" if model else "dataset", force_tags=force_tags, jobs=jobs,
                       store=store_option(), progress=progress_bar)
    emit(result.to_dict(), lambda: _render_transfer(result))

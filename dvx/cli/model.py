"""`dvx model …`: the model registry — versions, aliases with history, tags, metrics, lineage to data."""

from __future__ import annotations

import click

from dvx.cli.common import (
    LazyGroup,
    common,
    emit,
    human_size,
    progress_bar,
    store_option,
    table,
    wants_json,
)


def _models():
    from dvx.api import Model

    return Model


def _metrics_text(metrics: dict, limit: int = 3) -> str:
    items = [f"{k}={_short(v)}" for k, v in sorted(metrics.items())]
    return ", ".join(items[:limit]) + (f", +{len(items) - limit}" if len(items) > limit else "") or "-"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@click.group("model", cls=LazyGroup, lazy={"delete": "dvx.cli.gc:model_delete"})
def model_group() -> None:
    """Register model versions; move aliases; tag, annotate, list, show and get them."""


@model_group.command("register")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--dataset", "datasets", multiple=True, metavar="REF",
              help="Dataset version it was trained on (repeatable; recorded by content id).")
@click.option("--metric", "metrics", multiple=True, metavar="K=V", help="A metric (numeric; repeatable).")
@click.option("--param", "params", multiple=True, metavar="K=V", help="A training parameter (repeatable).")
@click.option("--meta", "metadata", multiple=True, metavar="K=V", help="Free metadata (repeatable).")
@click.option("--framework", metavar="NAME", help="e.g. pytorch, jax, sklearn.")
@click.option("-m", "--message", default="", help="What this version is.")
@click.option("--alias", "aliases", multiple=True, metavar="ALIAS", help="Point this alias here (repeatable).")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="A free tag (repeatable).")
@click.option("--parent", metavar="REF", help="Parent model version (default: NAME's latest).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip matching files (repeatable).")
@click.option("--force", is_flag=True, help="Move protected aliases too.")
@common
def register(name, paths, datasets, metrics, params, metadata, framework, message, aliases, tags, parent,
             exclude, force) -> None:
    """Store PATHS (files or folders) as the next version of model NAME."""
    version = _models().register(name, list(paths), datasets=datasets, metrics=metrics, params=params,
                                 metadata=metadata, framework=framework, message=message, aliases=aliases,
                                 tags=tags, parent=parent, force=force, exclude=exclude, store=store_option(),
                                 progress=progress_bar)
    emit(version.to_dict(), lambda: click.echo(
        f"{version.ref}  {version.short_id}  {version.files} files, {human_size(version.bytes)}; stored "
        f"{human_size(version.new_bytes or 0)} new"
        + (f"  aliases: {', '.join(version.aliases)}" if version.aliases else "")))


@model_group.command("alias")
@click.argument("ref")
@click.argument("alias")
@click.option("--delete", is_flag=True, help="Delete the alias (REF is then the model name).")
@click.option("--force", is_flag=True, help="Move or delete a protected alias.")
@click.option("--protect/--unprotect", default=None, help="Protect the alias: moving it then needs --force.")
@click.option("-m", "--message", default="", help="Why (kept in the alias history).")
@common
def alias(ref: str, alias: str, delete: bool, force: bool, protect: bool | None, message: str) -> None:
    """Point ALIAS of a model at the version REF names (NAME@vN), moving it from where it was."""
    result = _models().alias(ref, alias, delete=delete, force=force, protect=protect, message=message,
                             store=store_option())
    name = ref.partition("@")[0]
    emit(result.to_dict(), lambda: click.echo(
        f"deleted alias {alias} of {name}" if result.version is None else
        f"{name}@{alias} -> {name}@v{result.version}" + (" (protected)" if result.protected else "")))


@model_group.command("tag")
@click.argument("ref")
@click.argument("tag")
@click.option("--delete", is_flag=True, help="Remove the tag from this version.")
@common
def tag(ref: str, tag: str, delete: bool) -> None:
    """Add a free tag to a version (many versions may carry the same tag)."""
    version = _models().tag(ref, tag, delete=delete, store=store_option())
    emit(version.to_dict(), lambda: click.echo(f"{version.ref} tags: {', '.join(version.labels) or '-'}"))


@model_group.command("set")
@click.argument("ref")
@click.option("--metric", "metrics", multiple=True, metavar="K=V", help="Set a metric (numeric; repeatable).")
@click.option("--param", "params", multiple=True, metavar="K=V", help="Set a parameter (repeatable).")
@click.option("--meta", "metadata", multiple=True, metavar="K=V", help="Set metadata (repeatable).")
@common
def set_values(ref: str, metrics, params, metadata) -> None:
    """Record metrics, params or metadata of a version (its content id does not change)."""
    version = _models().update(ref, metrics=metrics, params=params, metadata=metadata, store=store_option())
    emit(version.to_dict(), lambda: click.echo(f"{version.ref}  metrics: {_metrics_text(version.metrics, 10)}"))


@model_group.command("list")
@click.argument("name", required=False)
@click.option("--alias", metavar="ALIAS", help="The version each model's ALIAS points at.")
@click.option("--tag", metavar="TAG", help="Every version carrying TAG.")
@click.option("--all", "all_versions", is_flag=True, help="Every version, not just the latest of each model.")
@click.option("--sort", metavar="KEY[:desc]", help="Sort by a metric (or version, created, bytes); "
                                                   ":desc for best first. With NAME, across all its versions.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Show at most N rows.")
@common
def list_models(name: str | None, alias: str | None, tag: str | None, all_versions: bool, sort: str | None,
                limit: int | None) -> None:
    """Model versions: the latest of each model, or those an alias / tag / sort picks."""
    rows = _models().list(name, alias=alias, tag=tag, sort=sort, all_versions=all_versions, limit=limit,
                          store=store_option())

    def human() -> None:
        if not rows:
            click.echo("no model versions match" if (name or alias or tag) else
                       "no models yet (register one with `dvx model register NAME PATH`)")
            return
        table([(v.ref, v.short_id, v.created[:19], human_size(v.bytes), ", ".join(v.aliases) or "-",
                ", ".join(v.labels) or "-", _metrics_text(v.metrics)) for v in rows],
              ("version", "id", "created", "size", "aliases", "tags", "metrics"))

    if wants_json():
        # Thousands of rows: msgspec's encoder, indented like emit's json.dumps (which takes half of the
        # command's time at 10,000 models); the same JSON values, floats spelled the shortest way.
        import msgspec

        click.echo(msgspec.json.format(msgspec.json.encode([v.to_dict() for v in rows]), indent=2).decode())
        return
    emit(rows, human)


@model_group.command("show")
@click.argument("ref")
@common
def show(ref: str) -> None:
    """One version: id, aliases, tags, metrics, params, datasets, logical and newly stored bytes."""
    info = _models().show(ref, store=store_option())

    def human() -> None:
        rows = [("ref", info["ref"]), ("id", info["id"]), ("created", info["created"]),
                ("author", info["author"]), ("message", info["message"] or "-"),
                ("parents", ", ".join(info["parents"]) or "-"),
                ("trained on", ", ".join(info["input_refs"]) or "-"),
                ("aliases", ", ".join(info["aliases"]) or "-"), ("tags", ", ".join(info["tags"]) or "-"),
                ("framework", info["framework"] or "-"),
                ("metrics", _metrics_text(info["metrics"], 50)), ("params", _metrics_text(info["params"], 50)),
                ("files", info["files"]), ("logical size", human_size(info["bytes"])),
                ("stored", f"{human_size(info['stored_bytes'])} in {info['chunks']} chunks, {info['packs']} packs"),
                ("new in this version", (f"{human_size(info['stored_new_bytes'])} "
                                         f"({_share(info['stored_new_bytes'], info['bytes'])} of its size)"))]
        extra = {k: v for k, v in info["metadata"].items() if k != "framework"}
        if extra:
            rows.append(("metadata", _metrics_text(extra, 50)))
        for key, value in rows:
            click.echo(f"{key + ':':22}{value}")

    emit(info, human)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


@model_group.command("get")
@click.argument("ref")
@click.option("-o", "--output", "dest", type=click.Path(), help="Folder to write a copy into "
                                                                  "(default: a read-only cached copy).")
@common
def get(ref: str, dest: str | None) -> None:
    """Fetch a model version's files; prints the folder."""
    fetched = _models().get(ref, dest, store=store_option(), progress=progress_bar)
    emit({"path": str(fetched.path), **fetched.version.to_dict()}, lambda: click.echo(str(fetched.path)))


@model_group.command("log")
@click.argument("name")
@common
def log(name: str) -> None:
    """Versions of NAME (newest first) and the full history of its aliases."""
    versions, aliases = _models().log(name, store=store_option())

    def human() -> None:
        for v in versions:
            marks = [*(f"@{a}" for a in v.aliases), *(f"#{t}" for t in v.labels)]
            click.echo(f"v{v.version}  {v.short_id}  {v.created[:19]}  {v.author}  {human_size(v.bytes)}"
                       + (f"  {' '.join(marks)}" if marks else ""))
            if v.message:
                click.echo(f"    {v.message}")
        if aliases:
            click.echo("\naliases:")
        for a in aliases:
            where = "deleted" if a.version is None else f"v{a.version}"
            click.echo(f"  {a.alias} -> {where}" + ("  (protected)" if a.protected else ""))
            for e in a.history:
                move = {"set": f"set to v{e.to_version}", "move": f"v{e.from_version} -> v{e.to_version}",
                        "delete": f"deleted (was v{e.from_version})"}.get(e.action, f"{e.action} at v{e.to_version}")
                click.echo(f"    {e.at}  {e.by}  {move}" + (f"  {e.message}" if e.message else ""))

    emit({"versions": [v.to_dict() for v in versions], "aliases": [a.to_dict() for a in aliases]}, human)

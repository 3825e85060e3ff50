"""Project pins: `dvx pin`, `dvx pull`, `dvx status` (the exit code says whether anything drifted)."""

from __future__ import annotations

import sys

import click

from dvx.cli.common import common, emit, human_size, progress_bar, store_option

_SHOWN = 20  # file names listed per category before "… and N more"


@click.command("pin")
@click.argument("ref")
@click.option("--model", is_flag=True, help="REF names a model (default: a dataset).")
@click.option("--path", metavar="DIR", help="Project folder `dvx pull` materialises it in.")
@common
def pin(ref: str, model: bool, path: str | None) -> None:
    """Pin the version REF means now (an alias or tag is resolved once) in dvx.toml."""
    from dvx import api

    pinned = api.pin(ref, "model" if model else "dataset", path, store=store_option())
    emit(pinned.to_dict(), lambda: click.echo(
        f"pinned {pinned.version} ({pinned.id[:12]})" + (f" from {pinned.source}" if pinned.source != pinned.version
                                                          else "") + (f" -> {pinned.path}/" if pinned.path else "")))


@click.command("pull")
@click.argument("names", nargs=-1)
@common
def pull(names: tuple[str, ...]) -> None:
    """Materialise the pinned versions (all, or NAMES) into their folders."""
    from dvx import api

    results = api.pull(names, store=store_option(), progress=progress_bar)

    def human() -> None:
        if not results:
            click.echo("nothing is pinned (see `dvx pin`)")
        for r in results:
            click.echo(f"{r.pin.version}  {r.files} files, {human_size(r.bytes)} -> {r.path}")

    emit([r.to_dict() for r in results], human)


@click.command("status")
@click.argument("names", nargs=-1)
@common
def status(names: tuple[str, ...]) -> None:
    """Compare each pin with the store and its folder. Exit 0 when everything matches, 1 on drift."""
    from dvx import api

    states = api.status(names, store=store_option())
    clean = all(s.clean for s in states)

    def human() -> None:
        if not states:
            click.echo("nothing is pinned (see `dvx pin`)")
        for s in states:
            where = f" -> {s.pin.path}/" if s.pin.path else ""
            click.echo(f"{'ok   ' if s.clean else 'DRIFT'}  {s.pin.version}{where}")
            if s.store != "ok":
                click.echo(f"       not in the store: {s.store_error}")
            if s.folder == "absent":
                click.echo(f"       {s.pin.path}/ is missing (run `dvx pull {s.pin.name}`)")
            for label, paths in (("missing", s.missing), ("modified", s.modified), ("extra", s.extra)):
                for path in paths[:_SHOWN]:
                    click.echo(f"       {label:9}{path}")
                if len(paths) > _SHOWN:
                    click.echo(f"       {label:9}… and {len(paths) - _SHOWN} more")
            if s.source_now:
                click.echo(f"       note: {s.pin.source} is now {s.source_now} (re-pin with `dvx pin {s.pin.source}`)")

    emit({"clean": clean, "pins": [s.to_dict() for s in states]}, human)
    if not clean:
        sys.exit(1)

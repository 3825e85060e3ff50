"""`dvx gc` (garbage collection) and `dvx dataset delete` / `dvx model delete` (docs/reliability.md).

Register with: `cli.add_command(gc)`, `dataset_group.add_command(dataset_delete)` and
`model_group.add_command(model_delete)`.
"""

from __future__ import annotations

import click

from dvx.cli.common import common, emit, human_size, store_option

# Below this grace, gc may make a slow `add` (one that uploads for longer than the grace before it
# records its lease) store its data again: allowed with --force only.
_SHORT_GRACE = 3600.0


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Report what would be condemned and deleted; change nothing.")
@click.option("--grace", default="24h", show_default=True, metavar="DURATION",
              help="Minimum age of garbage, and time between condemning and deleting it (e.g. 24h, 30m, 7d).")
@click.option("--force", is_flag=True, help="Allow a grace shorter than 1h.")
@common
def gc(dry_run: bool, grace: str, force: bool) -> None:
    """Delete stored data that no version references any more.

    Objects that no version, draft or copy in progress references and that are older than the grace are
    condemned in one run and deleted by a later run at least the grace afterwards, if still unreferenced.
    Data a concurrent add, commit, register, push or fetch is about to reference is never deleted."""
    from dvx.api.garbage import collect_garbage, parse_duration
    from dvx.api.repo import Repo
    from dvx.errors import UsageError

    try:
        seconds = parse_duration(grace)
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="--grace") from None
    if seconds < _SHORT_GRACE and not force:
        raise click.UsageError(f"--grace {grace} is shorter than 1h: an add that uploads for longer than the "
                               "grace may have to store its data again; pass --force if you mean it")
    repo = Repo(store=store_option())
    try:
        report = collect_garbage(repo, grace=seconds, dry_run=dry_run)
    finally:
        repo.close()
    emit(report.to_dict(), lambda: _render(report))


def _render(report) -> None:
    would = "would be " if report.dry_run else ""
    prefix = "dry run: " if report.dry_run else ""
    click.echo(f"{prefix}{report.versions} versions reference {report.reachable_packs} packs and "
               f"{report.reachable_manifests} manifests")
    deleted = report.deleted + report.temporaries
    if deleted:
        click.echo(f"{'would delete' if report.dry_run else 'deleted'} {_count(len(deleted))}, "
                   f"{'would free' if report.dry_run else 'freed'} {human_size(report.bytes_freed)}")
    else:
        click.echo(f"nothing {would}deleted")
    if report.condemned:
        click.echo(f"condemned {_count(len(report.condemned))} ({human_size(sum(o.size for o in report.condemned))})"
                   f", {would}deletable after {_when(report.deletable_after)} by a later `dvx gc`")
    if report.pending:
        click.echo(f"pending: {_count(len(report.pending))} ({human_size(sum(o.size for o in report.pending))}) "
                   f"condemned earlier, deletable after {_when(report.next_deletable_after)}")
    if report.kept_by_leases:
        holders = ", ".join(sorted({f"{h['purpose']} {h['name']}".strip() for h in report.leases})) or "writers"
        click.echo(f"kept {_count(len(report.kept_by_leases))} "
                   f"({human_size(sum(o.size for o in report.kept_by_leases))}) that work in progress will "
                   f"reference ({holders})")
    if report.pardoned:
        click.echo(f"kept {_count(len(report.pardoned))} condemned earlier that a new version references")
    if report.expired_leases:
        click.echo(f"ignored {report.expired_leases} expired lease(s) (drafts untouched for over a week)")
    if report.incomplete:
        click.echo("stopped deleting at the time limit; run `dvx gc` again to continue")


def _count(n: int) -> str:
    return f"{n} object{'' if n == 1 else 's'}"


def _when(seconds: float | None) -> str:
    from dvx.api.garbage import iso

    return iso(seconds) or "?"


def delete_command(kind: str) -> click.Command:
    """`dvx dataset delete` / `dvx model delete`."""
    word = "tags" if kind == "dataset" else "aliases"

    @click.command("delete")
    @click.argument("ref")
    @click.option("--all", "all_versions", is_flag=True, help=f"Delete every version of the {kind} REF names.")
    @click.option("--force", is_flag=True,
                  help=f"Delete even if other versions, {word} or pins depend on it.")
    @click.option("-m", "--message", default="", help="Why (kept in the deleted version's record).")
    @common
    def delete(ref: str, all_versions: bool, force: bool, message: str) -> None:
        from dvx.api.garbage import delete_versions
        from dvx.api.repo import Repo

        repo = Repo(store=store_option())
        try:
            result = delete_versions(repo, ref, kind=kind, all_versions=all_versions, force=force, message=message)
        finally:
            repo.close()
        emit(result.to_dict(), lambda: _render_delete(result))

    delete.help = (f"Delete version REF of a {kind} (NAME@vN, NAME@TAG, NAME@ID), or with --all every version "
                   f"of NAME.\n\nRefused (exit 4) while a version of another name was made from it, a model was "
                   f"trained on it, one of its {word} points at it or this project pins it, unless --force; its "
                   f"{word} are deleted with it (history kept). Its number is never reused. The data it alone "
                   "used is freed by `dvx gc` after the grace period.")
    return delete


def _render_delete(result) -> None:
    for ref in result.deleted:
        click.echo(f"deleted {ref}")
    for tag in result.tags_deleted:
        click.echo(f"deleted {'tag' if result.kind == 'dataset' else 'alias'} {tag}")
    if result.forced:
        click.echo("forced past: " + "; ".join(result.dependents), err=True)
    click.echo("run `dvx gc` to free the data only these versions used", err=True)


dataset_delete = delete_command("dataset")
model_delete = delete_command("model")

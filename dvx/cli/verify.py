"""`dvx verify [REF]...`: check that versions are intact in the store; the exit code says whether they are.

Exit codes: 0 everything checked is intact, 5 damage was found (listed per version and file),
2 a usage error, 3 an unknown reference (docs/verify.md).
"""

from __future__ import annotations

import sys

import click

from dvx.cli.common import common, emit, human_size, progress_bar, store_option

EXIT_DAMAGED = 5  # the exit code of an integrity error (dvx/errors.py)
_SHOWN = 100  # problems listed per version in the human output; --json lists them all


@click.command("verify")
@click.argument("refs", nargs=-1)
@click.option("--full", is_flag=True,
              help="Read every chunk and re-hash every file (downloads the whole version).")
@click.option("--sample", "sample", type=float, metavar="PCT",
              help="Also read and re-hash a random PCT% of the chunks (0 < PCT <= 100).")
@click.option("--seed", type=int, metavar="N",
              help="Seed of --sample's choice; the output shows the one used, to check the same chunks again.")
@click.option("--model", is_flag=True, help="REFs name models (default: a dataset of that name, else a model).")
@common
def verify(refs: tuple[str, ...], full: bool, sample: float | None, seed: int | None, model: bool) -> None:
    """Check that versions REF... (default: the project's pins) are intact in the store.

    By default checks that each manifest is intact and that every pack it uses is present and long
    enough, without downloading data. --full reads and re-hashes everything; --sample PCT a random
    share of the chunks. Exit 0 when everything is intact, 5 when damage was found."""
    if full and sample is not None:
        raise click.UsageError("--full and --sample exclude each other; give one or neither")
    if sample is not None and not 0 < sample <= 100:
        raise click.UsageError(f"--sample {sample:g}: give a percentage above 0 and at most 100")
    if seed is not None and sample is None:
        raise click.UsageError("--seed chooses the chunks of --sample: give it with --sample PCT")
    mode = "full" if full else "sample" if sample is not None else "exists"
    from dvx import api

    report = api.verify(list(refs), kind="model" if model else None, mode=mode, sample_percent=sample, seed=seed,
                        store=store_option(), progress=progress_bar)
    emit(report.to_dict(), lambda: _render(report))
    if not report.ok:
        sys.exit(EXIT_DAMAGED)


def _render(report) -> None:
    for v in report.versions:
        label = v.version + ("  [model]" if v.kind == "model" else "")
        click.echo(f"{'ok' if v.ok else 'DAMAGED':7}  {label}  ({_summary(v, report.seed)})")
        for problem in v.problems[:_SHOWN]:
            click.echo(f"    {problem.path + ': ' if problem.path else ''}{problem.what}")
        if len(v.problems) > _SHOWN:
            click.echo(f"    … and {len(v.problems) - _SHOWN} more problems (--json lists them all)")
    damaged = sum(not v.ok for v in report.versions)
    if len(report.versions) > 1:
        click.echo(f"{damaged} of {len(report.versions)} versions damaged" if damaged
                   else f"all {len(report.versions)} versions intact")


def _summary(v, seed: int | None) -> str:
    parts = [_plural(v.files, "file")]
    if v.damaged_files:
        parts.append(f"{len(v.damaged_files)} damaged")
    if v.mode == "exists":
        parts.append(f"{_plural(v.packs, 'pack')} checked")
    elif v.mode == "full":
        parts.append(f"{_plural(v.chunks, 'chunk')} checked, {human_size(v.bytes_read)} read")
    else:
        parts.append(f"{v.chunks} of {_plural(v.chunks_total, 'chunk')} checked, seed {seed}")
    return ", ".join(parts)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"

"""`dvx check`: verify the expectations dvx.toml sets on pinned versions (exit 0 pass, 1 fail, 2 bad config)."""

from __future__ import annotations

import sys

import click

from dvx.cli.common import common, emit, store_option


@click.command("check")
@click.argument("names", nargs=-1)
@click.option("--junit", "junit", metavar="FILE", type=click.Path(dir_okay=False),
              help="Also write the results as JUnit XML to FILE (written when checks fail too).")
@common
def check(names: tuple[str, ...], junit: str | None) -> None:
    """Check the pinned versions (all with an expect table, or NAMES) against their expectations.

    Exit 0 when every check passes, 1 when any fails, 2 when an expect table is invalid (docs/check.md)."""
    from dvx import api

    report = api.check(names, store=store_option())
    if junit:
        with open(junit, "w", encoding="utf-8") as out:
            out.write(report.to_junit())

    def human() -> None:
        if report.note:
            click.echo(report.note)
        for entry in report.pins:
            kind = "" if entry.pin.kind == "dataset" else "model "
            click.echo(f"{kind}{entry.ref}" + (f"  ({entry.note})" if entry.note else ""))
            for result in entry.results:
                click.echo(f"  {'PASS' if result.passed else 'FAIL'}  {result.check}: {result.message}")
        summary = report.summary()
        if summary["checks"]:
            failed = f", {summary['failed']} failed" if summary["failed"] else ""
            verdict = "FAILED" if summary["failed"] else "ok"
            click.echo(f"{verdict}: {_plural(summary['checks'], 'check')} on {_plural(summary['pins'], 'pin')}, "
                       f"{summary['passed']} passed{failed}")

    emit(report.to_dict(), human)
    if not report.ok:
        sys.exit(1)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")

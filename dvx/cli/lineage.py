"""`dvx lineage REF`: the versions a version was made from, and the versions made from it."""

from __future__ import annotations

import json

import click

from dvx.cli.common import common, store_option, wants_json

FORMATS = ("text", "json", "dot", "mermaid")


@click.command("lineage")
@click.argument("ref")
@click.option("--upstream-only", is_flag=True, help="Only what REF was made from (parents, inputs).")
@click.option("--downstream-only", is_flag=True, help="Only the versions made from REF.")
@click.option("--depth", type=click.IntRange(min=0), metavar="N", help="At most N hops each way (default: all).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Output: text (default), json, dot (Graphviz) "
              "or mermaid. --json is the same as --format json.")
@click.option("--kind", type=click.Choice(["dataset", "model"]),
              help="What REF names (default: a dataset of that name, else a model).")
@common
def lineage(ref: str, upstream_only: bool, downstream_only: bool, depth: int | None, fmt: str | None,
            kind: str | None) -> None:
    """Upstream and downstream graph of REF: parents and inputs, and the dataset and model versions made
    from it. Finding downstream versions reads every version record in the store."""
    if upstream_only and downstream_only:
        raise click.UsageError("--upstream-only and --downstream-only exclude each other; give one or neither")
    if wants_json():
        if fmt not in (None, "json"):
            raise click.UsageError(f"--json asks for JSON but --format asks for {fmt}; give one of them")
        fmt = "json"
    from dvx import api

    graph = api.lineage(ref, kind, upstream=not downstream_only, downstream=not upstream_only, depth=depth,
                        store=store_option())
    if fmt == "json":
        click.echo(json.dumps(graph.to_dict(), indent=2, ensure_ascii=False))
    elif fmt == "dot":
        click.echo(graph.to_dot(), nl=False)
    elif fmt == "mermaid":
        click.echo(graph.to_mermaid(), nl=False)
    else:
        click.echo(graph.to_text())

"""`dvx ui`: serve the local, read-only web UI."""

from __future__ import annotations

import click

from dvx.cli.common import common, store_option
from dvx.ui import DEFAULT_PORT


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but 127.0.0.1/localhost requires the token printed at start.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--open", "open_browser", is_flag=True, help="Open the address in a web browser.")
@common
def ui(host: str, port: int, open_browser: bool) -> None:
    """Browse datasets, versions, diffs, lineage and the model registry in a web browser (read-only).
    Needs the ui extra: pip install "dvx[ui]". Stop it with Ctrl-C."""
    from dvx.ui import serve

    def ready(server) -> None:
        click.echo(f"dvx ui: serving {server.store} (read-only) at {server.url}", err=False)
        if server.token:
            click.echo("dvx ui: open that address (it holds the access token); other addresses get 401", err=True)
        click.echo("dvx ui: press Ctrl-C to stop", err=True)

    serve(store=store_option(), host=host, port=port, open_browser=open_browser, on_ready=ready)

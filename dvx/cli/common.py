"""Shared CLI plumbing: the options every command takes, output (human or --json), progress bars."""

from __future__ import annotations

import importlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import click

PROGRESS_DELAY = 1.0
PROGRESS_REFRESH = 0.1


class LazyGroup(click.Group):
    """A group whose sub-commands are imported when one is run (or listed, for --help): every dvx
    process starts cold, so `dvx dataset add` should not pay for importing the model or gc commands.
    `lazy` maps a command name to "module:attribute"."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in self.lazy:
            module, attribute = self.lazy[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)


class Options:
    """Values of --store / --json / --debug, given on the root group or on the command itself."""

    def __init__(self) -> None:
        self.store: str | None = None
        self.json = False
        self.debug = False


def options(ctx: click.Context) -> Options:
    return ctx.ensure_object(Options)


def _remember(field: str):
    def callback(ctx: click.Context, param: click.Parameter, value):
        if value:
            setattr(options(ctx), field, value)
        return value
    return callback


def common(command: Callable) -> Callable:
    """Add --store, --json and --debug to a command."""
    command = click.option("--store", metavar="URL", expose_value=False, callback=_remember("store"),
                           help="Store to use (overrides DVX_STORE and dvx.toml).")(command)
    command = click.option("--json", "as_json", is_flag=True, expose_value=False, callback=_remember("json"),
                           help="Print machine-readable JSON on stdout.")(command)
    command = click.option("--debug", is_flag=True, expose_value=False, callback=_remember("debug"),
                           help="Show tracebacks on errors.")(command)
    return command


def store_option() -> str | None:
    return options(click.get_current_context()).store


def wants_json() -> bool:
    return options(click.get_current_context()).json


def emit(data, human: Callable[[], None]) -> None:
    """Print `data` as JSON with --json, else call `human` to render it."""
    if wants_json():
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=_json_default))
    else:
        human()


def _json_default(value):
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def human_size(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> None:
    """Aligned plain-text columns (cheap: no rich import on the hot path)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for i, row in enumerate(cells):
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
        click.echo(click.style(line, bold=True) if i == 0 and sys.stdout.isatty() else line)


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr that appears only when the work passes one second on a TTY."""
    if not sys.stderr.isatty() or total <= 0:
        yield lambda n: None
        return
    state: dict = {"done": 0, "bar": None, "task": None, "drawn": 0.0}
    lock = threading.Lock()
    start = time.monotonic()

    def advance(n: int) -> None:
        with lock:
            state["done"] += n
            if state["bar"] is None:
                if time.monotonic() - start < PROGRESS_DELAY:
                    return
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    DownloadColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                    TransferSpeedColumn,
                )

                bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                               TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                               transient=True)
                bar.start()
                state["bar"], state["task"] = bar, bar.add_task(label, total=total)
                bar.update(state["task"], completed=state["done"])
            elif (now := time.monotonic()) - state["drawn"] >= PROGRESS_REFRESH:  # callers report every chunk
                state["drawn"] = now
                state["bar"].update(state["task"], completed=state["done"])

    try:
        yield advance
    finally:
        if state["bar"] is not None:
            state["bar"].update(state["task"], completed=state["done"])
            state["bar"].stop()


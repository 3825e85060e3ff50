"""`dvx ui`: a local, read-only web UI over a store (needs the `ui` extra: pip install "dvx[ui]")."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from dvx.api.config import load_settings
from dvx.errors import UsageError

if TYPE_CHECKING:
    from dvx.ui.server import UiServer

DEFAULT_PORT = 8765


def serve(*, store: str | None = None, host: str = "127.0.0.1", port: int = DEFAULT_PORT, open_browser: bool = False,
          background: bool = False, on_ready: Callable[[UiServer], None] | None = None) -> UiServer:
    """Serve the UI for `store` on host:port (port 0: any free port). Off 127.0.0.1 a token is made,
    put in the address and required. Blocks until interrupted, unless `background` (then it returns
    the running server, whose .stop() ends it). `on_ready` gets the server once it listens."""
    try:
        from dvx.ui.server import serve as run
    except ImportError as exc:
        raise UsageError(f"dvx ui needs the ui extra ({exc.name} is missing): pip install \"dvx[ui]\"") from None
    return run(load_settings(store), host=host, port=port, open_browser=open_browser, background=background,
               on_ready=on_ready)

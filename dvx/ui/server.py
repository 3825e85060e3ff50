"""`dvx ui`: a read-only web UI over a store. Starlette serves one HTML shell for every page URL, the
assets shipped in dvx/ui/static, and the JSON API (docs/ui.md) that the pages call; uvicorn runs it.
Every answer comes from dvx.api.browse and dvx.api.reading: the same code the CLI uses."""

from __future__ import annotations

import hmac
import secrets
import socket
import threading
import urllib.parse
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from importlib.resources import files
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from dvx.api import browse, reading
from dvx.api.config import Settings
from dvx.api.repo import Repo
from dvx.errors import ConflictError, DvxError, NotFoundError, StoreError, UsageError

STATIC = files("dvx.ui") / "static"
TOKEN_COOKIE = "dvx_ui_token"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_ASSETS = {"app.js": "text/javascript", "style.css": "text/css", "favicon.svg": "image/svg+xml"}
# Pages and their data come only from this server; nothing inline, nothing from elsewhere.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
# Damaged data (IntegrityError) is a 500 like any other failure; an unreachable store is a 503.
_STATUS = [(UsageError, 400), (NotFoundError, 404), (ConflictError, 409), (StoreError, 503), (DvxError, 500)]


@dataclass
class UiServer:
    """A running `dvx ui`: its address (with the token in it when one is needed) and how to stop it."""

    url: str
    store: str
    host: str
    port: int
    token: str | None
    _server: Any = field(repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)


def create_app(settings: Settings, token: str | None = None, allowed_hosts: list[str] | None = None) -> Starlette:
    """The ASGI app over the store of `settings`. With `token`, every request must carry it (cookie,
    `Authorization: Bearer`, or `?token=` once); `allowed_hosts` guards against DNS rebinding."""
    repo = Repo(settings)
    routes = [Route(path, _endpoint(repo, view)) for path, view in _api_views().items()]
    routes += [Route("/api/raw", _download(repo)), Route("/api/thumbnail", _thumbnail(repo)),
               Route("/static/{asset}", _asset)]
    routes.append(Route("/{page:path}", _page))
    middleware = [Middleware(_ReadOnly), Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or ["*"])]
    if token:
        middleware.append(Middleware(_TokenCheck, token=token))
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={DvxError: _error})
    app.state.repo = repo
    return app


def _api_views() -> dict[str, Callable[[Repo, _Query], Any]]:
    """Each JSON endpoint: its path and what it answers (see docs/ui.md)."""
    return {
        "/api/info": lambda repo, q: {"dvx": package_version("dvx"), "store": repo.settings.store_url, "read_only": True},
        "/api/names": lambda repo, q: browse.names_page(repo, q.kind(), q.text("q"), q.number("offset", 0),
                                                        q.number("limit", 50)),
        "/api/history": lambda repo, q: browse.history_page(repo, q.text("name", required=True), q.kind(),
                                                            q.number("offset", 0), q.number("limit", 50),
                                                            q.text("sort") or None),
        "/api/aliases": lambda repo, q: browse.alias_histories(repo, q.text("name", required=True)),
        "/api/version": lambda repo, q: browse.version_info(repo, q.text("ref", required=True), q.kind()),
        "/api/tree": lambda repo, q: reading.list_folder(repo, q.text("ref", required=True), q.text("path"),
                                                 q.number("offset", 0), q.number("limit", 200), q.kind()),
        "/api/preview": lambda repo, q: browse.preview(repo, q.text("ref", required=True),
                                                       q.text("path", required=True), q.kind()),
        "/api/diff": lambda repo, q: browse.diff_page(repo, q.text("a", required=True), q.text("b", required=True),
                                                      q.kind(), q.number("offset", 0), q.number("limit", 200)),
        "/api/diff/rows": lambda repo, q: browse.row_changes(repo, q.text("a", required=True),
                                                             q.text("b", required=True),
                                                             q.text("path", required=True), q.kind()),
        "/api/lineage": lambda repo, q: browse.lineage_layout(repo, q.text("ref", required=True), q.kind(),
                                                              q.number("depth", 2)),
    }


class _Query:
    """A request's query string, read with clear 400s for missing or malformed values."""

    def __init__(self, request: Request):
        self.params = request.query_params

    def text(self, key: str, required: bool = False) -> str:
        value = self.params.get(key)
        if value is None or (required and not value):
            if required:
                raise UsageError(f"missing query parameter {key!r}")
            return ""
        return value

    def number(self, key: str, default: int) -> int:
        value = self.params.get(key)
        if value in (None, ""):
            return default
        try:
            return int(value)
        except ValueError:
            raise UsageError(f"query parameter {key!r} must be a whole number") from None

    def kind(self) -> str:
        return self.params.get("kind") or "dataset"


def _endpoint(repo: Repo, view: Callable[[Repo, _Query], Any]) -> Callable:
    def endpoint(request: Request) -> Response:
        return JSONResponse(view(repo, _Query(request)), headers=SECURITY_HEADERS)
    return endpoint


def _error(request: Request, exc: Exception) -> Response:
    status = next(code for kind, code in _STATUS if isinstance(exc, kind))
    return JSONResponse({"error": str(exc), "type": type(exc).__name__}, status_code=status,
                        headers=SECURITY_HEADERS)


def _download(repo: Repo) -> Callable:
    """One file's bytes, streamed, always as an attachment (never rendered by the browser)."""
    def endpoint(request: Request) -> Response:
        query = _Query(request)
        resolved, entry = browse.find_file(repo, query.text("ref", required=True), query.text("path", required=True),
                                           query.kind())
        stream = browse.open_entry(repo, resolved, entry)
        name = entry.path.rsplit("/", 1)[-1]
        headers = SECURITY_HEADERS | {
            "content-disposition": f"attachment; filename*=UTF-8''{urllib.parse.quote(name, safe='')}",
            "content-length": str(entry.size)}
        return StreamingResponse(browse.iter_bytes(stream), media_type="application/octet-stream", headers=headers)
    return endpoint


def _thumbnail(repo: Repo) -> Callable:
    def endpoint(request: Request) -> Response:
        query = _Query(request)
        data = browse.thumbnail(repo, query.text("ref", required=True), query.text("path", required=True),
                                query.kind(), query.number("size", 256))
        return Response(data, media_type="image/png", headers=SECURITY_HEADERS)
    return endpoint


def _asset(request: Request) -> Response:
    name = request.path_params["asset"]
    if name not in _ASSETS:  # a fixed list: no path from the URL ever reaches the file system
        return Response("not found", status_code=404, media_type="text/plain")
    return Response((STATIC / name).read_bytes(), media_type=_ASSETS[name],
                    headers=SECURITY_HEADERS | {"cache-control": "no-cache"})


def _page(request: Request) -> Response:
    """Every page URL gets the same shell; app.js reads the URL and asks the JSON API for the data."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": f"no endpoint {request.url.path}", "type": "NotFoundError"}, status_code=404,
                            headers=SECURITY_HEADERS)
    if request.url.path == "/":
        return RedirectResponse("/datasets", headers=SECURITY_HEADERS)
    return Response((STATIC / "index.html").read_bytes(), media_type="text/html; charset=utf-8",
                    headers=SECURITY_HEADERS)


class _ReadOnly:
    """Only GET and HEAD: the UI never changes the store."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD"):
            response = JSONResponse({"error": "dvx ui is read-only", "type": "UsageError"}, status_code=405,
                                    headers={"allow": "GET, HEAD"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class _TokenCheck:
    """Requests must show the token: a cookie (set on the first visit with `?token=`), or a Bearer header."""

    def __init__(self, app: ASGIApp, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.query_params.get("token")
        header = request.headers.get("authorization", "")
        shown = [request.cookies.get(TOKEN_COOKIE), header[7:] if header.lower().startswith("bearer ") else None]
        if given is not None and self._valid(given):
            # Set the cookie and drop the token from the address bar (and from the history).
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + ("?" + urllib.parse.urlencode(rest) if rest else "")
            response = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
            await response(scope, receive, send)
            return
        if not any(v is not None and self._valid(v) for v in shown):
            response = JSONResponse({"error": "this dvx ui needs the token it printed at start "
                                              "(open the address it printed, with ?token=...)",
                                     "type": "Unauthorized"}, status_code=401, headers=SECURITY_HEADERS)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _valid(self, value: str) -> bool:
        return hmac.compare_digest(value.encode(), self.token.encode())


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = False,
          background: bool = False, on_ready: Callable[[UiServer], None] | None = None) -> UiServer:
    """Start the UI on host:port (port 0: any free port). Off 127.0.0.1 a token is made and required.
    Blocks until interrupted unless `background` (then it returns the running server)."""
    local = host in LOCAL_HOSTS
    token = None if local else secrets.token_urlsafe(24)
    allowed = ["127.0.0.1", "localhost", "[::1]"] if local else None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another with --port") from None
    sock.listen(128)
    port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}/" + (f"?token={token}" if token else "")
    app = create_app(settings, token, allowed)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    running = UiServer(url, settings.store_url, host, port, token, server)
    if on_ready is not None:
        on_ready(running)
    if open_browser:
        webbrowser.open(url)
    if background:
        running._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                                           name="dvx-ui")
        running._thread.start()
        return running
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        app.state.repo.close()
    return running


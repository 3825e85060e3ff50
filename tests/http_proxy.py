"""A small HTTP reverse proxy on 127.0.0.1 in front of a cloud emulator: counts requests by method and
injects the transient faults real clouds produce (503 throttling, connections reset mid-exchange), so
tests exercise dvx and the SDKs against real wire traffic with failures in it.

    with FaultyProxy("http://127.0.0.1:5000") as proxy:
        proxy.fail_every = 4          # every 4th request gets a fault
        ... point the SDK at proxy.url ...
        proxy.counts                  # {"GET": 12, "PUT": 3, ...}
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
_THROTTLED = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
              b"<Message>Please reduce your request rate.</Message></Error>")


class FaultyProxy:
    """Forwards every request to `upstream`. With `fail_every = N`, every Nth request fails: in turn a
    503 answered without forwarding, a reset before forwarding, and a reset *after* the upstream
    handled it (the response is lost: the ambiguous case for conditional writes)."""

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname, parts.port or 80
        self.fail_every = 0
        self.counts: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self._seen = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _relay(self) -> None:
                body = self._read_body()
                fault = proxy._next_fault(self.command)
                if fault == "503":
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_THROTTLED)))
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(_THROTTLED)
                    return
                if fault == "reset-before":
                    self._reset()
                    return
                status, reason, headers, payload = proxy._forward(self.command, self.path, self.headers, body)
                if fault == "reset-after":
                    self._reset()
                    return
                self.send_response(status, reason)
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    pieces = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(pieces)
                        pieces.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reset(self) -> None:
                self.close_connection = True
                try:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _relay

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _next_fault(self, method: str) -> str | None:
        with self._lock:
            self.counts[method] += 1
            self._seen += 1
            if not self.fail_every or self._seen % self.fail_every:
                return None
            kind = ("503", "reset-before", "reset-after")[(self._seen // self.fail_every) % 3]
            self.faults[kind] += 1
            return kind

    def _forward(self, method: str, path: str, headers, body: bytes):
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            out_headers = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            out_headers["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=out_headers)
            response = conn.getresponse()
            payload = response.read()
            return response.status, response.reason, response.getheaders(), payload
        finally:
            conn.close()

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.faults.clear()

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

"""Cross-process file locks: fcntl.flock on POSIX (released by the kernel if the holder dies),
the `filelock` package elsewhere. Used by every layer, like dvx.errors."""

from __future__ import annotations

import os
import time

from dvx.errors import ConflictError

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None


class LockTimeout(ConflictError):
    """Another process held the lock for longer than we were willing to wait."""


class FileLock:
    """Exclusive lock on `path` (created if missing). Not re-entrant; one holder at a time, threads too."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = -1, what: str = "a lock"):
        self.path = str(path)
        self.timeout = timeout
        self.what = what
        self._fd: int | None = None
        self._fallback = None

    def acquire(self, timeout: float | None = None) -> None:
        timeout = self.timeout if timeout is None else timeout
        if fcntl is None:  # pragma: no cover
            import filelock

            self._fallback = filelock.FileLock(self.path)
            try:
                self._fallback.acquire(timeout=timeout)
            except filelock.Timeout:
                raise LockTimeout(f"timed out waiting for {self.what} ({self.path})") from None
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = None if timeout < 0 else time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeout(f"timed out waiting for {self.what} ({self.path})") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    def release(self) -> None:
        if self._fallback is not None:  # pragma: no cover
            self._fallback.release()
            self._fallback = None
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

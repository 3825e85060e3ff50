"""How long-running API calls report progress: the caller passes a factory; the CLI's draws a bar."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

Advance = Callable[[int], None]


class ProgressFactory(Protocol):
    def __call__(self, label: str, total: int) -> AbstractContextManager[Advance]: ...


@contextmanager
def no_progress(label: str, total: int) -> Iterator[Advance]:
    yield lambda n: None

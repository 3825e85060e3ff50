"""Names, tags and references (`NAME`, `NAME@v3`, `NAME@production`, `NAME@1a2b3c4d`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dvx.errors import UsageError

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
NAME_RE = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
TAG_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
VERSION_RE = re.compile(r"v([1-9][0-9]*)")
ID_PREFIX_RE = re.compile(r"[0-9a-f]{4,32}")
MAX_NAME = 200
RESERVED_TAGS = {"latest"}


def check_name(name: str) -> str:
    if len(name) > MAX_NAME or not NAME_RE.fullmatch(name) or any(p in (".", "..") for p in name.split("/")):
        raise UsageError(
            f"invalid name {name!r}: use letters, digits, '.', '_' and '-', with '/' to group "
            f"(e.g. vision/cifar10)"
        )
    return name


def check_tag(tag: str) -> str:
    if not TAG_RE.fullmatch(tag) or len(tag) > 100:
        raise UsageError(f"invalid tag {tag!r}: start with a letter; then letters, digits, '.', '_' or '-'")
    if VERSION_RE.fullmatch(tag) or tag in RESERVED_TAGS:
        raise UsageError(f"invalid tag {tag!r}: it would be confused with a version reference")
    return tag


@dataclass(frozen=True)
class Ref:
    name: str
    selector: str | None = None  # None = latest

    def __str__(self) -> str:
        return self.name if self.selector is None else f"{self.name}@{self.selector}"

    @property
    def version_number(self) -> int | None:
        if self.selector is None:
            return None
        match = VERSION_RE.fullmatch(self.selector)
        return int(match.group(1)) if match else None


def parse_ref(text: str) -> Ref:
    """`NAME[@SELECTOR]`; raises UsageError naming the mistake."""
    name, sep, selector = text.partition("@")
    check_name(name)
    if sep and not selector:
        raise UsageError(f"invalid reference {text!r}: nothing after '@' (try {name}@v1 or {name}@TAG)")
    if sep and not (VERSION_RE.fullmatch(selector) or TAG_RE.fullmatch(selector) or ID_PREFIX_RE.fullmatch(selector)):
        raise UsageError(f"invalid reference {text!r}: after '@' put vN, a tag or a version id prefix")
    return Ref(name, selector or None)

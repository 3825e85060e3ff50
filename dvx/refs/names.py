"""Names, tags and references (`NAME`, `NAME@v3`, `NAME@production`, `NAME@1a2b3c4d`)."""

from __future__ import annotations

import re

import msgspec

from dvx.errors import UsageError

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
NAME_RE = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
TAG_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
VERSION_RE = re.compile(r"v([1-9][0-9]*)")
ID_PREFIX_RE = re.compile(r"[0-9a-f]{4,32}")
# A name is stored as one file-name component with each '/' percent-encoded ("%2F", three characters),
# and drafts add ".dataset.draft.lock": the encoded name must stay well under the 255 bytes a file name
# may have, so MAX_NAME counts each '/' as three characters.
MAX_NAME = 200
MAX_TAG = 100
RESERVED_TAGS = {"latest"}


def _shown(text: str, limit: int = 60) -> str:
    """repr() of user input, cut short so that a pasted megabyte still gives a one-line error."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"… ({len(text)} characters)"


def encoded_length(name: str) -> int:
    """Length of the name as stored (urllib.parse.quote(name, safe=""): only '/' is encoded)."""
    return len(name) + 2 * name.count("/")


def check_name(name: str) -> str:
    if encoded_length(name) > MAX_NAME:
        raise UsageError(f"invalid name {_shown(name)}: too long (at most {MAX_NAME} characters, "
                         "each '/' counting as three)")
    if not NAME_RE.fullmatch(name) or any(p in (".", "..") for p in name.split("/")):
        raise UsageError(
            f"invalid name {_shown(name)}: use letters, digits, '.', '_' and '-', with '/' to group "
            f"(e.g. vision/cifar10)"
        )
    return name


def check_tag(tag: str) -> str:
    if len(tag) > MAX_TAG or not TAG_RE.fullmatch(tag):
        raise UsageError(f"invalid tag {_shown(tag)}: start with a letter; then letters, digits, '.', '_' or '-', "
                         f"at most {MAX_TAG} characters")
    if VERSION_RE.fullmatch(tag) or tag in RESERVED_TAGS:
        raise UsageError(f"invalid tag {_shown(tag)}: it would be confused with a version reference")
    return tag


class Ref(msgspec.Struct, frozen=True):
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
        raise UsageError(f"invalid reference {_shown(text)}: nothing after '@' (try {name}@v1 or {name}@TAG)")
    if sep and (len(selector) > MAX_TAG or not (VERSION_RE.fullmatch(selector) or TAG_RE.fullmatch(selector)
                                                 or ID_PREFIX_RE.fullmatch(selector))):
        raise UsageError(f"invalid reference {_shown(text)}: after '@' put vN, a tag or a version id prefix")
    return Ref(name, selector or None)

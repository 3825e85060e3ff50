"""Names, version numbers, tags with history, compare-and-swap updates. Knows ids, not manifests."""

from dvx.refs.names import Ref, check_name, check_tag, parse_ref
from dvx.refs.store import (
           POINTER_WORDS,
           Annotations,
           Refs,
           TagEvent,
           TagRecord,
           VersionRecord,
           now_iso,
)

__all__ = ["POINTER_WORDS", "Annotations", "Ref", "Refs", "TagEvent", "TagRecord", "VersionRecord", "check_name", "check_tag", "now_iso",
           "parse_ref"]

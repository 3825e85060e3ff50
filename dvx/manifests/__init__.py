"""File entries, manifests and their canonical encoding, folder scans, checkout and diff."""

from dvx.manifests.checkout import checkout
from dvx.manifests.diff import Change, diff_files, summarise
from dvx.manifests.model import (
    EMPTY_DIGEST,
    FileEntry,
    Manifest,
    compress_manifest,
    decode_manifest,
    encode_manifest,
    folders_of,
    manifest_key,
    validate_path,
)
from dvx.manifests.scan import ScannedFile, scan
from dvx.manifests.select import matches_glob, parse_part, select_files, split_parts
from dvx.manifests.statcache import CachedContent, CacheHit, StatCache

__all__ = [
    "EMPTY_DIGEST", "CacheHit", "CachedContent", "Change", "FileEntry", "Manifest", "ScannedFile", "StatCache", "checkout",
    "compress_manifest", "decode_manifest", "diff_files", "encode_manifest", "manifest_key", "scan", "summarise",
    "validate_path", "folders_of", "matches_glob", "parse_part", "select_files", "split_parts",
]

"""Per-chunk codecs: each chunk is its own zstd frame, or raw bytes when compression does not pay."""

from __future__ import annotations

import threading

import zstandard

from dvx.errors import IntegrityError

RAW = 0
ZSTD = 1
CODEC_NAMES = {RAW: "raw", ZSTD: "zstd"}

# Keep a chunk raw unless zstd saves at least this share of its bytes.
_MIN_SAVING = 0.03
_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx = getattr(_local, "decompressor", None)
    if dctx is None:
        dctx = _local.decompressor = zstandard.ZstdDecompressor()
    return dctx


def encode(data: bytes | memoryview, level: int) -> tuple[int, bytes | memoryview]:
    """Compress one chunk; returns (codec, payload)."""
    compressed = _compressor(level).compress(data)
    if len(compressed) <= len(data) * (1 - _MIN_SAVING):
        return ZSTD, compressed
    return RAW, data


def decode(codec: int, payload: bytes, raw_size: int) -> bytes:
    """Inverse of `encode`, refusing to produce more than `raw_size` bytes (a hostile frame can't balloon)."""
    if codec == RAW:
        return payload
    if codec == ZSTD:
        try:
            declared = zstandard.frame_content_size(payload)
            if declared > raw_size:  # the header would override max_output_size below
                raise IntegrityError(f"zstd frame declares {declared} bytes where {raw_size} were recorded")
            return _decompressor().decompress(payload, max_output_size=raw_size)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"corrupt zstd frame: {exc}") from None
    raise IntegrityError(f"unknown chunk codec {codec}")

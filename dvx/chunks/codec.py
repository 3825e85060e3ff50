"""Per-chunk codecs: each chunk is its own zstd frame, or raw bytes when compression does not pay."""

from __future__ import annotations

import threading

import zstandard

from dvx.errors import IntegrityError

RAW = 0
ZSTD = 1
CODEC_NAMES = {RAW: "raw", ZSTD: "zstd"}

# No valid chunk is larger: FastCDC 2020 (pyfastcdc) refuses a maximum chunk size above 16 MiB. Every
# raw length read from a manifest, footer or index is held to it, so a hostile one can't make a reader
# allocate more (a zstd frame or a pack entry declaring 1 TB is refused before anything is allocated).
MAX_CHUNK_SIZE = 16 << 20
# zstd's worst case for a MAX_CHUNK_SIZE input (ZSTD_COMPRESSBOUND); dvx itself stores a chunk raw
# whenever zstd does not make it smaller.
MAX_STORED_SIZE = MAX_CHUNK_SIZE + (MAX_CHUNK_SIZE >> 8)

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


def compresses(data: bytes | memoryview, level: int) -> bool:
    """Whether zstd would store `data` (a sample of a chunk) rather than keep it raw."""
    return encode(data, level)[0] == ZSTD


def decode(codec: int, payload: bytes, raw_size: int) -> bytes:
    """Inverse of `encode`, refusing to produce more than `raw_size` bytes (a hostile frame can't balloon)."""
    if not 0 <= raw_size <= MAX_CHUNK_SIZE:
        raise IntegrityError(f"chunk raw length {raw_size} is out of bounds (at most {MAX_CHUNK_SIZE})")
    if len(payload) > MAX_STORED_SIZE:
        raise IntegrityError(f"chunk stored length {len(payload)} is out of bounds (at most {MAX_STORED_SIZE})")
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

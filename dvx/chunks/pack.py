"""Pack format (format_version 1): chunk payloads back to back, then a footer that lists them.

    payload₀ payload₁ … payloadₙ₋₁
    footer  = header entry₀ … entryₙ₋₁
      header = magic b"DVXPACKF" | format_version u16 | entry count u32                  (14 bytes)
      entry  = chunk id (16 bytes, xxh3-128 big-endian) | offset u64 | stored length u32
               | raw length u32 | codec u8                                                (33 bytes)
    trailer = footer length u64 | magic b"DVXPACK\\x01"                                   (16 bytes)

All integers little-endian. The pack id is the xxh3-128 of the footer, so packs are content-addressed;
the same footer bytes are also written as the pack's index segment.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import msgspec
import xxhash

from dvx.chunks.codec import CODEC_NAMES, MAX_CHUNK_SIZE, MAX_STORED_SIZE, RAW
from dvx.errors import IntegrityError

FORMAT_VERSION = 1
HEADER = struct.Struct("<8sHI")
ENTRY = struct.Struct("<16sQIIB")
TRAILER = struct.Struct("<Q8s")
HEADER_MAGIC = b"DVXPACKF"
TRAILER_MAGIC = b"DVXPACK\x01"


class ChunkRef(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Where a chunk lives: its id, pack, byte offset and stored length, raw length and codec."""

    id: str
    pack: str
    offset: int
    length: int
    size: int
    codec: int


def pack_key(pack_id: str) -> str:
    return f"packs/{pack_id[:2]}/{pack_id}.pack"


def index_key(pack_id: str) -> str:
    return f"index/{pack_id}.idx"


def encode_footer(entries: list[tuple[str, int, int, int, int]]) -> bytes:
    """entries: (chunk id hex, offset, stored length, raw length, codec)."""
    parts = [HEADER.pack(HEADER_MAGIC, FORMAT_VERSION, len(entries))]
    parts.extend(ENTRY.pack(bytes.fromhex(cid), off, length, size, codec) for cid, off, length, size, codec in entries)
    return b"".join(parts)


def footer_id(footer: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(footer)


def decode_footer(footer: bytes, pack_id: str) -> Iterator[ChunkRef]:
    """Parse (and verify against its id) a footer or index segment."""
    check_footer(footer, pack_id)
    for raw_id, offset, length, size, codec in ENTRY.iter_unpack(memoryview(footer)[HEADER.size:]):
        yield ChunkRef(raw_id.hex(), pack_id, offset, length, size, codec)


def check_footer(footer: bytes, pack_id: str) -> int:
    """Verify a footer or index segment against its id and its header; its entry count."""
    if footer_id(footer) != pack_id:
        raise IntegrityError(f"pack {pack_id}: footer does not match its id (damaged pack or index)")
    if len(footer) < HEADER.size:
        raise IntegrityError(f"pack {pack_id}: footer too short")
    magic, version, count = HEADER.unpack_from(footer)
    if magic != HEADER_MAGIC:
        raise IntegrityError(f"pack {pack_id}: bad footer magic")
    if version != FORMAT_VERSION:
        raise IntegrityError(f"pack {pack_id}: pack format_version {version} is not supported by this dvx")
    if len(footer) != HEADER.size + count * ENTRY.size:
        raise IntegrityError(f"pack {pack_id}: footer length does not match its entry count")
    return count


def split_pack(data: bytes, pack_id: str) -> list[ChunkRef]:
    """Read a whole pack's footer through its trailer (used by verify and by readers without an index).

    Every entry must lie in the payload area (before the footer) and respect the chunk bounds, so a
    pack that passes can be sliced by its entries without reading past its payloads."""
    if len(data) < TRAILER.size:
        raise IntegrityError(f"pack {pack_id}: too short")
    footer_len, magic = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    if magic != TRAILER_MAGIC or footer_len > len(data) - TRAILER.size:
        raise IntegrityError(f"pack {pack_id}: bad trailer")
    start = len(data) - TRAILER.size - footer_len
    refs = list(decode_footer(bytes(data[start:start + footer_len]), pack_id))
    check_entries(refs, start, pack_id)
    return refs


def check_entries(refs: list[ChunkRef], payload_end: int, pack_id: str) -> None:
    """Each entry inside the payload area [0, payload_end), with a known codec and lengths within the
    chunk bounds (a raw entry's stored and raw lengths are equal)."""
    for number, ref in enumerate(refs):
        problem = None
        if ref.offset + ref.length > payload_end:
            problem = (f"bytes {ref.offset}..{ref.offset + ref.length} run past the payload area (which ends "
                       f"at {payload_end})")
        elif ref.codec not in CODEC_NAMES:
            problem = f"unknown codec {ref.codec}"
        elif ref.size > MAX_CHUNK_SIZE or ref.length > MAX_STORED_SIZE:
            problem = f"raw length {ref.size} or stored length {ref.length} is out of bounds"
        elif ref.codec == RAW and ref.length != ref.size:
            problem = f"raw chunk with stored length {ref.length} and raw length {ref.size}"
        if problem:
            raise IntegrityError(f"pack {pack_id}: entry {number} (chunk {ref.id}): {problem}")

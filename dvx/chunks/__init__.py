"""Chunking, chunk ids, codecs, the pack format and the chunk store."""

from dvx.chunks.pack import ChunkRef
from dvx.chunks.store import ChunkStore, IngestedFile, StoreConfig, chunk_id, load_config

__all__ = ["ChunkRef", "ChunkStore", "IngestedFile", "StoreConfig", "chunk_id", "load_config"]

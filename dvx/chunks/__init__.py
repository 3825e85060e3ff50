"""Chunking, chunk ids, codecs, the pack format and the chunk store."""

from dvx.chunks.pack import ChunkRef
from dvx.chunks.store import (
    ChunkStore,
    IngestedFile,
    StoreConfig,
    chunk_id,
    copy_pack,
    init_config_like,
    load_config,
    stored_pack_ids,
)

__all__ = ["ChunkRef", "ChunkStore", "IngestedFile", "StoreConfig", "chunk_id", "copy_pack", "init_config_like",
           "load_config", "stored_pack_ids"]

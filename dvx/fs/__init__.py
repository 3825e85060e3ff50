"""Store access: URL → Store. The only package that talks to fsspec and cloud SDKs."""

from __future__ import annotations

import os

from dvx.errors import UsageError
from dvx.fs.base import ObjectInfo, Store, Upload

__all__ = ["ObjectInfo", "Store", "Upload", "open_store", "normalise_url"]

_CLOUD_EXTRAS = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}


def normalise_url(url: str) -> str:
    """Canonical spelling of a store URL: local paths become absolute paths."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return os.path.abspath(os.path.expanduser(url))
    if scheme == "file":
        return os.path.abspath(rest)
    return f"{scheme}://{rest.rstrip('/')}"


def open_store(url: str) -> Store:
    """Open the store at `url`: a folder path, file://…, memory://NAME (tests), or a cloud URL."""
    url = normalise_url(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        from dvx.fs.local import LocalStore

        return LocalStore(url)
    if scheme == "memory":
        from dvx.fs.fsspec_store import MemoryStore

        if not rest.strip("/"):
            raise UsageError("memory:// store URLs need a name, e.g. memory://scratch")
        return MemoryStore(rest.strip("/"), url)
    if scheme == "s3":
        from dvx.fs.s3 import S3Store

        if not rest.strip("/"):
            raise UsageError("s3:// store URLs need a bucket, e.g. s3://my-bucket/datasets")
        return S3Store(url, rest.strip("/"))
    if scheme in _CLOUD_EXTRAS:
        raise UsageError(
            f"{scheme}:// stores are not supported yet in this version of dvx "
            f"(they arrive with the dvx[{_CLOUD_EXTRAS[scheme]}] extra)"
        )
    raise UsageError(f"unknown store URL scheme {scheme!r} in {url!r}: use a folder path or memory://NAME")

"""Store access: URL → Store. The only package that talks to fsspec and cloud SDKs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

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


def open_store(url: str, options: Mapping[str, Any] | None = None) -> Store:
    """Open the store at `url`: a folder path, file://…, memory://NAME (tests), or a cloud URL
    (s3://, gs://, az:// or abfs://). `options` are the per-store settings from dvx.toml (endpoint
    URL, region, profile, anonymous, …); credentials themselves come from each cloud's usual places."""
    url = normalise_url(url)
    options = dict(options or {})
    scheme, sep, rest = url.partition("://")
    if not sep:
        from dvx.fs.local import LocalStore

        return LocalStore(url)
    if scheme == "memory":
        from dvx.fs.fsspec_store import MemoryStore

        if not rest.strip("/"):
            raise UsageError("memory:// store URLs need a name, e.g. memory://scratch")
        return MemoryStore(rest.strip("/"), url)
    if scheme not in _CLOUD_EXTRAS:
        raise UsageError(f"unknown store URL scheme {scheme!r} in {url!r}: "
                         "use a folder path, s3://, gs://, az:// or memory://NAME")
    if not rest.strip("/"):
        raise UsageError(f"{scheme}:// store URLs need a bucket or container, e.g. {scheme}://my-bucket/datasets")
    if scheme == "s3":
        from dvx.fs.s3 import S3Store as cloud_store
    elif _CLOUD_EXTRAS[scheme] == "gcs":
        from dvx.fs.gcs import GCSStore as cloud_store
    else:
        from dvx.fs.azure import AzureStore as cloud_store
    return cloud_store(url, rest.strip("/"), options)

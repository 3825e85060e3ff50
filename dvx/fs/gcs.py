"""Google Cloud Storage stores through gcsfs.

Credentials come from gcsfs's usual places (application default credentials, then anonymous) unless
dvx.toml names a service-account file or asks for anonymous access; gcsfs also honours
``STORAGE_EMULATOR_HOST``. Every write is one multipart upload with ``ifGenerationMatch``: 0 for
create-only writes, the generation read for refs, so a writer holding a stale generation gets 412
and re-reads. (Resumable uploads are avoided: fake-gcs-server ignores the precondition on them.)
"""

from __future__ import annotations

import json
import logging
import os

from dvx.errors import PreconditionFailed, StoreError, UsageError
from dvx.fs.fsspec_store import FsspecStore, check_options

#: dvx.toml settings for gs:// stores.
GCS_OPTIONS = ("endpoint_url", "project", "anonymous", "credentials_file")

# A server that stops answering must surface as an error, not a hang: gcsfs sets no timeout of its
# own. These bound stalls (connecting, silence while reading), not the length of a transfer.
_CONNECT_TIMEOUT_S = 30
_READ_STALL_TIMEOUT_S = 60
_BOUNDARY = "==dvx-part=="

# gcsfs logs each failed request with its traceback; with no handler configured Python would print that
# to stderr. dvx reports the failure itself (StoreError); an application's own logging still gets it.
logging.getLogger("gcsfs").addHandler(logging.NullHandler())


def _gcsfs():
    try:
        import gcsfs.core
    except ImportError:
        raise UsageError('gs:// stores need the GCS extra: pip install "dvx[gcs]"') from None
    return gcsfs.core


class GCSStore(FsspecStore):
    def __init__(self, url: str, bucket_and_prefix: str, options: dict):
        gcsfs_core = _gcsfs()
        import aiohttp

        check_options(url, options, GCS_OPTIONS)
        if options.get("anonymous") and options.get("credentials_file"):
            raise UsageError(f"store {url}: set either anonymous or credentials_file, not both")
        kwargs: dict = {}
        if options.get("endpoint_url"):
            kwargs["endpoint_url"] = options["endpoint_url"].rstrip("/")
        if options.get("project"):
            kwargs["project"] = options["project"]
        if options.get("anonymous"):
            kwargs["token"] = "anon"
        elif options.get("credentials_file"):
            # gcsfs would take a path that isn't a file for a raw access token and go online to check it.
            path = os.path.expanduser(str(options["credentials_file"]))
            if not os.path.isfile(path):
                raise UsageError(f"store {url}: credentials_file {path} does not exist")
            kwargs["token"] = path
        # The plain JSON-API filesystem: gcsfs's experimental zonal/HNS subclass probes every bucket
        # over gRPC (a 60 s wait against emulators) for features dvx doesn't use.
        # Listings must never be served from a cache: other writers change the store under us.
        try:
            fs = gcsfs_core.GCSFileSystem(
                use_listings_cache=False, skip_instance_cache=True,
                requests_timeout=aiohttp.ClientTimeout(sock_connect=_CONNECT_TIMEOUT_S,
                                                       sock_read=_READ_STALL_TIMEOUT_S),
                **kwargs)
        except Exception as exc:  # e.g. a credentials file gcsfs cannot understand
            raise StoreError(f"store {url}: cannot set up GCS access: {type(exc).__name__}: {exc}") from exc
        super().__init__(fs, bucket_and_prefix, url)

    def _bucket_key(self, key: str) -> tuple[str, str]:
        bucket, name, _ = self.fs.split_path(self._path(key))
        return bucket, name

    def _upload(self, key: str, data: bytes, generation: str) -> str:
        """One multipart upload, only if the object is at `generation` ("0": absent); the new generation.

        412 (the object moved on, or was created or deleted meanwhile) reaches the caller as
        FileExistsError, gcsfs's translation of it."""
        bucket, name = self._bucket_key(key)
        head = (f"--{_BOUNDARY}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
                f"{json.dumps({'name': name})}\r\n"
                f"--{_BOUNDARY}\r\nContent-Type: application/octet-stream\r\n\r\n")
        body = b"".join((head.encode(), data, f"\r\n--{_BOUNDARY}--".encode()))
        try:
            out = self.fs.call("POST", f"{self.fs._location}/upload/storage/v1/b/{{}}/o", bucket,
                               uploadType="multipart", ifGenerationMatch=generation, data=body,
                               headers={"Content-Type": f'multipart/related; boundary="{_BOUNDARY}"'},
                               json_out=True)
        except FileNotFoundError:
            raise StoreError(f"cannot write {self.url}/{key}: bucket {bucket} does not exist") from None
        return str(out["generation"])

    def exists(self, key: str) -> bool:
        # One metadata GET; fs.isfile would also list the prefix to look for a folder.
        try:
            self.fs.call("GET", "b/{}/o/{}", *self._bucket_key(key), json_out=True)
        except FileNotFoundError:
            return False
        return True

    def put_create(self, key: str, data: bytes) -> bool:
        try:
            self._upload(key, data, "0")
        except FileExistsError:
            return False
        return True

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        # Bytes and generation come in the same response, so they always belong together.
        try:
            headers, data = self.fs.call("GET", "b/{}/o/{}", *self._bucket_key(key), alt="media")
        except FileNotFoundError:
            return None, None
        return data, headers["X-Goog-Generation"]

    def put_if(self, key: str, data: bytes, token: str | None) -> str:
        if token is not None and not (token.isascii() and token.isdigit()):
            self._path(key)  # invalid keys are still a UsageError
            # Not a generation, so not the current one (and GCS would answer 400, not 412).
            raise PreconditionFailed(f"{key} was changed by another writer")
        try:
            return self._upload(key, data, "0" if token is None else token)
        except FileExistsError:
            raise PreconditionFailed(f"{key} was changed by another writer") from None

    def delete(self, key: str) -> None:
        # A direct DELETE: a missing object is one quick 404, with no listing or retries.
        try:
            self.fs.call("DELETE", "b/{}/o/{}", *self._bucket_key(key))
        except FileNotFoundError:
            pass

"""S3 (and S3-compatible) stores through s3fs.

Credentials and endpoint come from the standard AWS places (environment, profiles, instance roles,
``AWS_ENDPOINT_URL``). Create-only writes send ``If-None-Match: *``; refs are swapped with
``If-Match: <ETag>``, so a writer whose ETag went stale gets 412 and re-reads.
"""

from __future__ import annotations

import fsspec.asyn

from dvx.errors import NotFoundError, PreconditionFailed, StoreError, UsageError
from dvx.fs.fsspec_store import FsspecStore, check_options

#: dvx.toml settings for s3:// stores (credentials stay in the AWS places: env, profiles, roles).
S3_OPTIONS = ("endpoint_url", "region", "profile", "anonymous")


def _s3fs():
    try:
        import s3fs
    except ImportError:
        raise UsageError('s3:// stores need the S3 extra: pip install "dvx[s3]"') from None
    return s3fs


def _precondition_failed(exc: OSError) -> bool:
    text = str(exc)
    return any(sign in text for sign in ("412", "PreconditionFailed", "pre-conditions", "does not exist"))


class S3Store(FsspecStore):
    def __init__(self, url: str, bucket_and_prefix: str, options: dict):
        s3fs = _s3fs()
        check_options(url, options, S3_OPTIONS)
        kwargs: dict = {}
        if options.get("endpoint_url"):
            kwargs["endpoint_url"] = options["endpoint_url"]
        if options.get("region"):
            kwargs["client_kwargs"] = {"region_name": options["region"]}
        if options.get("profile"):
            kwargs["profile"] = options["profile"]
        if options.get("anonymous"):
            kwargs["anon"] = True
        # Listings must never be served from a cache: other writers change the store under us.
        fs = s3fs.S3FileSystem(use_listings_cache=False, skip_instance_cache=True, **kwargs)
        super().__init__(fs, bucket_and_prefix, url)

    def _get_object(self, key: str) -> tuple[bytes, str]:
        """Bytes and ETag from one GET (s3fs's cat_file would send a HEAD first)."""
        bucket, object_key, _ = self.fs.split_path(self._path(key))

        async def get() -> tuple[bytes, str]:
            response = await self.fs._call_s3("get_object", Bucket=bucket, Key=object_key)
            try:
                return await response["Body"].read(), response["ETag"]
            finally:
                response["Body"].close()

        return fsspec.asyn.sync(self.fs.loop, get)

    def read(self, key: str) -> bytes:
        try:
            return self._get_object(key)[0]
        except FileNotFoundError:
            raise NotFoundError(f"object {key} is missing from store {self.url}") from None

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        # Bytes and ETag of the same object version, from one response.
        try:
            return self._get_object(key)
        except FileNotFoundError:
            return None, None

    def put_if(self, key: str, data: bytes, token: str | None) -> str:
        path = self._path(key)
        try:
            if token is None:
                self.fs.pipe_file(path, data, mode="create")
            else:
                self.fs.pipe_file(path, data, IfMatch=token)
        except FileExistsError:
            raise PreconditionFailed(f"{key} was created by another writer") from None
        except FileNotFoundError:  # If-Match on an object someone deleted
            raise PreconditionFailed(f"{key} was deleted by another writer") from None
        except OSError as exc:
            if _precondition_failed(exc):
                raise PreconditionFailed(f"{key} was changed by another writer") from None
            raise StoreError(f"cannot write {self.url}/{key}: {exc}") from None
        return self.fs.info(path)["ETag"]

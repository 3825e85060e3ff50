"""Azure Blob Storage stores through adlfs.

Credentials come from the standard Azure places, read by adlfs itself: AZURE_STORAGE_CONNECTION_STRING,
AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN, a service principal
(AZURE_STORAGE_CLIENT_ID/…), or, given only an account name, DefaultAzureCredential (Azure CLI login,
managed identity, …). Create-only writes send ``If-None-Match: *``; refs are swapped with
``If-Match: <ETag>``, so a writer whose ETag went stale gets 412 and re-reads.

Blob storage has no folders: a folder is any name prefix ending in '/' that some blob starts with.
Listing, folder tests and reference swaps use the SDK's blob clients (on adlfs's event loop) so each
is one request; adlfs's own versions take two or three and its isfile() hides every error as False.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from fsspec.asyn import sync

from dvx.errors import NotFoundError, PreconditionFailed, StoreError, UsageError
from dvx.fs.base import ObjectInfo, check_key
from dvx.fs.fsspec_store import (
    STORE_METHODS,
    FsspecStore,
    as_store_errors,
    check_options,
)

#: dvx.toml settings for az:// stores (credentials stay in the Azure places: env, CLI login, managed identity).
AZURE_OPTIONS = ("account_name", "endpoint_url", "anonymous")

# Secret-bearing fields as they appear in connection strings and SAS URLs.
_SECRET_FIELDS = re.compile(r"(AccountKey=|SharedAccessSignature=|\bsig=)[^;&\s'\"]+", re.IGNORECASE)


def _scrub(text: str) -> str:
    return _SECRET_FIELDS.sub(r"\1***", text)


def _adlfs(scheme: str):
    try:
        import adlfs
    except ImportError:
        raise UsageError(f'{scheme}:// stores need the Azure extra: pip install "dvx[azure]"') from None
    return adlfs


def _account_host(url: str, endpoint_url: str) -> str:
    scheme, _, host = endpoint_url.rstrip("/").partition("://")
    if scheme != "https" or not host:
        raise UsageError(f"endpoint_url {endpoint_url!r} for store {url} must be an https:// account URL such as "
                         "https://ACCOUNT.blob.core.windows.net (emulators: set AZURE_STORAGE_CONNECTION_STRING)")
    return host


def _is_folder(props) -> bool:
    """Directory marker blobs (hierarchical-namespace accounts, adlfs' mkdir) are not objects."""
    metadata = {k.lower(): v for k, v in (getattr(props, "metadata", None) or {}).items()}
    return "true" in (metadata.get("hdi_isfolder"), metadata.get("is_directory"))


def _fail_fast(client) -> None:
    """The SDK's default retries wait 15, 18 and 24 s, so an unreachable endpoint took 85 s to report.
    Keep the three retries (they absorb throttling and blips) but only seconds apart."""
    policy = getattr(getattr(client, "_config", None), "retry_policy", None)
    if hasattr(policy, "initial_backoff"):
        policy.initial_backoff, policy.increment_base, policy.random_jitter_range = 1, 2, 1


class AzureStore(FsspecStore):
    def __init__(self, url: str, bucket_and_prefix: str, options: dict):
        adlfs = _adlfs(url.partition("://")[0])
        check_options(url, options, AZURE_OPTIONS)
        container, _, prefix = bucket_and_prefix.partition("/")
        kwargs: dict = {}
        if "@" in container:  # abfs[s]://container@ACCOUNT.dfs.core.windows.net/prefix
            container, _, host = container.partition("@")
            kwargs["account_name"] = host.split(".")[0]
            if "." in host:
                kwargs["account_host"] = host.replace(".dfs.", ".blob.", 1)
        if options.get("endpoint_url"):
            kwargs["account_host"] = _account_host(url, options["endpoint_url"])
            kwargs["account_name"] = kwargs["account_host"].split(".")[0]
        if options.get("account_name"):
            kwargs["account_name"] = options["account_name"]
        if options.get("anonymous"):
            kwargs["anon"] = True
        try:
            # Listings must never be served from a cache: other writers change the store under us.
            fs = adlfs.AzureBlobFileSystem(use_listings_cache=False, skip_instance_cache=True, **kwargs)
        except ImportError as exc:  # azure-identity, needed for logins without a key
            raise UsageError(f'store {url}: {exc.name or exc} is missing: pip install "dvx[azure]"') from None
        except ValueError as exc:
            raise UsageError(f"cannot open store {url}: {_scrub(str(exc))} (set "
                             "AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME or account_name in "
                             "dvx.toml with a key, SAS token or Azure login)") from None
        if fs.connection_string and kwargs.get("account_name") not in (None, fs.service_client.account_name):
            raise UsageError(f"store {url} names account {kwargs['account_name']!r} but "
                             f"AZURE_STORAGE_CONNECTION_STRING is for {fs.service_client.account_name!r}")
        _fail_fast(fs.service_client)
        super().__init__(fs, f"{container}/{prefix}" if prefix else container, url)
        self._container, self._base = container, f"{prefix}/" if prefix else ""

    def _redact(self, text: str) -> str:
        secrets = [self.fs.account_key, self.fs.sas_token, self.fs.client_secret]
        secrets += [value for field, _, value in (part.partition("=") for part in (self.fs.connection_string or
                    "").split(";")) if field.lower() in ("accountkey", "sharedaccesssignature")]
        for secret in filter(None, secrets):
            text = text.replace(secret, "***")
        return _scrub(text)

    def _run(self, coroutine_function):
        return sync(self.fs.loop, coroutine_function)

    def _blob(self, key: str):
        return self.fs.service_client.get_blob_client(self._container, self._base + check_key(key))

    def _names_under(self, prefix: str) -> str:
        return f"{self._base}{check_key(prefix)}/" if prefix else self._base

    def _properties(self, key: str):
        """The blob's properties; None when absent or only a folder marker."""
        from azure.core.exceptions import ResourceNotFoundError

        async def get():
            async with self._blob(key) as blob:
                return await blob.get_blob_properties()

        try:
            props = self._run(get)
        except ResourceNotFoundError:
            return None
        return None if _is_folder(props) else props

    def exists(self, key: str) -> bool:
        return self._properties(key) is not None

    def info(self, key: str) -> ObjectInfo:
        props = self._properties(key)
        if props is None:
            raise NotFoundError(f"object {key} is missing from store {self.url}")
        return ObjectInfo(key, props.size, props.last_modified.timestamp())

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        try:
            return super().read_ranges(key, ranges)
        except StoreError as exc:
            if getattr(exc.__cause__, "status_code", None) != 416:  # a range starting past the end
                raise
            raise NotFoundError(f"object {key} is shorter than expected (truncated?)") from None

    def _names(self, start: str, delimiter: str | None = None, first_only: bool = False) -> list[str]:
        """Names of the blobs (and, with a delimiter, the folders) starting with `start`, in one paged
        listing; none when the container itself is missing, as for a missing bucket on S3."""
        from azure.core.exceptions import ResourceNotFoundError

        async def names():
            found = []
            async with self.fs.service_client.get_container_client(self._container) as container:
                items = container.walk_blobs(start, include=["metadata"], delimiter=delimiter) if delimiter else \
                    container.list_blobs(start, include=["metadata"], results_per_page=1 if first_only else None)
                async for item in items:
                    if not _is_folder(item):
                        found.append(item.name)
                        if first_only:
                            break
            return found

        try:
            return self._run(names)
        except ResourceNotFoundError:
            return []

    def is_dir(self, key: str) -> bool:
        return bool(self._names(self._names_under(key), first_only=True))

    def list(self, prefix: str) -> list[str]:
        start = self._names_under(prefix)
        return sorted({name[len(start):].rstrip("/") for name in self._names(start, delimiter="/")} - {""})

    @as_store_errors
    def walk(self, prefix: str) -> list[str]:
        """Every object key below `prefix`, from one flat listing instead of one per folder."""
        return sorted(name[len(self._base):] for name in self._names(self._names_under(prefix)))

    def scan(self, prefix: str) -> list[ObjectInfo]:
        """One flat listing with each blob's size and last-modified time."""
        from azure.core.exceptions import ResourceNotFoundError

        start = self._names_under(prefix)

        async def blobs():
            found = []
            async with self.fs.service_client.get_container_client(self._container) as container:
                async for item in container.list_blobs(start, include=["metadata"]):
                    if not _is_folder(item):
                        found.append(ObjectInfo(item.name[len(self._base):], item.size,
                                                item.last_modified.timestamp()))
            return found

        try:
            return sorted(self._run(blobs), key=lambda info: info.key)
        except ResourceNotFoundError:
            return []

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        from azure.core.exceptions import ResourceNotFoundError

        async def download():  # bytes and ETag from the same response, so they always match
            async with self._blob(key) as blob:
                stream = await blob.download_blob()
                return await stream.readall(), stream.properties.etag

        try:
            return self._run(download)
        except ResourceNotFoundError:
            return None, None

    def put_if(self, key: str, data: bytes, token: str | None) -> str:
        from azure.core import MatchConditions
        from azure.core.exceptions import (
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )

        condition = {"overwrite": False} if token is None else {
            "overwrite": True, "etag": token, "match_condition": MatchConditions.IfNotModified}

        async def upload():
            async with self._blob(key) as blob:
                # is_directory=false is the marker adlfs itself writes on files.
                written = await blob.upload_blob(data, metadata={"is_directory": "false"}, **condition)
                return written["etag"]

        try:
            return self._run(upload)
        except ResourceExistsError:
            raise PreconditionFailed(f"{key} was created by another writer") from None
        except (ResourceModifiedError, ResourceNotFoundError) as exc:  # a stale ETag, or the blob is gone
            if exc.error_code == "ContainerNotFound":
                raise
            raise PreconditionFailed(f"{key} was changed or deleted by another writer") from None


def _one_line_without_secrets(method):
    """StoreError messages quote SDK exceptions, which span lines (the XML error body) and may echo a
    URL or connection string: keep the first line and the error code, and strip secrets."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except StoreError as exc:
            text = str(exc)
            line = text.partition("\n")[0]
            code = getattr(exc.__cause__, "error_code", None)
            code = getattr(code, "value", code)  # e.g. AuthorizationFailure
            clean = self._redact(f"{line} ({code})" if code and code not in line else line)
            if clean == text:
                raise
            # The original exception would show the secret again under --debug.
            raise StoreError(clean) from (exc.__cause__ if self._redact(text) == text else None)

    return guarded


for _name in (*STORE_METHODS, "walk"):
    setattr(AzureStore, _name, _one_line_without_secrets(getattr(AzureStore, _name)))

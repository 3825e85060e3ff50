"""dvx: version datasets and models like code — content-defined chunks, dedup, zstd packs, no server.

    import dvx
    path = dvx.get("cifar@v3")                      # read-only cached copy
    ds = dvx.Dataset.create("cifar")
    ds.add("images/", to="train/")
    version = ds.commit("add images")               # version.ref == "cifar@v4"
    dvx.Model.register("resnet", "ckpt/", datasets=["cifar@v4"], metrics={"acc": 0.93}, aliases=["staging"])
    weights = dvx.Model.get("resnet@production").path
"""

from dvx.errors import (
    ConflictError,
    DvxError,
    IntegrityError,
    NotFoundError,
    StoreError,
    UsageError,
)

_API = {"Dataset", "Model", "ModelVersion", "Version", "check", "datasets", "delete", "diff", "fetch", "files", "gc", "get", "init",
        "lineage", "log", "ls", "open", "pin", "pins", "pull", "push", "SharedDraft", "show", "status",
        "store_info", "tag", "verify", "version"}


def __getattr__(name: str):
    """The API loads on first use, so `dvx --help` and small commands start fast."""
    if name in _API:
        from dvx import api

        return getattr(api, name)
    raise AttributeError(f"module 'dvx' has no attribute {name!r}")


__version__ = "0.1.0"
__all__ = [
    "ConflictError", "Dataset", "DvxError", "IntegrityError", "Model", "ModelVersion", "NotFoundError", "StoreError",
    "UsageError", "Version", "check", "datasets", "delete", "diff", "fetch", "files", "gc", "get", "init", "lineage", "log", "ls", "open", "pin", "pins", "pull", "push", "SharedDraft", "show", "status",
    "store_info", "tag", "verify", "version",
]

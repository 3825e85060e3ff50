"""Real servers for the cloud backends, on 127.0.0.1, started on first use and stopped at session end
(tests/conftest.py's `cloud_servers` fixture). No mocks of our own: the wire protocol is the real one.

Each server sets the environment variables its SDK reads, so `dvx` subprocesses started by the tests
reach the same server. One module per backend (server_s3/server_gcs/server_azure); every started
server registers itself in `RUNNING` so `stop_all` can stop it.
"""

from __future__ import annotations

from server_registry import RUNNING
from server_azure import new_azure_container
from server_gcs import new_gcs_bucket
from server_s3 import new_s3_bucket, s3_endpoint

__all__ = ["new_s3_bucket", "s3_endpoint", "new_gcs_bucket", "new_azure_container", "stop_all"]


def stop_all() -> None:
    for server in RUNNING.values():
        server.stop()
    RUNNING.clear()

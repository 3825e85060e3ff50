"""Real servers for the cloud backends, on 127.0.0.1, started on first use and stopped at session end
(tests/conftest.py's `cloud_servers` fixture). No mocks of our own: the wire protocol is the real one."""

from __future__ import annotations

import os
import uuid

_running: dict[str, object] = {}


def s3_endpoint() -> str:
    """A moto S3 server (enforces If-None-Match / If-Match on PutObject); AWS_* point the SDK at it."""
    if "s3" not in _running:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        _running["s3"] = server
        os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                          AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://{host}:{port}")
    return os.environ["AWS_ENDPOINT_URL"]


def new_s3_bucket() -> str:
    """A fresh, empty bucket on the moto server; returns its name."""
    import s3fs

    s3_endpoint()
    name = f"dvx-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(name)
    return name


def stop_all() -> None:
    for server in _running.values():
        server.stop()
    _running.clear()

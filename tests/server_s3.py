"""moto's S3 server (enforces If-None-Match / If-Match on PutObject); AWS_* point the SDK at it."""

from __future__ import annotations

import os
import uuid

from server_registry import RUNNING


def s3_endpoint() -> str:
    if "s3" not in RUNNING:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        RUNNING["s3"] = server
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

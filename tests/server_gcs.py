"""fake-gcs-server (placeholder: being written)."""


def new_gcs_bucket() -> str:
    raise RuntimeError("fake-gcs-server fixture not written yet")

"""Azurite (placeholder: being written)."""


def new_azure_container() -> str:
    raise RuntimeError("Azurite fixture not written yet")

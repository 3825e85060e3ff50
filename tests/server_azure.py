"""Azurite's blob server (enforces If-None-Match / If-Match ETag conditions); AZURE_STORAGE_CONNECTION_STRING
points adlfs (here and in `dvx` subprocesses) at it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from server_registry import RUNNING

# Azurite's published development account (not a secret: it is the same for every installation).
_ACCOUNT = "devstoreaccount1"
_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_INSTALL_DIR = Path(__file__).resolve().parent.parent / ".ci" / "azurite"


def _executable() -> str:
    found = shutil.which("azurite-blob") or str(_INSTALL_DIR / "node_modules" / ".bin" / "azurite-blob")
    if not os.path.exists(found):
        raise RuntimeError("Azurite is not installed: run `npm install --prefix .ci/azurite azurite@3` "
                           "in the repository root (or put azurite-blob on PATH)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Azurite:
    def __init__(self) -> None:
        executable = _executable()
        self.port = _free_port()
        self._workdir = tempfile.mkdtemp(prefix="dvx-azurite-")  # its workspace and our log of its output
        log = Path(self._workdir) / "azurite.log"
        with log.open("wb") as out:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [executable, "--inMemoryPersistence", "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                 "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self._workdir)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                output = log.read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"Azurite exited at start:\n{output}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("Azurite did not start listening within 30 s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self._workdir, ignore_errors=True)


def azure_connection_string() -> str:
    if "azure" not in RUNNING:
        server = _Azurite()
        RUNNING["azure"] = server
        os.environ["AZURE_STORAGE_CONNECTION_STRING"] = (
            f"DefaultEndpointsProtocol=http;AccountName={_ACCOUNT};AccountKey={_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{server.port}/{_ACCOUNT};")
    return os.environ["AZURE_STORAGE_CONNECTION_STRING"]


def new_azure_container() -> str:
    """A fresh, empty container on the Azurite server; returns its name."""
    from azure.storage.blob import BlobServiceClient

    name = f"dvx-{uuid.uuid4().hex[:12]}"
    with BlobServiceClient.from_connection_string(azure_connection_string()) as client:
        client.create_container(name)
    return name


def azure_endpoint() -> str:
    """http://127.0.0.1:PORT of the Azurite server (the account's blob URL adds /devstoreaccount1)."""
    azure_connection_string()
    return f"http://127.0.0.1:{RUNNING['azure'].port}"


def connection_string_via(endpoint: str) -> str:
    """The Azurite connection string with its blob endpoint moved to `endpoint` (e.g. a proxy)."""
    return azure_connection_string().replace(azure_endpoint(), endpoint.rstrip("/"))

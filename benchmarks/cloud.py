"""Request economy and transfer speed on the cloud backends, against their emulators on 127.0.0.1.

Each backend's emulator is started by the test suite's server helpers (tests/server_*.py) and put
behind a counting HTTP proxy (tests/http_proxy.py); the installed `dvx` command reaches it through
dvx.toml's per-store `endpoint_url`. For every workload the script prints the HTTP requests by kind
and the time, next to a baseline measured in the same run: the same folder uploaded (or downloaded)
with the SDK's own recursive fsspec put/get, i.e. one object per file.

    python benchmarks/cloud.py                 # every backend whose SDK and emulator are installed
    python benchmarks/cloud.py --only s3 --mib 64
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from datagen import write_random_files, write_small_files  # noqa: E402
from harness import format_bytes, median  # noqa: E402
from http_proxy import FaultyProxy  # noqa: E402


def _s3():
    import s3fs
    from servers import new_s3_bucket, s3_endpoint

    def fs(endpoint: str):
        return s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True, use_listings_cache=False)

    return s3_endpoint(), lambda: f"s3://{new_s3_bucket()}", fs, _via_endpoint_option


def _via_endpoint_option(proxy_url: str) -> tuple[str, dict]:
    """dvx reaches the proxy through dvx.toml's per-store endpoint_url."""
    return f'endpoint_url = "{proxy_url}"\n', {}


def _gcs():
    import gcsfs.core  # the plain JSON-API filesystem, as dvx uses (no zonal-bucket gRPC probe)
    from servers import new_gcs_bucket
    from server_gcs import gcs_endpoint

    def fs(endpoint: str):
        return gcsfs.core.GCSFileSystem(endpoint_url=endpoint, token="anon", skip_instance_cache=True)

    return gcs_endpoint(), lambda: f"gs://{new_gcs_bucket()}", fs, _via_endpoint_option


def _azure():
    import adlfs
    from servers import new_azure_container
    from server_azure import azure_endpoint, connection_string_via

    def fs(endpoint: str):
        return adlfs.AzureBlobFileSystem(connection_string=connection_string_via(endpoint), skip_instance_cache=True)

    def via_connection_string(proxy_url: str) -> tuple[str, dict]:
        # adlfs builds https:// account URLs from options: an http proxy goes in the connection string.
        return "", {"AZURE_STORAGE_CONNECTION_STRING": connection_string_via(proxy_url)}

    return azure_endpoint(), lambda: f"az://{new_azure_container()}", fs, via_connection_string


BACKENDS = {"s3": _s3, "gcs": _gcs, "azure": _azure}


def classify(counts: Counter, log: list[tuple[str, str]]) -> dict[str, int]:
    kinds: Counter = Counter()
    for method, path in log:
        if method == "GET" and any(mark in path for mark in ("list-type=", "comp=list", "/o?", "prefix=")):
            kinds["LIST"] += 1
        else:
            kinds[method] += 1
    return dict(sorted(kinds.items()))


class Recorder(FaultyProxy):
    """The proxy, also keeping (method, path) of every request."""

    def __init__(self, upstream: str):
        super().__init__(upstream)
        self.log: list[tuple[str, str]] = []
        self._forward_inner = self._forward

        def forward(method, path, headers, body):
            with self._lock:
                self.log.append((method, path))
            return self._forward_inner(method, path, headers, body)

        self._forward = forward

    def take(self) -> dict[str, int]:
        with self._lock:
            log, self.log = self.log, []
        return classify(Counter(), log)


def dvx(args: list[str], cwd: Path, env: dict) -> None:
    subprocess.run(["dvx", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)


def measure(label: str, proxy: Recorder, action, data_bytes: int, rows: list) -> None:
    proxy.take()
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    rows.append((label, data_bytes, proxy.take(), seconds))


def run_backend(name: str, mib: int, small_files: int, repeat: int) -> list:
    endpoint, new_root, sdk_fs, configure = BACKENDS[name]()
    rows: list = []
    with Recorder(endpoint) as proxy, tempfile.TemporaryDirectory(prefix="dvx-cloud-bench-") as tmp:
        tmp_path = Path(tmp)
        big, small = tmp_path / "big", tmp_path / "small"
        write_random_files(big, 4, (mib << 20) // 4)
        write_small_files(small, small_files, 16 << 10, subfolders=20)
        big_bytes, small_bytes = mib << 20, small_files * (16 << 10)
        for attempt in range(repeat):
            root = f"{new_root()}/run-{uuid.uuid4().hex[:6]}"
            project = tmp_path / f"proj-{attempt}"
            project.mkdir()
            toml_lines, env_extra = configure(proxy.url)
            (project / "dvx.toml").write_text(f'[store]\nurl = "{root}"\n{toml_lines}')
            env = {k: v for k, v in os.environ.items() if k != "DVX_STORE"}
            env.update(env_extra)
            env.update(DVX_STATE_DIR=str(tmp_path / f"state-{attempt}"), DVX_CACHE_DIR=str(tmp_path / f"cache-{attempt}"))
            fs = sdk_fs(proxy.url)
            base = root.split("://", 1)[1]

            def commit(name_: str, folder: Path, env=env, project=project) -> None:
                dvx(["dataset", "create", name_], project, env)
                dvx(["dataset", "add", str(folder)], project, env)
                dvx(["dataset", "commit", "-m", "bench"], project, env)

            measure(f"commit {mib} MiB in 4 files", proxy, lambda: commit("big", big), big_bytes, rows)
            measure(f"  baseline: SDK put of the same 4 files", proxy,
                    lambda: fs.put(str(big), f"{base}/baseline-big", recursive=True), big_bytes, rows)
            measure(f"commit {small_files} files of 16 KiB", proxy, lambda: commit("small", small), small_bytes, rows)
            measure(f"  baseline: SDK put of the same files", proxy,
                    lambda: fs.put(str(small), f"{base}/baseline-small", recursive=True), small_bytes, rows)
            (small / "dir_000" / "file_00000.bin").write_bytes(os.urandom(16 << 10))
            measure("commit again, 1 small file changed", proxy, lambda: commit("small", small), 16 << 10, rows)
            measure(f"get {mib} MiB (4 files)", proxy,
                    lambda: dvx(["get", "big", "-o", str(tmp_path / f"out-{attempt}")], project, env), big_bytes, rows)
            measure(f"  baseline: SDK get of the same 4 files", proxy,
                    lambda: fs.get(f"{base}/baseline-big", str(tmp_path / f"sdk-out-{attempt}"), recursive=True),
                    big_bytes, rows)
            local = tmp_path / f"local-{attempt}"
            measure(f"fetch big (all packs) into a local store", proxy,
                    lambda: dvx(["fetch", "big", "--from", root, "--store", str(local)], project, env), big_bytes, rows)
    return rows


def report(name: str, rows: list, repeat: int) -> None:
    print(f"\n## {name}  (medians of {repeat}; HTTP requests as seen on the wire)\n")
    print(f"| workload | data | requests | PUT/POST | GET | HEAD | LIST | seconds | MiB/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    labels = list(dict.fromkeys(r[0] for r in rows))
    for label in labels:
        mine = [r for r in rows if r[0] == label]
        data = mine[0][1]
        seconds = median([r[3] for r in mine])
        kinds = mine[-1][2]
        total = sum(kinds.values())
        writes = kinds.get("PUT", 0) + kinds.get("POST", 0) + kinds.get("PATCH", 0)
        print(f"| {label} | {format_bytes(data)} | {total} | {writes} | {kinds.get('GET', 0)} | "
              f"{kinds.get('HEAD', 0)} | {kinds.get('LIST', 0)} | {seconds:.2f} | {data / seconds / 2**20:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated backends (s3,gcs,azure)")
    parser.add_argument("--mib", type=int, default=256, help="size of the large-file workload")
    parser.add_argument("--small-files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    names = args.only.split(",") if args.only else list(BACKENDS)
    from servers import stop_all

    try:
        for name in names:
            try:
                rows = run_backend(name, args.mib, args.small_files, args.repeat)
            except (ImportError, RuntimeError) as exc:
                print(f"\n## {name}: skipped ({exc})")
                continue
            report(name, rows, args.repeat)
    finally:
        stop_all()


if __name__ == "__main__":
    main()

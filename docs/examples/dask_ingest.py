"""Distributed ingest with Dask: workers add disjoint folders to one shared draft, one commit makes the
version, then N readers each fetch their part of it (docs/scale.md#distributed-ingest).

    pip install 'dvx[dask]'
    python docs/examples/dask_ingest.py                        # sample data, a temporary store
    python docs/examples/dask_ingest.py --store s3://bucket/data --name imagenet shard0/ shard1/ shard2/

Every worker talks to the store only: nothing is shared between them but the draft id and the store URL,
so the same code runs on a `dask.distributed` cluster of many machines (give each machine access to the
store). The example starts a LocalCluster of 2 worker processes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import dvx


def add_part(draft_id: str, store: str | None, folder: str, to: str) -> dict:
    """On a worker: store `folder` and add it to the shared draft under `to` (one part)."""
    with dvx.SharedDraft.open(draft_id, store=store) as draft:
        return draft.add(folder, to=to).to_dict()


def get_part(ref: str, store: str | None, dest: str, index: int, count: int) -> list[str]:
    """On a worker: fetch worker `index`'s share of `count` of the version's files into `dest`."""
    dvx.get(ref, dest, part=(index, count), store=store)
    return sorted(f.path for f in dvx.files(ref, part=(index, count), store=store))


def ingest(client, name: str, folders: dict[str, str], store: str | None = None, message: str = ""):
    """Create a shared draft of `name`, add each folder (dataset folder → local folder) on the cluster,
    then commit: returns the CommitResult (`.ref` is NAME@vN)."""
    draft = dvx.SharedDraft.create(name, message=message, store=store)
    targets = list(folders)
    futures = client.map(add_part, [draft.id] * len(targets), [store] * len(targets),
                         [folders[t] for t in targets], targets, pure=False)
    try:
        client.gather(futures)
    except Exception:
        draft.discard()  # a worker failed: nothing is committed, the uploaded data becomes garbage
        raise
    return draft.commit()


def parallel_get(client, ref: str, dest: str, count: int, store: str | None = None) -> list[list[str]]:
    """`count` readers each fetch their part of `ref` into `dest` (as `dvx get REF --part I/N`); returns
    each reader's paths. Together they cover every file exactly once."""
    futures = client.map(get_part, [ref] * count, [store] * count, [dest] * count, range(count), [count] * count,
                         pure=False)
    return client.gather(futures)


def sample_folders(root: Path, shards: int = 4) -> dict[str, str]:
    """A few folders of small files, as a stand-in for real shards."""
    folders = {}
    for shard in range(shards):
        folder = root / f"shard{shard}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(25):
            (folder / f"{i:03d}.bin").write_bytes(os.urandom(2048 + 97 * i))
        folders[f"train/shard{shard}"] = str(folder)
    return folders


def main(argv: list[str] | None = None) -> None:
    from dask.distributed import Client, LocalCluster

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", help="folders to add, each under its own name in the dataset")
    parser.add_argument("--store", help="store URL (default: a temporary one for the sample data, else dvx's)")
    parser.add_argument("--name", default="example/dask", help="dataset name")
    parser.add_argument("--readers", type=int, default=2, help="readers that fetch the version in parts")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        if args.folders:
            folders = {Path(f).name: f for f in args.folders}
            store = args.store
        else:
            folders = sample_folders(Path(scratch) / "data")
            store = args.store or str(Path(scratch) / "store")
        with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            result = ingest(client, args.name, folders, store, message=f"{len(folders)} folders on Dask")
            print(f"{result.ref}  {result.id}  {result.version.files} files")
            parts = parallel_get(client, result.ref, str(Path(scratch) / "out"), args.readers, store)
            print(f"{args.readers} readers fetched {', '.join(str(len(p)) for p in parts)} files")


if __name__ == "__main__":
    main()

"""Model registry benchmark: how much a partly changed checkpoint stores, and how long registering takes.

A base checkpoint (safetensors: N tensors of random F32 bytes) is registered, then three successors:

  tuned-10%   10 % of the tensors replaced (full fine-tune of a few blocks)
  head-only   only the last 2 tensors replaced (a new classification head / LoRA merge into the head)
  all-new     every tensor replaced (full retraining: nothing can be shared; the honest worst case)

For each, the store growth as a share of the checkpoint's size (file-level tools such as DVC or an
MLflow artifact store grow by 100 % every time), and the wall time of `dvx model register` (+ sync)
next to `cp` + `sync` of the same file, median of --repeat runs.

    python benchmarks/models.py                 # 512 MiB checkpoint (128 tensors of 4 MiB), 3 repeats
    python benchmarks/models.py --scale 8       # 64 MiB, quick
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import format_bytes, median, remove_tree, run_command, timed_commands, tree_size  # noqa: E402
from tools import find_executables  # noqa: E402


def write_safetensors(path: Path, tensors: dict[str, bytes]) -> None:
    header, offset = {}, 0
    for name, data in tensors.items():
        header[name] = {"dtype": "F32", "shape": [len(data) // 4], "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for data in tensors.values():
            f.write(data)


def successors(base: dict[str, bytes], seed: int) -> dict[str, dict[str, bytes]]:
    rng = random.Random(seed)
    names = list(base)
    size = len(base[names[0]])
    tuned = dict(base)
    for name in rng.sample(names, max(1, len(names) // 10)):
        tuned[name] = rng.randbytes(size)
    head = dict(base)
    for name in names[-2:]:
        head[name] = rng.randbytes(size)
    return {"tuned-10%": tuned, "head-only": head, "all-new": {n: rng.randbytes(size) for n in names}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1, help="divide the checkpoint size by N")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp")
    args = parser.parse_args()
    dvx = find_executables()["dvx"]
    if not dvx.available:
        sys.exit("dvx is not installed (pip install -e .)")
    tensors, tensor_size = 128, (4 << 20) // args.scale
    work = Path(tempfile.mkdtemp(prefix="dvx-models-", dir=args.workdir))
    try:
        rng = random.Random(1)
        base = {f"block{i:03d}.weight": rng.randbytes(tensor_size) for i in range(tensors)}
        variants = {"base": base, **successors(base, 2)}
        files = {}
        for label, content in variants.items():
            files[label] = work / "ckpt" / label / "model.safetensors"
            files[label].parent.mkdir(parents=True)
            write_safetensors(files[label], content)
        size = files["base"].stat().st_size
        growth: dict[str, list[int]] = {label: [] for label in variants}
        seconds: dict[str, list[float]] = {label: [] for label in variants}
        cp_seconds: list[float] = []
        for repeat in range(args.repeat):
            store = work / f"store{repeat}"
            env = dict(os.environ, DVX_STORE=str(store), DVX_STATE_DIR=str(work / f"state{repeat}"),
                       DVX_CACHE_DIR=str(work / f"cache{repeat}"))
            for label in variants:
                before = tree_size(store) if store.exists() else 0
                parent = [] if label == "base" else ["--parent", "v1"]
                measured = timed_commands([([dvx.path, "model", "register", "ckpt", str(files[label].parent),
                                             "-m", label, *parent], {"env": env})])
                seconds[label].append(measured.seconds)
                growth[label].append(tree_size(store) - before)
            target = work / f"copy{repeat}"
            cp_seconds.append(timed_commands([(["cp", "-r", str(files["base"].parent), str(target)], {})]).seconds)
            check = run_command([dvx.path, "model", "show", "ckpt@v2", "--json"], env=env)
            assert json.loads(check.stdout)["bytes"] == size
            for folder in (store, target, work / f"state{repeat}", work / f"cache{repeat}"):
                remove_tree(folder)
        cp = median(cp_seconds)
        print(f"checkpoint: {format_bytes(size)} safetensors, {tensors} tensors of {format_bytes(tensor_size)}; "
              f"median of {args.repeat}; cp -r + sync: {cp:.2f} s")
        print(f"{'version':12} {'changed':>9} {'store growth':>14} {'share':>8} {'register':>9} {'vs cp':>7}")
        for label in variants:
            changed = sum(1 for n in base if variants[label][n] != base[n]) if label != "base" else tensors
            grown = median(growth[label])
            took = median(seconds[label])
            print(f"{label:12} {changed:>4}/{tensors:<4} {format_bytes(grown):>14} {100 * grown / size:>7.1f}% "
                  f"{took:>8.2f}s {took / cp:>6.2f}x")
    finally:
        remove_tree(work)


if __name__ == "__main__":
    main()

"""The documentation's code runs: the reference reader in docs/storage-format.md reads a real store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import run_dvx, write_tree

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _reference_reader() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "storage-format.md").read_text(), re.S)
    return next(block for block in blocks if "def read_file" in block)


def test_reference_reader_reads_what_dvx_wrote(tmp_path: Path, isolated):
    """Standard library + xxhash + zstandard, as documented, give back every file byte for byte: large
    multi-chunk files (delta-encoded offsets across packs), small files, compressible and random data."""
    script = tmp_path / "read_dvx.py"
    script.write_text(_reference_reader())
    files = {
        "big/random.bin": os.urandom(3 << 20),
        "big/text.csv": "".join(f"{i},row {i},{i * 7 % 13}\n" for i in range(120_000)),
        "small/a.txt": "alpha\n",
        "small/b.txt": "beta\n",
        "empty": b"",
    }
    write_tree(tmp_path / "data", files)
    run_dvx("dataset", "create", "docs/example")
    run_dvx("dataset", "add", str(tmp_path / "data"))
    run_dvx("dataset", "commit", "-m", "one")
    # v2's chunks live in two packs: v1's and a new one for the added file.
    files["more/new.bin"] = os.urandom(1 << 20)
    write_tree(tmp_path / "data", {"more/new.bin": files["more/new.bin"]})
    run_dvx("dataset", "create", "docs/example")
    run_dvx("dataset", "sync", str(tmp_path / "data"))
    run_dvx("dataset", "commit", "-m", "two")
    assert len(list((isolated["store"] / "packs").glob("*/*.pack"))) == 2
    for path, content in files.items():
        expected = content.encode() if isinstance(content, str) else content
        proc = subprocess.run([sys.executable, str(script), str(isolated["store"]), "docs/example@v2", path],
                              capture_output=True, check=True)
        assert proc.stdout == expected, path

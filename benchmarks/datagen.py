"""Workload data: random binary files, many small files, a realistic CSV, and edits to them.

Random bytes come from os.urandom (incompressible, so no tool gains from compression).
The CSV is deterministic: block k of rows is always produced by random.Random(seed, k),
so appending rows later continues the same table.
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

WRITE_BLOCK = 16 << 20


def write_random_file(path: Path, size: int) -> None:
    """Write size bytes of os.urandom to path, in blocks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        remaining = size
        while remaining:
            block = min(WRITE_BLOCK, remaining)
            stream.write(os.urandom(block))
            remaining -= block


def write_random_files(folder: Path, count: int, size: int) -> list[Path]:
    """count files of size random bytes each: folder/file_0.bin ..."""
    paths = [folder / f"file_{index}.bin" for index in range(count)]
    for path in paths:
        write_random_file(path, size)
    return paths


def write_small_files(folder: Path, count: int, size: int, subfolders: int) -> None:
    """count files of size random bytes, spread evenly over subfolders folders."""
    for index in range(count):
        subfolder = folder / f"dir_{index % subfolders:03d}"
        if index < subfolders:
            subfolder.mkdir(parents=True, exist_ok=True)
        (subfolder / f"file_{index:05d}.bin").write_bytes(os.urandom(size))


@contextmanager
def overwritten_middle(path: Path, length: int) -> Iterator[None]:
    """Overwrite length bytes in the middle of path with new random bytes; put them back afterwards."""
    offset = max(0, path.stat().st_size // 2 - length // 2)
    with open(path, "r+b") as stream:
        stream.seek(offset)
        original = stream.read(length)
        stream.seek(offset)
        stream.write(os.urandom(len(original)))
    try:
        yield
    finally:
        with open(path, "r+b") as stream:
            stream.seek(offset)
            stream.write(original)


# --------------------------------------------------------------------------- CSV

CSV_HEADER = (
    "event_id,timestamp,user_id,session_id,event_type,country,device,"
    "amount,currency,latitude,longitude,score,status,comment\n"
)
ROWS_PER_BLOCK = 10_000
FIRST_TIMESTAMP = 1_704_067_200  # 2024-01-01T00:00:00Z

# Repeated entries act as weights.
EVENT_TYPES = ["page_view"] * 40 + ["click"] * 25 + ["search"] * 12 + ["add_to_cart"] * 8 + [
    "purchase"] * 5 + ["login"] * 5 + ["logout"] * 3 + ["signup"] * 2
COUNTRIES = ["US"] * 30 + ["DE"] * 10 + ["GB"] * 9 + ["FR"] * 8 + ["IN"] * 8 + ["BR"] * 6 + ["JP"] * 5 + [
    "CA", "ES", "IT", "NL", "SE", "PL", "MX", "AU", "KR", "CH", "BE", "AT", "NO", "DK", "FI", "IE", "PT", "CZ"]
DEVICES = ["mobile"] * 55 + ["desktop"] * 38 + ["tablet"] * 7
CURRENCIES = ["USD"] * 5 + ["EUR"] * 3 + ["GBP", "JPY"]
STATUSES = ["ok"] * 93 + ["error"] * 4 + ["timeout"] * 2 + ["retry"]
WORDS = (
    "the a an and or but not very quite really item order cart checkout page search result price "
    "shipping delivery late early fast slow broken great good bad okay fine love hate size color "
    "blue red green black white small large medium refund return exchange support agent ticket "
    "issue problem error payment card declined accepted coupon discount sale offer new old update "
    "app website mobile desktop login password reset account email address phone number review "
    "star rating product quality package box damaged missing wrong correct thanks please help "
    "again never always today tomorrow yesterday week month customer service experience would "
    "recommend buy bought again friend gift store stock available unavailable soon"
).split()


def _date_prefix(day: int, cache: dict[int, str]) -> str:
    if day not in cache:
        import time

        cache[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
    return cache[day]


def _csv_block(seed: int, block_index: int) -> list[str]:
    """Rows block_index*ROWS_PER_BLOCK ... as CSV lines; the same inputs always give the same rows."""
    rng = random.Random(f"{seed}:{block_index}")
    rnd, bits = rng.random, rng.getrandbits
    days: dict[int, str] = {}
    rows = []
    first_row = block_index * ROWS_PER_BLOCK
    for row_id in range(first_row, first_row + ROWS_PER_BLOCK):
        seconds = FIRST_TIMESTAMP + row_id * 3 + int(rnd() * 3)
        day, second_of_day = divmod(seconds, 86400)
        hour, rest = divmod(second_of_day, 3600)
        minute, second = divmod(rest, 60)
        event = EVENT_TYPES[int(rnd() * len(EVENT_TYPES))]
        if event == "purchase" or event == "add_to_cart":
            amount = f"{rnd() * rnd() * 400 + 1:.2f}"
            currency = CURRENCIES[int(rnd() * len(CURRENCIES))]
        else:
            amount = currency = ""
        if rnd() < 0.2:
            words = [WORDS[int(rnd() * len(WORDS))] for _ in range(3 + int(rnd() * 14))]
            comment = '"' + " ".join(words).capitalize() + '."'
        else:
            comment = ""
        rows.append(
            f"{row_id + 1},{_date_prefix(day, days)}{hour:02d}:{minute:02d}:{second:02d}.{int(rnd() * 1000):03d}Z,"
            f"{int(rnd() ** 3 * 500_000) + 1},{bits(40):010x},{event},"
            f"{COUNTRIES[int(rnd() * len(COUNTRIES))]},{DEVICES[int(rnd() * len(DEVICES))]},"
            f"{amount},{currency},{rnd() * 180 - 90:.5f},{rnd() * 360 - 180:.5f},"
            f"{(rnd() + rnd() + rnd() - 1.5) * 2:.3f},{STATUSES[int(rnd() * len(STATUSES))]},{comment}\n"
        )
    return rows


def _csv_rows(seed: int, first_row: int, count: int) -> Iterator[str]:
    """CSV lines first_row ... first_row+count-1, yielded in large text chunks."""
    row, end = first_row, first_row + count
    while row < end:
        block_index, offset = divmod(row, ROWS_PER_BLOCK)
        rows = _csv_block(seed, block_index)[offset: offset + (end - row)]
        yield "".join(rows)
        row += len(rows)


def write_csv(path: Path, target_bytes: int, seed: int) -> int:
    """Write a CSV of about target_bytes (whole blocks of rows); return the number of rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with open(path, "w", encoding="ascii", newline="") as stream:
        written = stream.write(CSV_HEADER)
        while written < target_bytes:
            written += stream.write("".join(_csv_block(seed, rows // ROWS_PER_BLOCK)))
            rows += ROWS_PER_BLOCK
    return rows


@contextmanager
def appended_csv_rows(path: Path, seed: int, existing_rows: int, count: int) -> Iterator[None]:
    """Append the next count rows of the same table; cut the file back afterwards."""
    original_size = path.stat().st_size
    with open(path, "a", encoding="ascii", newline="") as stream:
        for text in _csv_rows(seed, existing_rows, count):
            stream.write(text)
    try:
        yield
    finally:
        os.truncate(path, original_size)

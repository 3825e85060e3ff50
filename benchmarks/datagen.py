"""Workload data: random binary files, many small files, a realistic CSV, and edits to them.

Random bytes come from os.urandom (incompressible, so no tool gains from compression).
The CSV is deterministic: block k of rows is always produced by random.Random(seed, k),
so appending rows later continues the same table.
"""

from __future__ import annotations

import os
import random
import time
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
#
# An analytics event log: about 50 user sessions are open at any time and their events
# interleave. A session fixes user, place, device and app version; events pick pages and
# products from fixed catalogues. Values therefore repeat the way they do in real exports
# (zstd -3 shrinks it about 5x), while ids, timestamps and durations keep it from being trivial.

CSV_HEADER = (
    "event_id,timestamp,session_id,user_id,country,city,device,os,app_version,"
    "event_type,page,product_id,price,quantity,duration_ms,status,comment\n"
)
ROWS_PER_BLOCK = 10_000
FIRST_TIMESTAMP = 1_704_067_200  # 2024-01-01T00:00:00Z
OPEN_SESSIONS = 50

# Repeated entries act as weights.
PLACES = [("US", "New York")] * 6 + [("US", "Los Angeles")] * 4 + [("US", "Chicago")] * 3 + [
    ("US", "Austin"), ("US", "Seattle"), ("US", "Boston"), ("DE", "Berlin"), ("DE", "Berlin"), ("DE", "Munich"),
    ("DE", "Hamburg"), ("GB", "London"), ("GB", "London"), ("GB", "Manchester"), ("FR", "Paris"),
    ("FR", "Paris"), ("FR", "Lyon"), ("IN", "Bengaluru"), ("IN", "Mumbai"), ("IN", "Delhi"),
    ("BR", "Sao Paulo"), ("BR", "Rio de Janeiro"), ("JP", "Tokyo"), ("JP", "Osaka"), ("CA", "Toronto"),
    ("ES", "Madrid"), ("IT", "Milan"), ("NL", "Amsterdam"), ("SE", "Stockholm"), ("PL", "Warsaw"),
    ("MX", "Mexico City"), ("AU", "Sydney"), ("KR", "Seoul")]
DEVICES = [("mobile", "Android")] * 30 + [("mobile", "iOS")] * 25 + [("desktop", "Windows")] * 22 + [
    ("desktop", "macOS")] * 12 + [("desktop", "Linux")] * 3 + [("tablet", "iPadOS")] * 5 + [("tablet", "Android")] * 3
APP_VERSIONS = ["5.2.1"] * 10 + ["5.2.0"] * 6 + ["5.1.4"] * 3 + ["5.0.9", "4.9.12"]
EVENT_TYPES = ["page_view"] * 40 + ["click"] * 25 + ["search"] * 12 + ["add_to_cart"] * 8 + [
    "purchase"] * 4 + ["remove_from_cart"] * 3 + ["login"] * 4 + ["logout"] * 2 + ["signup"] * 2
PRODUCT_EVENTS = {"click", "add_to_cart", "purchase", "remove_from_cart"}
SECTIONS = ["home", "search", "cart", "checkout", "account", "help", "deals", "new", "orders", "wishlist"]
CATEGORIES = ["shoes", "shirts", "jackets", "bags", "watches", "phones", "laptops", "headphones", "toys",
              "books", "kitchen", "garden", "beauty", "sports", "games", "music", "office", "pets"]
STATUSES = ["ok"] * 95 + ["error"] * 3 + ["timeout", "retry"]
WORDS = (
    "the a and or but not very quite really item order cart checkout page search result price "
    "shipping delivery late early fast slow broken great good bad okay fine love size color "
    "blue red green black white small large medium refund return exchange support ticket "
    "issue problem error payment card declined coupon discount sale offer new old update "
    "app website login password reset account email address review star rating product "
    "quality package box damaged missing wrong thanks please help again never always "
    "today week customer service experience would recommend gift store stock available soon"
).split()


def _catalogue(seed: int) -> list[tuple[str, str]]:
    """5 000 products: (product_id, price), the same for every block."""
    rng = random.Random(f"{seed}:catalogue")
    return [(f"P{index:05d}", f"{rng.choice((4.99, 9.99, 19.99, 24.99, 49.99, 99.0, 149.0)) * rng.choice((1, 1, 2, 3)):.2f}")
            for index in range(5000)]


def _pages(seed: int) -> list[str]:
    rng = random.Random(f"{seed}:pages")
    pages = [f"/{section}" for section in SECTIONS] * 20
    pages += [f"/c/{category}" for category in CATEGORIES] * 5
    pages += [f"/c/{rng.choice(CATEGORIES)}/p/{rng.randrange(5000):05d}" for _ in range(400)]
    return pages


_CATALOGUES: dict[int, tuple[list[tuple[str, str]], list[str]]] = {}


def _new_session(rng: random.Random) -> list:
    """[events left, session id, user id, country, city, device, os, app version]"""
    rnd = rng.random
    country, city = PLACES[int(rnd() * len(PLACES))]
    device, system = DEVICES[int(rnd() * len(DEVICES))]
    return [1 + int(rng.expovariate(1 / 8)), f"{rng.getrandbits(48):012x}", int(rnd() ** 3 * 200_000) + 1,
            country, f'"{city}"' if " " in city else city, device, system,
            APP_VERSIONS[int(rnd() * len(APP_VERSIONS))]]


def _date_prefix(day: int, cache: dict[int, str]) -> str:
    if day not in cache:
        cache[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
    return cache[day]


def _csv_block(seed: int, block_index: int) -> list[str]:
    """Rows block_index*ROWS_PER_BLOCK ... as CSV lines; the same inputs always give the same rows."""
    if seed not in _CATALOGUES:
        _CATALOGUES[seed] = (_catalogue(seed), _pages(seed))
    products, pages = _CATALOGUES[seed]
    rng = random.Random(f"{seed}:{block_index}")
    rnd = rng.random
    sessions = [_new_session(rng) for _ in range(OPEN_SESSIONS)]
    days: dict[int, str] = {}
    rows = []
    first_row = block_index * ROWS_PER_BLOCK
    for row_id in range(first_row, first_row + ROWS_PER_BLOCK):
        slot = int(rnd() * OPEN_SESSIONS)
        session = sessions[slot]
        session[0] -= 1
        if session[0] <= 0:
            sessions[slot] = _new_session(rng)
        seconds = FIRST_TIMESTAMP + row_id * 3 + int(rnd() * 3)
        day, second_of_day = divmod(seconds, 86400)
        hour, rest = divmod(second_of_day, 3600)
        minute, second = divmod(rest, 60)
        event = EVENT_TYPES[int(rnd() * len(EVENT_TYPES))]
        if event in PRODUCT_EVENTS:
            product, price = products[int(rnd() ** 2 * len(products))]
            quantity = "1" if event == "click" else str(1 + int(rnd() ** 4 * 4))
        else:
            product = price = quantity = ""
        comment = ""
        if rnd() < 0.03:
            words = [WORDS[int(rnd() * len(WORDS))] for _ in range(3 + int(rnd() * 12))]
            comment = '"' + " ".join(words).capitalize() + '."'
        rows.append(
            f"{row_id + 1},{_date_prefix(day, days)}{hour:02d}:{minute:02d}:{second:02d}.{int(rnd() * 1000):03d}Z,"
            f"{session[1]},{session[2]},{session[3]},{session[4]},{session[5]},{session[6]},{session[7]},"
            f"{event},{pages[int(rnd() * len(pages))]},{product},{price},{quantity},"
            f"{int(rng.lognormvariate(5, 1))},{STATUSES[int(rnd() * len(STATUSES))]},{comment}\n"
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

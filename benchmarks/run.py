#!/usr/bin/env python3
"""dvx benchmarks: dvx against `cp -r`, restic and DVC, measured in the same run.

    python benchmarks/run.py                 # full run, 3 repeats, medians
    python benchmarks/run.py --quick         # sizes / 16, smoke run
    python benchmarks/run.py --only A,B --repeat 5 --json results.json

See benchmarks/README.md for what each workload (A ... I) measures.
Progress goes to stderr; the report goes to stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, ContextManager

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datagen import (  # noqa: E402
    appended_csv_rows, overwritten_middle, write_csv, write_random_file, write_random_files, write_small_files)
from harness import format_bytes, log, median, remove_tree, tree_digest, tree_size  # noqa: E402
from tools import TOOL_CLASSES, Executable, Tool, byte_compile_dvx, find_executables  # noqa: E402

MiB, GiB = 1 << 20, 1 << 30
TOOL_ORDER = ("dataset", "zstd -3", "cp", "restic", "dvc", "dvx", "dvx (process tree)")
CSV_SEED = 20240101


# --------------------------------------------------------------------------- sizes & workloads


@dataclass
class Sizes:
    """Data sizes of every workload; --quick divides them by 16."""

    large_file: int = 256 * MiB
    large_count: int = 4
    overwrite: int = 1 * MiB
    csv_bytes: int = 200_000_000
    csv_append_fraction: float = 0.01
    small_count: int = 20_000
    small_size: int = 4096
    small_folders: int = 100
    huge_file: int = 4 * GiB

    @classmethod
    def scaled_down(cls, factor: int) -> "Sizes":
        full = cls()
        return cls(
            large_file=full.large_file // factor,
            overwrite=full.overwrite // factor,
            csv_bytes=full.csv_bytes // factor,
            small_count=full.small_count // factor,
            small_folders=max(1, round(full.small_folders / factor)),
            huge_file=full.huge_file // factor,
        )


@dataclass(frozen=True)
class Workload:
    """One line of the benchmark table: what is measured, in which unit, for which tools."""

    key: str
    title: str
    unit: str  # seconds | percent | bytes
    tools: tuple[str, ...]
    ratio_to: str | None = None  # label whose median is the denominator of the ratio column


def define_workloads(sizes: Sizes) -> dict[str, Workload]:
    large = f"{format_bytes(sizes.large_file * sizes.large_count)} in {sizes.large_count} random files"
    small = f"{sizes.small_count} files of {format_bytes(sizes.small_size)} in {sizes.small_folders} folders"
    csv = f"{sizes.csv_bytes / 1e6:.0f} MB CSV"
    every = ("cp", "restic", "dvc", "dvx")
    workloads = [
        Workload("A", f"save {large} (time)", "seconds", every, "cp"),
        Workload("B", f"restore A's data into an empty folder, empty cache (time)", "seconds", every, "cp"),
        Workload("C", f"overwrite {format_bytes(sizes.overwrite)} mid-file, save again (store growth / dataset)",
                 "percent", ("restic", "dvc", "dvx")),
        Workload("D", f"first save of a {csv} (stored bytes)", "bytes", ("dataset", "zstd -3", "restic", "dvx"),
                 "restic"),
        Workload("E", f"append {sizes.csv_append_fraction:.0%} rows to D's CSV, save again (store growth / dataset)",
                 "percent", ("restic", "dvx")),
        Workload("F", f"save {small} (time)", "seconds", ("cp", "restic", "dvx"), "cp"),
        Workload("G", "restore F's files into an empty folder, empty cache (time)", "seconds",
                 ("cp", "restic", "dvx"), "cp"),
        Workload("H", "save F's files again, nothing changed (time)", "seconds", ("restic", "dvx")),
        Workload("I", f"save one {format_bytes(sizes.huge_file)} file (peak RSS)", "bytes",
                 ("dvx", "dvx (process tree)")),
    ]
    return {workload.key: workload for workload in workloads}


@dataclass(frozen=True)
class Target:
    """A pass/fail goal for dvx, judged on medians."""

    workload: str
    text: str
    needs: tuple[str, ...]
    passes: Callable[[dict[str, float]], bool]


TARGETS = [
    Target("A", "<= 1.5x cp", ("dvx", "cp"), lambda m: m["dvx"] <= 1.5 * m["cp"]),
    Target("A", "< restic", ("dvx", "restic"), lambda m: m["dvx"] < m["restic"]),
    Target("B", "<= 2x cp", ("dvx", "cp"), lambda m: m["dvx"] <= 2 * m["cp"]),
    Target("B", "< restic", ("dvx", "restic"), lambda m: m["dvx"] < m["restic"]),
    Target("C", "<= 0.3 %", ("dvx",), lambda m: m["dvx"] <= 0.3),
    Target("D", "<= 1.1x restic", ("dvx", "restic"), lambda m: m["dvx"] <= 1.1 * m["restic"]),
    Target("E", "<= 0.25 %", ("dvx",), lambda m: m["dvx"] <= 0.25),
    Target("F", "< restic", ("dvx", "restic"), lambda m: m["dvx"] < m["restic"]),
    Target("G", "< restic", ("dvx", "restic"), lambda m: m["dvx"] < m["restic"]),
    Target("H", "< 1 s", ("dvx",), lambda m: m["dvx"] < 1.0),
    Target("I", "<= 300 MiB", ("dvx",),
           lambda m: max(m["dvx"], m.get("dvx (process tree)", 0)) <= 300 * MiB),
]


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """All samples of one tool (label) in one workload."""

    workload: str
    label: str
    samples: list[float] = field(default_factory=list)
    details: list[float] = field(default_factory=list)  # secondary number, e.g. bytes behind a percentage
    detail_kind: str = ""  # rss | bytes | seconds
    errors: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return median(self.samples) if self.samples else None


class Results:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}
        self.skipped: dict[str, str] = {}  # tool -> reason

    def row(self, workload: str, label: str) -> Row:
        return self.rows.setdefault((workload, label), Row(workload, label))

    def add(self, workload: str, label: str, value: float, detail: float | None = None, detail_kind: str = "") -> None:
        row = self.row(workload, label)
        row.samples.append(value)
        if detail is not None:
            row.details.append(detail)
            row.detail_kind = detail_kind

    def medians(self, workload: str) -> dict[str, float]:
        return {label: row.median for (key, label), row in self.rows.items()
                if key == workload and row.median is not None}


# --------------------------------------------------------------------------- scenarios


def zstd_size(path: Path) -> int | None:
    """Size of `zstd -3` of one file: what plain whole-file compression achieves (None without zstd)."""
    zstd = shutil.which("zstd")
    if zstd is None:
        return None
    with subprocess.Popen([zstd, "-q", "-3", "-T0", "-c", str(path)], stdout=subprocess.PIPE) as process:
        size = sum(len(block) for block in iter(lambda: process.stdout.read(1 << 20), b""))
    return size if process.returncode == 0 else None


@dataclass
class Source:
    """The workload's data folder, with its size and content fingerprint."""

    path: Path
    size: int
    digest: str


@dataclass
class Sample:
    """One number measured by a step, for one row (label) of the step's workload."""

    label: str
    value: float
    detail: float | None = None
    detail_kind: str = ""


@dataclass
class Step:
    """One measured action of a scenario: `run(tool)` acts and returns what it measured."""

    workload: str
    run: Callable[[Tool], list[Sample]]
    prerequisite: bool = False  # later steps need it, so it runs even when its workload is not selected


class ContentMismatch(RuntimeError):
    """A restore produced data that differs from what was saved."""


class Benchmark:
    """Runs the selected workloads, scenario by scenario, and collects the samples in .results."""

    def __init__(self, args: argparse.Namespace, executables: dict[str, Executable], workdir: Path):
        self.repeat = args.repeat
        self.sizes = Sizes.scaled_down(args.scale) if args.scale > 1 else Sizes()
        self.workloads = define_workloads(self.sizes)
        self.selected = set(args.only) if args.only else set(self.workloads)
        self.executables = executables
        self.allowed_tools = set(args.tools) if args.tools else set(TOOL_CLASSES)
        self.workdir = workdir
        self.results = Results()
        self.source: Source | None = None  # data of the scenario being run
        for name, executable in executables.items():
            if not executable.available:
                self.results.skipped[name] = f"{name} not installed"
            elif name not in self.allowed_tools:
                self.results.skipped[name] = "excluded by --tools"

    # ---- shared machinery

    def usable(self, tool: str) -> bool:
        return tool in self.allowed_tools and self.executables[tool].available

    def run_scenario(self, name: str, make_source: Callable[[Path], Source], steps: list[Step],
                     tool_options: dict | None = None) -> None:
        """Make the data once, then for every repeat and tool: fresh private folder, run steps, delete it."""
        wanted = [step.workload for step in steps if step.workload in self.selected]
        if not wanted:
            return
        tools = [tool for tool in TOOL_CLASSES
                 if self.usable(tool) and any(tool in self.workloads[key].tools for key in wanted)]
        if not tools:
            log(f"[{name}] no tool to run, skipped")
            return
        scenario_dir = self.workdir / name
        try:
            log(f"[{name}] generating data ...")
            self.source = make_source(scenario_dir / "source")
            for repeat in range(self.repeat):
                shift = repeat % len(tools)
                for tool_name in tools[shift:] + tools[:shift]:  # rotate the order to spread drift
                    self._run_tool(name, tool_name, repeat, steps, wanted, scenario_dir, tool_options or {})
        finally:
            remove_tree(scenario_dir)

    def _run_tool(self, scenario: str, tool_name: str, repeat: int, steps: list[Step], wanted: list[str],
                  scenario_dir: Path, tool_options: dict) -> None:
        root = scenario_dir / f"{tool_name}-{repeat}"
        own_workloads = [key for key in wanted if tool_name in self.workloads[key].tools]
        step = steps[0]
        try:
            tool = TOOL_CLASSES[tool_name](self.executables[tool_name].path, root,
                                           **tool_options.get(tool_name, {}))
            for step in steps:
                records = step.workload in own_workloads
                if records or step.prerequisite:
                    log(f"[{scenario}] repeat {repeat + 1}/{self.repeat} {tool_name}: {step.workload}")
                    samples = step.run(tool)
                    for sample in samples if records else ():
                        self.results.add(step.workload, sample.label, sample.value, sample.detail, sample.detail_kind)
        except Exception as error:  # noqa: BLE001 - one tool failing must not stop the run
            message = f"repeat {repeat + 1}, in {step.workload}: {type(error).__name__}: {error}"
            log(f"[{scenario}] {tool_name} failed: {message}")
            # Charge the error to the failing workload, or to the first selected one it blocked.
            workload = step.workload if step.workload in own_workloads else own_workloads[0]
            self.results.row(workload, tool_name).errors.append(message)
        finally:
            remove_tree(root)

    # ---- step builders

    def step_save_time(self, workload: str, prerequisite: bool = False) -> Step:
        def run(tool: Tool) -> list[Sample]:
            measurement = tool.save_first(self.source.path)
            return [Sample(tool.name, measurement.seconds, measurement.max_rss_bytes, "rss")]
        return Step(workload, run, prerequisite)

    def step_restore_time(self, workload: str) -> Step:
        def run(tool: Tool) -> list[Sample]:
            target = tool.root / "restored"
            measurement, data = tool.restore(target)
            try:
                if tree_digest(data) != self.source.digest:
                    raise ContentMismatch(f"restored data in {data} differs from the source")
            finally:
                remove_tree(target)
            return [Sample(tool.name, measurement.seconds, measurement.max_rss_bytes, "rss")]
        return Step(workload, run)

    def step_resave_time(self, workload: str) -> Step:
        def run(tool: Tool) -> list[Sample]:
            measurement = tool.save_again(self.source.path)
            return [Sample(tool.name, measurement.seconds, measurement.max_rss_bytes, "rss")]
        return Step(workload, run)

    def step_growth_after(self, workload: str, change: Callable[[], ContextManager]) -> Step:
        def run(tool: Tool) -> list[Sample]:
            before = tool.stored_bytes()
            with change():
                changed_size = tree_size(self.source.path)
                tool.save_again(self.source.path)
            growth = tool.stored_bytes() - before
            return [Sample(tool.name, 100 * growth / changed_size, growth, "bytes")]
        return Step(workload, run)

    # ---- scenarios

    def scenario_large_files(self) -> None:
        """A, B, C: a few big incompressible files."""
        sizes = self.sizes

        def make(folder: Path) -> Source:
            write_random_files(folder, sizes.large_count, sizes.large_file)
            return Source(folder, tree_size(folder), tree_digest(folder))

        def overwrite():
            return overwritten_middle(self.source.path / "file_0.bin", sizes.overwrite)

        self.run_scenario("large-files", make, [
            self.step_save_time("A", prerequisite=True),
            self.step_restore_time("B"),
            self.step_growth_after("C", overwrite),
        ])

    def scenario_csv(self) -> None:
        """D, E: a compressible, realistic CSV, then 1 % more rows."""
        sizes = self.sizes
        row_count = {}

        def make(folder: Path) -> Source:
            row_count["rows"] = write_csv(folder / "events.csv", sizes.csv_bytes, CSV_SEED)
            size = tree_size(folder)
            self.results.add("D", "dataset", size)
            compressed = zstd_size(folder / "events.csv")
            if compressed is None:
                self.results.skipped["zstd"] = "zstd not installed (reference only)"
            else:
                self.results.add("D", "zstd -3", compressed)
            return Source(folder, size, "")

        def stored_size(tool: Tool) -> list[Sample]:
            measurement = tool.save_first(self.source.path)
            return [Sample(tool.name, tool.stored_bytes(), measurement.seconds, "seconds")]

        def append():
            rows = row_count["rows"]
            extra = max(1, round(rows * sizes.csv_append_fraction))
            return appended_csv_rows(self.source.path / "events.csv", CSV_SEED, rows, extra)

        self.run_scenario("csv", make, [
            Step("D", stored_size, prerequisite=True),
            self.step_growth_after("E", append),
        ])

    def scenario_small_files(self) -> None:
        """F, G, H: many small files."""
        sizes = self.sizes

        def make(folder: Path) -> Source:
            write_small_files(folder, sizes.small_count, sizes.small_size, sizes.small_folders)
            return Source(folder, tree_size(folder), tree_digest(folder))

        self.run_scenario("small-files", make, [
            self.step_save_time("F", prerequisite=True),
            self.step_restore_time("G"),
            self.step_resave_time("H"),
        ])

    def scenario_huge_file(self) -> None:
        """I: one file much larger than the memory target."""
        sizes = self.sizes

        def make(folder: Path) -> Source:
            write_random_file(folder / "huge.bin", sizes.huge_file)
            return Source(folder, tree_size(folder), "")

        def peak_memory(tool: Tool) -> list[Sample]:
            measurement = tool.save_first(self.source.path)
            return [Sample("dvx", measurement.max_rss_bytes, measurement.seconds, "seconds"),
                    Sample("dvx (process tree)", measurement.tree_rss_bytes)]

        self.run_scenario("huge-file", make, [Step("I", peak_memory, prerequisite=True)],
                          tool_options={"dvx": {"sample_tree_rss": True}})

    def run_all(self) -> None:
        self.scenario_large_files()
        self.scenario_csv()
        self.scenario_small_files()
        self.scenario_huge_file()


# --------------------------------------------------------------------------- report


def format_value(unit: str, value: float | None) -> str:
    if value is None:
        return "-"
    if unit == "seconds":
        return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"
    if unit == "percent":
        return f"{value:.3f} %"
    return format_bytes(value)


def format_detail(kind: str, values: list[float]) -> str:
    if not values:
        return ""
    value = median(values)
    if kind == "rss":
        return f"max RSS {format_bytes(value)}"
    if kind == "seconds":
        return f"in {value:.2f} s"
    return format_bytes(value)


def judge(results: Results, target: Target) -> str:
    medians = results.medians(target.workload)
    missing = [label for label in target.needs if label not in medians]
    if missing:
        return f"n/a (no {', '.join(missing)})"
    return "PASS" if target.passes(medians) else "FAIL"


def build_table(bench: Benchmark) -> list[list[str]]:
    results = bench.results
    header = ["workload", "tool", "median", "n", "ratio", "detail", "target", "result"]
    table = [header]
    for key, workload in bench.workloads.items():
        if key not in bench.selected:
            continue
        table.append([f"{key}. {workload.title}"] + [""] * (len(header) - 1))
        medians = results.medians(key)
        reference = medians.get(workload.ratio_to) if workload.ratio_to else None
        targets = [target for target in TARGETS if target.workload == key]
        labels = [label for label in TOOL_ORDER if label in workload.tools]
        for label in labels:
            row = results.rows.get((key, label))
            tool = label.split()[0]
            if row is None or (not row.samples and not row.errors):
                failed = any(row.errors for (_, other), row in results.rows.items() if other == tool)
                reason = results.skipped.get(tool, "not run (see errors)" if failed else "not run")
                table.append(["", label, "skipped" if tool in results.skipped else "not run", "", "", reason, "", ""])
                continue
            value = "ERROR" if not row.samples else format_value(workload.unit, row.median)
            ratio = ""
            if reference and row.median is not None and label != "dataset":
                ratio = f"{row.median / reference:.2f}x {workload.ratio_to}"
            detail = format_detail(row.detail_kind, row.details)
            if row.errors:
                detail = (detail + "; " if detail else "") + f"{len(row.errors)} error(s)"
            line = ["", label, value, str(len(row.samples)), ratio, detail, "", ""]
            if label == "dvx" and targets:
                for index, target in enumerate(targets):
                    cells = line if index == 0 else [""] * len(header)
                    cells[6], cells[7] = target.text, judge(results, target)
                    table.append(cells)
            else:
                table.append(line)
    return table


def render(table: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in table if row[1] or row[0] == "workload")
              for column in range(len(table[0]))]
    lines = []
    for row in table:
        if row[0] and not row[1]:  # a workload's title line spans the table
            lines.append(row[0])
        else:
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return "\n".join(lines)


def describe(executable: Executable) -> str:
    if not executable.available:
        return f"{executable.name}: not installed"
    if executable.version in ("", "unknown"):
        return f"{executable.name}: {executable.path} (version unknown)"
    return f"{executable.name}: {executable.version}"


def report(bench: Benchmark, args: argparse.Namespace) -> str:
    lines = [
        f"dvx benchmarks  {datetime.datetime.now():%Y-%m-%d %H:%M}  repeats={bench.repeat}"
        f"  scale=1/{args.scale}" + ("  (--quick: smoke run, targets are set for full sizes)" if args.scale > 1 else ""),
        "Times: wall clock of whole processes, median of the repeats; every timed write ends with `sync`.",
        "Inputs are warm in the page cache for all tools alike (the page cache is not dropped).",
        "Untimed setup: restic init, git+dvc init, DVC's private copy of the data, git clone before dvc pull.",
        "Tools: " + "; ".join(describe(executable) for executable in bench.executables.values()),
    ]
    for tool, reason in bench.results.skipped.items():
        lines.append(f"SKIPPED {tool}: {reason}")
    lines += ["", render(build_table(bench))]
    errors = [(row.workload, row.label, error) for row in bench.results.rows.values() for error in row.errors]
    if errors:
        lines += ["", "Errors:"] + [f"  {workload} {label}: {error}" for workload, label, error in errors]
    checks = [judge(bench.results, target) for target in TARGETS if target.workload in bench.selected]
    lines += ["", f"dvx targets: {checks.count('PASS')} PASS, {checks.count('FAIL')} FAIL, "
                  f"{len(checks) - checks.count('PASS') - checks.count('FAIL')} not judged"]
    return "\n".join(lines)


def write_json(bench: Benchmark, args: argparse.Namespace, path: Path) -> None:
    document = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "options": {"repeat": bench.repeat, "scale": args.scale, "only": sorted(bench.selected)},
        "sizes": asdict(bench.sizes),
        "tools": {name: asdict(executable) for name, executable in bench.executables.items()},
        "skipped": bench.results.skipped,
        "workloads": {key: asdict(workload) for key, workload in bench.workloads.items() if key in bench.selected},
        "rows": [{**asdict(row), "median": row.median} for row in bench.results.rows.values()],
        "targets": [{"workload": target.workload, "target": target.text, "result": judge(bench.results, target)}
                    for target in TARGETS if target.workload in bench.selected],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="repeats per measurement (median is reported)")
    parser.add_argument("--only", type=lambda text: [key.strip().upper() for key in text.split(",") if key.strip()],
                        help="comma-separated workloads to run, e.g. A or F,G,H")
    parser.add_argument("--quick", action="store_const", const=16, dest="scale", default=1,
                        help="divide all sizes by 16 for a smoke run")
    parser.add_argument("--scale", type=int, default=1, help="divide all sizes by this factor")
    parser.add_argument("--tools", type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
                        help=f"comma-separated subset of {','.join(TOOL_CLASSES)} (default: all installed)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the temporary data goes (a fresh subfolder is made and removed)")
    parser.add_argument("--json", type=Path, help="also write all samples and verdicts to this file")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.scale < 1:
        parser.error("--repeat and --scale must be >= 1")
    unknown = set(args.only or ()) - set("ABCDEFGHI")
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))} (choose from A-I)")
    unknown = set(args.tools or ()) - set(TOOL_CLASSES)
    if unknown:
        parser.error(f"unknown tool(s): {', '.join(sorted(unknown))} (choose from {', '.join(TOOL_CLASSES)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="dvx-bench-", dir=args.workdir))
    free = shutil.disk_usage(workdir).free
    log(f"workdir {workdir} ({format_bytes(free)} free)")
    try:
        executables = find_executables()
        byte_compile_dvx(executables["dvx"])
        bench = Benchmark(args, executables, workdir)
        needed = bench.sizes.huge_file * 2.5 if "I" in bench.selected else 6 * bench.sizes.large_file * 4
        if free < needed:
            log(f"warning: only {format_bytes(free)} free in {workdir}; about {format_bytes(needed)} may be needed")
        bench.run_all()
    finally:
        remove_tree(workdir)
    print(report(bench, args))
    if args.json:
        write_json(bench, args, args.json)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

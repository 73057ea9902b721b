"""What every benchmark shares: repeated runs, medians, JSON results, tables.

Each benchmark module has `async def run(config) -> list[Result]`. Figures are
medians of several runs, reported with the practical limit measured in the
same run, so ratios compare like with like on any machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(
    os.environ.get("COOKBOOK_BENCH_RESULTS")
    or Path(__file__).resolve().parent / "results"
)


@dataclass
class Config:
    quick: bool
    repeats: int
    postgres_url: str | None
    workdir: Path

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full


@dataclass
class Result:
    benchmark: str
    backend: str
    case: str
    metric: str  # what `value` measures, e.g. "rows/s" or "ms"
    value: float  # the median
    runs: list[float]
    params: dict[str, Any] = field(default_factory=dict)
    peak_mb: float | None = None
    ratio: float | None = None  # to the practical limit, when there is one


async def measure(
    repeats: int, once: Callable[[], Awaitable[float]]
) -> tuple[float, list[float]]:
    """Median and all runs of an async measurement returning one figure."""
    runs = [await once() for _ in range(repeats)]
    return statistics.median(runs), runs


class Timer:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


@contextmanager
def traced_peak() -> Iterator[list[float]]:
    """Peak Python memory (MB) allocated inside the block, via tracemalloc."""
    box: list[float] = []
    tracemalloc.start()
    try:
        yield box
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        box.append(peak / 2**20)


BASE_PACKAGES = ("sqlalchemy", "aiosqlite", "asyncpg", "fastapi", "uvicorn")


def machine(packages: Sequence[str] = ()) -> dict[str, Any]:
    versions = {}
    for name in (*BASE_PACKAGES, *packages):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import sqlite3

    versions["sqlite"] = sqlite3.sqlite_version
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": versions,
    }


def write(
    name: str, results: list[Result], config: Config, packages: Sequence[str] = ()
) -> Path:
    RESULTS.mkdir(exist_ok=True)
    suffix = "-quick" if config.quick else ""
    path = RESULTS / f"{name}{suffix}.json"
    document = {
        "benchmark": name,
        "quick": config.quick,
        "repeats": config.repeats,
        "machine": machine(packages),
        "results": [asdict(r) for r in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def print_table(results: list[Result]) -> None:
    header = f"{'backend':<10} {'case':<40} {'median':>14} {'ratio':>7} {'peak MB':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = f"{r.ratio:.3f}" if r.ratio is not None else ""
        peak = f"{r.peak_mb:.1f}" if r.peak_mb is not None else ""
        value = f"{r.value:,.1f} {r.metric}"
        print(f"{r.backend:<10} {r.case:<40} {value:>14} {ratio:>7} {peak:>8}")


def main(
    name: str,
    run: Callable[[Config], Awaitable[list[Result]]],
    *,
    repeats: int = 5,
    packages: Sequence[str] = (),
) -> None:
    """Run one benchmark: `repeats` runs (1 with --quick); `packages` are
    recorded with their versions beside the base ones."""
    parser = argparse.ArgumentParser(description=f"benchmark: {name}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 run")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        config = Config(
            quick=args.quick,
            repeats=args.repeats or (1 if args.quick else repeats),
            postgres_url=os.environ.get("COOKBOOK_BENCH_POSTGRES_URL") or None,
            workdir=args.workdir or Path(tmp),
        )
        results = asyncio.run(run(config))
    path = write(name, results, config, packages)
    print_table(results)
    print(f"wrote {path}")
    sys.stdout.flush()

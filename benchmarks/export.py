"""Export: peak memory and speed of the whole-file export versus the stream.

The page's own code (`snippets.background`): `export_csv_naive` loads every
row and builds the file in memory; `export_lines` streams it from
`stream_scalars` with `yield_per=1000`. Peak memory is the Python heap's peak
during one export (tracemalloc, measured after the timed runs); the limit is
the memory of 1,000 rows, the batch the stream holds at once.

    python -m benchmarks.export [--quick]
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks.common import Config, Result, Timer, main, measure, traced_peak
from snippets.background import (
    Base,
    create_engine,
    create_session_factory,
    export_csv_naive,
    export_lines,
    seed_items,
)


async def fresh_engine(config: Config, backend: str) -> AsyncEngine:
    if backend == "sqlite":
        path = config.workdir / "export.db"
        path.unlink(missing_ok=True)
        url = f"sqlite+aiosqlite:///{path}"
    else:
        assert config.postgres_url is not None
        url = config.postgres_url
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    return engine


async def export_speed(
    config: Config, export: Callable[[], Awaitable[int]], rows: int
) -> tuple[float, list[float], float]:
    """Median rows/s, all runs, and the peak MB of one export."""

    async def once() -> float:
        timer = Timer()
        await export()
        return rows / timer.seconds

    value, runs = await measure(config.repeats, once)
    with traced_peak() as peak:  # after the timed runs: tracing is slow
        await export()
    return value, runs, peak[0]


async def one_size(config: Config, backend: str, rows: int) -> list[Result]:
    engine = await fresh_engine(config, backend)
    sessions = create_session_factory(engine)
    await seed_items(sessions, rows)

    async def whole_file() -> int:
        async with sessions() as session:
            return len(await export_csv_naive(session))

    async def stream() -> int:
        size = 0
        async for line in export_lines(sessions, "csv", None):
            size += len(line)
        return size

    assert await whole_file() == await stream()  # the same file
    results = []
    for case, export in (("whole file", whole_file), ("stream", stream)):
        value, runs, peak_mb = await export_speed(config, export, rows)
        results.append(
            Result(
                "export",
                backend,
                f"{case}, {rows:,} rows",
                "rows/s",
                value,
                runs,
                {"case": case, "rows": rows},
                peak_mb=peak_mb,
            )
        )
    await engine.dispose()
    return results


async def run(config: Config) -> list[Result]:
    sizes = [1_000, 2_000] if config.quick else [10_000, 100_000]
    backends = ["sqlite"] + (["postgresql"] if config.postgres_url else [])
    results: list[Result] = []
    for backend in backends:
        for rows in sizes:
            results += await one_size(config, backend, rows)
    return results


if __name__ == "__main__":
    main("export", run)

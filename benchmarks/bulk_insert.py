"""Bulk insert: rows/s per method, beside the practical limit of each backend.

Limit: raw sqlite3 executemany in one transaction (SQLite), asyncpg
copy_records_to_table (PostgreSQL). Memory: the fast path fed in chunks from a
generator stays flat as the row count grows. Import: the recipe's
import_products (ON CONFLICT DO NOTHING RETURNING) against the savepoint per
row it replaces, on a feed with one conflict: time and statements sent.

    python -m benchmarks.bulk_insert [--quick]
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import String, event, insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from benchmarks.common import Config, Result, Timer, main, measure, traced_peak
from snippets import bulk as recipe

STATUSES = ("draft", "active", "archived", "active")
CHUNK = 10_000  # rows per executemany/COPY call: memory stays flat beyond it
INSERT_SQL_SQLITE = "INSERT INTO bench (name, status, qty) VALUES (?, ?, ?)"


class Base(DeclarativeBase):
    pass


class Bench(Base):
    __tablename__ = "bench"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(10))
    qty: Mapped[int]


def rows(n: int) -> Iterator[tuple[str, str, int]]:
    return ((f"item-{i}", STATUSES[i % 4], i % 1000) for i in range(n))


def dicts(n: int) -> list[dict[str, Any]]:
    return [{"name": a, "status": b, "qty": c} for a, b, c in rows(n)]


def chunks(
    source: Iterable[tuple[str, str, int]], size: int
) -> Iterator[list[tuple[str, str, int]]]:
    iterator = iter(source)
    while chunk := list(islice(iterator, size)):
        yield chunk


def sqlite_pragmas(conn: Any, _: Any) -> None:
    cursor = conn.cursor()
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA busy_timeout = 5000")
    cursor.close()


@asynccontextmanager
async def fresh_engine(config: Config, backend: str) -> AsyncIterator[AsyncEngine]:
    if backend == "sqlite":
        path = config.workdir / "bulk.db"
        for leftover in config.workdir.glob("bulk.db*"):
            leftover.unlink()
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    else:
        assert config.postgres_url
        engine = create_async_engine(config.postgres_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    try:
        yield engine
    finally:
        await engine.dispose()


# --- the methods, each returning elapsed seconds for n rows -----------------


def raw_sqlite3(path: Path, n: int) -> float:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    timer = Timer()
    with conn:
        conn.executemany(INSERT_SQL_SQLITE, rows(n))
    elapsed = timer.seconds
    conn.close()
    return elapsed


async def driver_executemany(engine: AsyncEngine, n: int) -> float:
    """The fast path on SQLite: the driver's executemany, fed in chunks."""
    timer = Timer()
    async with engine.begin() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        for chunk in chunks(rows(n), CHUNK):
            await driver.executemany(INSERT_SQL_SQLITE, chunk)
    return timer.seconds


async def asyncpg_copy(engine: AsyncEngine, n: int) -> float:
    """The fast path on PostgreSQL: COPY through the pooled asyncpg connection.

    One COPY fed by the generator: asyncpg encodes and sends the records as
    it reads them, so memory stays flat without chunking (and without the
    round trips and column lookup each extra COPY would cost).
    """
    timer = Timer()
    async with engine.begin() as conn:
        await conn.exec_driver_sql("SELECT 1")  # BEGIN first, as the recipe does
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.copy_records_to_table(
            "bench", records=rows(n), columns=["name", "status", "qty"]
        )
    return timer.seconds


async def raw_asyncpg_copy(url: str, n: int) -> float:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(False)
    conn = await asyncpg.connect(dsn)
    try:
        timer = Timer()
        async with conn.transaction():
            await conn.copy_records_to_table(
                "bench", records=rows(n), columns=["name", "status", "qty"]
            )
        return timer.seconds
    finally:
        await conn.close()


async def core_executemany(engine: AsyncEngine, n: int) -> float:
    data = dicts(n)
    timer = Timer()
    async with engine.begin() as conn:
        await conn.execute(insert(Bench.__table__), data)
    return timer.seconds


async def orm_bulk(engine: AsyncEngine, n: int) -> float:
    data = dicts(n)
    sessions = async_sessionmaker(engine)
    timer = Timer()
    async with sessions.begin() as session:
        await session.execute(insert(Bench), data)
    return timer.seconds


async def orm_returning(engine: AsyncEngine, n: int) -> float:
    data = dicts(n)
    sessions = async_sessionmaker(engine)
    timer = Timer()
    async with sessions.begin() as session:
        # On SQLite, ordered RETURNING with a server-made id runs row by row.
        statement = insert(Bench).returning(Bench.id, sort_by_parameter_order=True)
        ids = (await session.scalars(statement, data)).all()
    assert len(ids) == n
    return timer.seconds


async def orm_returning_unordered(engine: AsyncEngine, n: int) -> float:
    """RETURNING in batches; rows matched to input by a unique key, not order."""
    data = dicts(n)
    sessions = async_sessionmaker(engine)
    timer = Timer()
    async with sessions.begin() as session:
        statement = insert(Bench).returning(Bench.id, Bench.name)
        ids = dict((await session.execute(statement, data)).all())
    assert len(ids) == n
    return timer.seconds


async def orm_add_all(engine: AsyncEngine, n: int) -> float:
    data = dicts(n)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    timer = Timer()
    async with sessions.begin() as session:
        session.add_all([Bench(**row) for row in data])
    return timer.seconds


async def commit_per_row(engine: AsyncEngine, n: int) -> float:
    data = dicts(n)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    timer = Timer()
    for row in data:
        async with sessions.begin() as session:
            session.add(Bench(**row))
    return timer.seconds


# --- the run -----------------------------------------------------------------


async def rate(
    config: Config, backend: str, method: Any, n: int
) -> tuple[float, list[float]]:
    async def once() -> float:
        async with fresh_engine(config, backend) as engine:
            seconds = await method(engine, n)
        return n / seconds

    return await measure(config.repeats, once)


async def limit_rate(config: Config, backend: str, n: int) -> tuple[float, list[float]]:
    async def once() -> float:
        async with fresh_engine(config, backend):
            pass  # an empty table, created the same way
        if backend == "sqlite":
            return n / raw_sqlite3(config.workdir / "bulk.db", n)
        assert config.postgres_url
        return n / await raw_asyncpg_copy(config.postgres_url, n)

    return await measure(config.repeats, once)


async def memory_of_fast_path(config: Config, backend: str, n: int) -> float:
    method = driver_executemany if backend == "sqlite" else asyncpg_copy
    async with fresh_engine(config, backend) as engine:
        with traced_peak() as peak:
            await method(engine, n)
    return peak[0]


# --- import with one conflict: the recipe against a savepoint per row ----------

TAKEN = "F-TAKEN"  # the SKU the table already has


def import_feed(n: int, conflicts: int) -> list[dict[str, Any]]:
    """n rows; with a conflict, the row in the middle repeats TAKEN."""
    feed: list[dict[str, Any]] = [
        {"sku": f"F-{i:06}", "name": f"Feed {i}", "stock": i % 10} for i in range(n)
    ]
    if conflicts:
        feed[n // 2] = {"sku": TAKEN, "name": "taken"}
    return feed


@asynccontextmanager
async def import_engine(config: Config, backend: str) -> AsyncIterator[AsyncEngine]:
    """The recipe's own engine and tables, holding one product: TAKEN."""
    if backend == "sqlite":
        for leftover in config.workdir.glob("import.db*"):
            leftover.unlink()
        url = f"sqlite+aiosqlite:///{config.workdir / 'import.db'}"
    else:
        assert config.postgres_url
        url = config.postgres_url
    engine = recipe.create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(recipe.Base.metadata.drop_all)
        await conn.run_sync(recipe.Base.metadata.create_all)
    async with recipe.create_session_factory(engine).begin() as session:
        session.add(recipe.Product(sku=TAKEN, name="seeded"))
    try:
        yield engine
    finally:
        await engine.dispose()


async def import_cost(
    config: Config, backend: str, importer: Any, *, n: int, conflicts: int, repeats: int
) -> tuple[float, list[float], dict[str, int]]:
    """Median ms of one import in one transaction, and the statements sent."""
    feed = import_feed(n, conflicts)
    sent: dict[str, int] = {}

    async def once() -> float:
        async with import_engine(config, backend) as engine:
            sessions = recipe.create_session_factory(engine)
            with recipe.statements_sent(engine) as counter:
                timer = Timer()
                async with sessions.begin() as session:
                    errors = await importer(session, feed)
                elapsed = timer.seconds
        assert len(errors) == conflicts, errors
        sent.update(
            statements=sum(counter.values()),
            inserts=counter["INSERT"],
            savepoints=counter["SAVEPOINT"],
        )
        return elapsed * 1000

    value, runs = await measure(repeats, once)
    return value, runs, sent


async def import_results(config: Config, backend: str) -> list[Result]:
    n = config.size(20_000, 500)
    # The savepoint per row takes minutes at full size: it runs once.
    cases = [
        ("import, clean feed: ON CONFLICT DO NOTHING", recipe.import_products, 0, 5),
        ("import, 1 conflict: ON CONFLICT DO NOTHING", recipe.import_products, 1, 5),
        ("import, 1 conflict: savepoint per row", recipe.import_products_naive, 1, 1),
    ]
    results: list[Result] = []
    clean = None
    for case, importer, conflicts, most in cases:
        value, runs, sent = await import_cost(
            config,
            backend,
            importer,
            n=n,
            conflicts=conflicts,
            repeats=min(most, config.repeats),
        )
        clean = clean or value
        params = {"rows": n, "conflicts": conflicts, **sent}
        results.append(
            Result(
                "bulk_insert",
                backend,
                case,
                "ms",
                value,
                runs,
                params,
                ratio=value / clean,
            )
        )
    return results


async def run(config: Config) -> list[Result]:
    n = config.size(100_000, 2_000)
    slow_n = config.size(20_000, 500)  # add_all: minutes at 100k on SQLite
    per_row_n = config.size(2_000, 50)
    backends = ["sqlite"] + (["postgresql"] if config.postgres_url else [])
    results: list[Result] = []
    for backend in backends:
        limit, limit_runs = await limit_rate(config, backend, n)
        fast = driver_executemany if backend == "sqlite" else asyncpg_copy
        methods = [
            ("fast path (recipe)", fast, n),
            ("Core insert executemany", core_executemany, n),
            ("ORM bulk insert", orm_bulk, n),
            ("ORM returning ids, input order", orm_returning, slow_n),
            ("ORM returning (id, key), batched", orm_returning_unordered, n),
            ("ORM add_all", orm_add_all, slow_n),
            ("commit per row", commit_per_row, per_row_n),
        ]
        limit_case = (
            "limit: raw sqlite3" if backend == "sqlite" else "limit: asyncpg COPY"
        )
        results.append(
            Result(
                "bulk_insert",
                backend,
                limit_case,
                "rows/s",
                limit,
                limit_runs,
                {"rows": n},
                ratio=1.0,
            )
        )
        for case, method, rows_n in methods:
            value, runs = await rate(config, backend, method, rows_n)
            results.append(
                Result(
                    "bulk_insert",
                    backend,
                    case,
                    "rows/s",
                    value,
                    runs,
                    {"rows": rows_n},
                    ratio=value / limit,
                )
            )
        small, large = config.size(100_000, 20_000), config.size(1_000_000, 40_000)
        for size in (small, large):
            peak = await memory_of_fast_path(config, backend, size)
            results.append(
                Result(
                    "bulk_insert",
                    backend,
                    f"fast path memory, {size:,} rows",
                    "MB peak",
                    peak,
                    [peak],
                    {"rows": size},
                    peak_mb=peak,
                )
            )
        results += await import_results(config, backend)
    return results


if __name__ == "__main__":
    main("bulk_insert", run)

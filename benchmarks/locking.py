"""Concurrent updates: 50 writers add 1 to the same counter.

Lost updates, retries and throughput for the naive read-modify-write, the
version check with retry, the atomic UPDATE and (PostgreSQL) SELECT ... FOR
UPDATE. Every variant but the naive one on the driver's transactions must end
at 50.

Each writer is a task with a session of its own, as a request would be. Two
things vary beside the code:

- the engine: SQLAlchemy's default (on SQLite the driver sends a deferred
  BEGIN before the first write) or the cookbook's (snippets.locking, from the
  Sessions page: on SQLite, write transactions begin IMMEDIATE);
- the connections: one per writer (50), a small pool (5), or one. With fewer
  connections than writers, writers queue for a connection in asyncio, which
  hands it over as soon as it is returned; with one each, they queue for
  SQLite's write lock inside SQLite's busy handler, which sleeps between
  retries.

    python -m benchmarks.locking [--quick]
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from benchmarks.common import Config, Result, Timer, main
from snippets.locking import create_engine

Sessions = async_sessionmaker


class Base(DeclarativeBase):
    pass


class Counter(Base):
    __tablename__ = "counters"

    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int] = mapped_column(default=0)
    version: Mapped[int] = mapped_column(default=1)


def sqlite_pragmas(conn: object, _: object) -> None:
    cursor = conn.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA busy_timeout = 5000")
    cursor.close()


async def naive(sessions: Sessions) -> int:
    async with sessions.begin() as session:
        counter = await session.get(Counter, 1)
        assert counter is not None
        await asyncio.sleep(0)  # any await between read and write: a request
        counter.value += 1
    return 0


async def version_check(sessions: Sessions) -> int:
    retries = 0
    while True:
        async with sessions.begin() as session:
            row = (await session.execute(select(Counter.value, Counter.version))).one()
            await asyncio.sleep(0)
            result = await session.execute(
                update(Counter)
                .where(Counter.id == 1, Counter.version == row.version)
                .values(value=row.value + 1, version=row.version + 1)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                return retries
        retries += 1


async def atomic(sessions: Sessions) -> int:
    async with sessions.begin() as session:
        await session.execute(update(Counter).values(value=Counter.value + 1))
    return 0


async def for_update(sessions: Sessions) -> int:
    async with sessions.begin() as session:
        query = select(Counter).where(Counter.id == 1).with_for_update()
        counter = (await session.scalars(query)).one()
        await asyncio.sleep(0)
        counter.value += 1
    return 0


Writer = Callable[[Sessions], Awaitable[int]]


@dataclass(frozen=True)
class Case:
    name: str
    writer: Writer
    engine: str  # "default" (SQLAlchemy's) or "cookbook" (the foundation's)
    connections: int | None  # None: one per writer


def cases(backend: str) -> list[Case]:
    if backend == "postgresql":  # the two engines are the same there
        return [
            Case("naive read-modify-write", naive, "default", None),
            Case("version check + retry", version_check, "default", None),
            Case("atomic UPDATE", atomic, "default", None),
            Case("SELECT ... FOR UPDATE", for_update, "default", None),
            Case("atomic UPDATE, pool of 5", atomic, "default", 5),
        ]
    return [
        Case("naive read-modify-write", naive, "default", None),
        Case("version check + retry", version_check, "default", None),
        Case("atomic UPDATE", atomic, "default", None),
        Case("atomic UPDATE, cookbook engine", atomic, "cookbook", None),
        Case("atomic UPDATE, cookbook engine, pool of 5", atomic, "cookbook", 5),
        Case("atomic UPDATE, cookbook engine, 1 connection", atomic, "cookbook", 1),
        # The naive code, not named so: on this engine it must lose nothing,
        # and tests/test_benchmarks.py checks every case not named "naive".
        Case("read-modify-write, cookbook engine, pool of 5", naive, "cookbook", 5),
        Case("read-modify-write, cookbook engine, 1 connection", naive, "cookbook", 1),
    ]


async def engine_for(
    config: Config, backend: str, case: Case, writers: int
) -> AsyncEngine:
    pool = {"pool_size": case.connections or writers, "max_overflow": 0}
    if backend == "sqlite":
        for leftover in config.workdir.glob("locking.db*"):
            leftover.unlink()
        url = f"sqlite+aiosqlite:///{config.workdir / 'locking.db'}"
        if case.engine == "cookbook":
            engine = create_engine(url, **pool)
        else:
            engine = create_async_engine(url, **pool)
            event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    else:
        assert config.postgres_url
        engine = create_async_engine(config.postgres_url, **pool)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
        await conn.execute(Counter.__table__.insert().values(id=1, value=0))
    return engine


async def warm_pool(engine: AsyncEngine, n: int) -> None:
    """Open the writers' connections first: time the contention, not connects."""
    connections = [await engine.connect() for _ in range(n)]
    for conn in connections:
        await conn.exec_driver_sql("SELECT 1")
        await conn.close()


async def one_run(
    config: Config, backend: str, case: Case, n: int
) -> tuple[float, int, int, int]:
    engine = await engine_for(config, backend, case, n)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        await warm_pool(engine, min(n, case.connections or n))
        timer = Timer()
        outcomes = await asyncio.gather(
            *(case.writer(sessions) for _ in range(n)), return_exceptions=True
        )
        seconds = timer.seconds
        async with sessions() as session:
            final = (await session.scalars(select(Counter.value))).one()
    finally:
        await engine.dispose()
    failed = sum(isinstance(o, BaseException) for o in outcomes)
    retries = sum(o for o in outcomes if isinstance(o, int))
    return seconds, final, failed, retries


async def run(config: Config) -> list[Result]:
    writers = config.size(50, 10)
    backends = ["sqlite"] + (["postgresql"] if config.postgres_url else [])
    results: list[Result] = []
    for backend in backends:
        chosen = cases(backend)
        # Round-robin: run 1 of every case, then run 2, ... so a busy spell on
        # a shared machine slows every case a little rather than one a lot.
        runs: dict[str, list[tuple[float, int, int, int]]] = {
            case.name: [] for case in chosen
        }
        for _ in range(config.repeats):
            for case in chosen:
                runs[case.name].append(await one_run(config, backend, case, writers))
        for case in chosen:
            rates = sorted(writers / seconds for seconds, *_ in runs[case.name])
            median = rates[len(rates) // 2]
            results.append(
                Result(
                    "locking",
                    backend,
                    case.name,
                    "updates/s",
                    median,
                    rates,
                    {
                        "writers": writers,
                        "connections": min(writers, case.connections or writers),
                        "engine": case.engine,
                        "final": [r[1] for r in runs[case.name]],
                        "lost": [writers - r[1] - r[2] for r in runs[case.name]],
                        "failed": [r[2] for r in runs[case.name]],
                        "retries": [r[3] for r in runs[case.name]],
                    },
                )
            )
    return results


if __name__ == "__main__":
    main("locking", run)

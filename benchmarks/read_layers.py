"""Where a read's time goes: one item by id, layer by layer, in one process.

The reference API's GET /items/{id} is a database read wrapped in layers:
the driver, SQLAlchemy Core, the ORM, the soft-delete filter. The API reads
that way, in its one-statement session (no BEGIN, no ROLLBACK sent); every
other GET adds a transaction (the read session's, which rolls back), and
`ping_when_idle` sends no ping to connections used back to back. The last
two cases are for comparison: a ping at every checkout (`pool_pre_ping=True`),
and a write session's transaction, which commits.
Each "+" case adds one layer to the "+" case above it (the last swaps the
read session's rollback for a commit); reads run one after another, so each
figure is the latency (CPU plus round trips) of one read.

    python -m benchmarks.read_layers [--quick]
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from benchmarks.common import Config, Result, main, measure
from snippets.inventory import crud
from snippets.inventory.database import (
    Sessions,
    create_engine,
    create_one_statement_engine,
    create_one_statement_session_factory,
    create_read_session_factory,
    create_session_factory,
    ping_when_idle,
    with_soft_delete,
)
from snippets.inventory.models import Base, Item

ITEM_ID = 7
SQL = "SELECT id, name, price, stock FROM items WHERE id = {} AND deleted_at IS NULL"


async def prepare(url: str) -> AsyncEngine:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
        rows = [
            {
                "name": f"item {i}",
                "category": "tools",
                "status": "active",
                "price": Decimal("9.99"),
                "stock": 10,
                "created_at": datetime.now(UTC),
                "updated_at": datetime.now(UTC),
            }
            for i in range(100)
        ]
        await conn.execute(insert(Item), rows)
    return engine


Read = Callable[[], Awaitable[Any]]


def without_begin(engine: AsyncEngine) -> AsyncEngine:
    """An engine that sends no BEGIN, for the first layers: autocommit on
    PostgreSQL; on SQLite the driver's own default (it sends no BEGIN before
    a SELECT), not the foundation's engine, whose listener always sends one."""
    if engine.dialect.name == "sqlite":
        return create_async_engine(engine.url)
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def layers(
    engine: AsyncEngine,
    plain: AsyncEngine,
    one_statement: AsyncEngine,
    pinged: AsyncEngine,
    driver: Read,
) -> dict[str, Read]:
    """Each case: one read, with one more layer than the case before.

    `engine` is the reference API's engine (the foundation's, with
    `ping_when_idle`); `plain` sends no BEGIN; `one_statement` is the API's
    for GET /items/{id}; `pinged` is the API's engine with
    `pool_pre_ping=True`.
    """
    autocommit = plain
    orm = async_sessionmaker(autocommit, expire_on_commit=False)
    filtered = with_soft_delete(create_session_factory(autocommit))
    one_statement_reads = create_one_statement_session_factory(one_statement)
    reads = with_soft_delete(create_read_session_factory(engine))
    pinged_reads = with_soft_delete(create_read_session_factory(pinged))
    writes = with_soft_delete(create_session_factory(engine))
    core_query = select(Item.__table__).where(Item.id == ITEM_ID)

    async def core() -> Any:
        async with autocommit.connect() as conn:
            return (await conn.execute(core_query)).first()

    async def orm_read() -> Any:
        async with orm() as session:
            return await session.scalar(crud.ITEM_BY_ID, {"item_id": ITEM_ID})

    async def get_item(sessions: Sessions) -> Any:
        async with sessions() as session:  # ReadSessionDep: GET /items/{id}
            return await crud.get_item(session, ITEM_ID)

    async def write_session() -> Any:
        async with writes.begin() as session:  # SessionDep: commits
            return await crud.get_item(session, ITEM_ID)

    return {
        "driver alone (prepared statement)": driver,
        "+ SQLAlchemy Core, pooled connection": core,
        "+ ORM session and entity": orm_read,
        "+ soft-delete filter (do_orm_execute)": lambda: get_item(filtered),
        "GET /items/{id}'s one-statement session: no BEGIN, no ROLLBACK": (
            lambda: get_item(one_statement_reads)
        ),
        "+ BEGIN and ROLLBACK (the API's read session)": lambda: get_item(reads),
        "+ pool_pre_ping=True (a ping at every checkout)": lambda: get_item(
            pinged_reads
        ),
        "+ BEGIN and COMMIT instead (a write session)": write_session,
    }


async def driver_reader(engine: AsyncEngine, conn: Any) -> Read:
    """One read on the driver's own connection, as fast as it goes."""
    if engine.dialect.name == "postgresql":
        statement = await conn.prepare(SQL.format("$1"))
        return lambda: statement.fetchrow(ITEM_ID)

    async def read() -> Any:  # aiosqlite: sqlite3 caches the statement
        async with conn.execute(SQL.format("?"), (ITEM_ID,)) as cursor:
            return await cursor.fetchone()

    return read


async def per_read_us(read: Callable[[], Awaitable[Any]], reads: int) -> float:
    for _ in range(reads // 10):  # warm the caches
        assert await read() is not None
    started = time.perf_counter()
    for _ in range(reads):
        await read()
    return (time.perf_counter() - started) / reads * 1e6


async def run(config: Config) -> list[Result]:
    reads = config.size(3000, 100)
    urls = {"sqlite": f"sqlite+aiosqlite:///{config.workdir / 'layers.db'}"}
    if config.postgres_url:
        urls["postgresql"] = config.postgres_url
    results: list[Result] = []
    for backend, url in urls.items():
        engine = await prepare(url)
        ping_when_idle(engine)  # as the API's lifespan does
        plain = without_begin(engine)
        one_statement = create_one_statement_engine(engine)
        pinged = create_engine(url, pool_pre_ping=True)
        try:
            async with engine.connect() as conn:
                raw = (await conn.get_raw_connection()).driver_connection
                reader = await driver_reader(engine, raw)
                cases = layers(engine, plain, one_statement, pinged, reader)
                first = 0.0
                for case, read in cases.items():
                    value, runs = await measure(
                        config.repeats, lambda read=read: per_read_us(read, reads)
                    )
                    first = first or value
                    extra = {"reads": reads}
                    results.append(
                        Result(
                            "read_layers",
                            backend,
                            case,
                            "µs/read",
                            value,
                            runs,
                            extra,
                            ratio=value / first,
                        )
                    )
        finally:
            await pinged.dispose()
            for own in (plain, one_statement):
                if own.pool is not engine.pool:  # SQLite: an engine of its own
                    await own.dispose()
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.drop_all)
            await engine.dispose()
    return results


if __name__ == "__main__":
    main("read_layers", run)

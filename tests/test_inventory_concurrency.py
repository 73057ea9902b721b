"""The reference API under concurrency and injected faults, both backends.

Concurrent requests are started together with asyncio.gather against one app:
each gets its own session and connection, as under a server. No sleeps: a wrong
implementation (read, decide in Python, write) interleaves at its awaits.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from snippets.inventory import create_app
from snippets.inventory.database import (
    create_engine,
    create_read_session_factory,
    create_session_factory,
    with_soft_delete,
)
from snippets.inventory.models import Base, Item, Order, OrderLine

Sessions = async_sessionmaker[AsyncSession]


# FastAPI builds an app's routes (and their validators) lazily, which costs
# more than a test: the tests share one app, pointed at a new database each.
APP = create_app()


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    APP.state.settings = replace(APP.state.settings, database_url=database_url)
    async with APP.router.lifespan_context(APP):
        yield APP


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


@pytest.fixture
def sessions(app: FastAPI) -> Sessions:
    return app.state.sessions  # type: ignore[no-any-return]


async def create_items(client: httpx.AsyncClient, *stocks: int) -> None:
    rows = [
        {"name": f"item{n}", "category": "c", "price": "2.00", "stock": stock}
        for n, stock in enumerate(stocks, 1)
    ]
    reply = await client.post("/items/bulk", json={"items": rows})
    assert reply.status_code == 201


async def state(sessions: Sessions) -> dict[int, tuple[int, int]]:
    """id -> (version, stock) of every item."""
    async with sessions() as session:
        rows = await session.execute(select(Item.id, Item.version, Item.stock))
        return {i: (v, s) for i, v, s in rows.all()}


async def count(sessions: Sessions, model: type) -> int:
    async with sessions() as session:
        query = select(func.count()).select_from(model)
        return int(await session.scalar(query) or 0)


def order(*item_ids: int, quantity: int = 1) -> dict[str, Any]:
    lines = [{"item_id": i, "quantity": quantity} for i in item_ids]
    return {"customer": "Ada", "lines": lines}


# --- concurrency ---------------------------------------------------------------


async def test_concurrent_if_match_updates_have_one_winner_per_version(
    client: httpx.AsyncClient,
):
    await create_items(client, 0)
    for version in (1, 2, 3):
        replies = await asyncio.gather(
            *(
                client.patch(
                    "/items/1", json={"stock": n}, headers={"If-Match": f'"{version}"'}
                )
                for n in range(8)
            )
        )
        codes = sorted(reply.status_code for reply in replies)
        assert codes == [200] + [412] * 7
        [winner] = [reply for reply in replies if reply.status_code == 200]
        item = (await client.get("/items/1")).json()
        assert item["version"] == version + 1
        assert item["stock"] == winner.json()["stock"]  # the winner's write


async def test_concurrent_conditional_updates_and_deletes_have_one_winner(
    client: httpx.AsyncClient, sessions: Sessions
):
    await create_items(client, 0)
    first = {"If-Match": '"1"'}
    replies = await asyncio.gather(
        *(client.patch("/items/1", json={"stock": 1}, headers=first) for _ in range(4)),
        *(client.delete("/items/1", headers=first) for _ in range(4)),
    )
    codes = [reply.status_code for reply in replies]
    assert sum(code in (200, 204) for code in codes) == 1, codes
    # The losers saw version 2 (412), or the item already deleted (404).
    assert all(code in (200, 204, 404, 412) for code in codes), codes
    [(version, _)] = (await state_with_deleted(sessions)).values()
    assert version == 2


async def test_concurrent_restores_with_if_match_have_one_winner(
    client: httpx.AsyncClient, sessions: Sessions
):
    await create_items(client, 0)
    assert (await client.delete("/items/1")).status_code == 204
    trash = {"If-Match": '"2"'}
    replies = await asyncio.gather(
        *(client.post("/items/1/restore", headers=trash) for _ in range(6))
    )
    codes = sorted(reply.status_code for reply in replies)
    assert codes == [200] + [404] * 5  # restored: no longer in the trash
    assert await state(sessions) == {1: (3, 0)}


async def test_concurrent_bulk_patches_with_expected_versions_have_one_winner(
    client: httpx.AsyncClient, sessions: Sessions
):
    await create_items(client, 0, 0, 0)
    read = {"1": 1, "2": 1, "3": 1}
    replies = await asyncio.gather(
        *(
            client.patch(
                "/items/bulk",
                json={
                    "ids": [3, 1, 2],
                    "values": {"stock": n},
                    "expected_versions": read,
                },
            )
            for n in range(6)
        )
    )
    codes = sorted(reply.status_code for reply in replies)
    assert codes == [200] + [409] * 5
    stocks = {stock for _, stock in (await state(sessions)).values()}
    assert len(stocks) == 1  # one writer's values, on every item
    assert {v for v, _ in (await state(sessions)).values()} == {2}


async def test_clients_that_send_the_version_they_read_never_lose_an_update(
    client: httpx.AsyncClient, sessions: Sessions
):
    """Eight clients each add 1 to the stock: read, compute, write with the
    version read, and on a conflict read again. Through PATCH (If-Match) and
    through a bulk PATCH (expected_versions), every increment is kept."""
    await create_items(client, 0)
    all_read = asyncio.Barrier(8)  # first attempts: everyone reads version 1

    async def add_one(bulk: bool) -> int:
        for attempt in range(1, 100):
            item = (await client.get("/items/1")).json()
            stock, version = item["stock"] + 1, item["version"]
            if attempt == 1:
                await all_read.wait()
            if bulk:
                reply = await client.patch(
                    "/items/bulk",
                    json={
                        "ids": [1],
                        "values": {"stock": stock},
                        "expected_versions": {"1": version},
                    },
                )
            else:
                reply = await client.patch(
                    "/items/1",
                    json={"stock": stock},
                    headers={"If-Match": f'"{version}"'},
                )
            if reply.status_code == 200:
                return attempt
            assert reply.status_code in (409, 412), reply.text
        raise AssertionError("never won")

    attempts = await asyncio.gather(*(add_one(bulk=n % 2 == 1) for n in range(8)))
    assert await state(sessions) == {1: (9, 8)}  # 8 writes, 8 increments
    assert sum(attempts) >= 8 + 7  # 7 first attempts lost, and retried


async def state_with_deleted(sessions: Sessions) -> dict[int, tuple[int, int]]:
    """id -> (version, stock) of every item, deleted ones included."""
    async with sessions() as session:
        query = select(Item.id, Item.version, Item.stock)
        rows = await session.execute(query.execution_options(include_deleted=True))
        return {i: (v, s) for i, v, s in rows.all()}


async def test_twenty_concurrent_orders_against_a_stock_of_five(
    client: httpx.AsyncClient, sessions: Sessions
):
    await create_items(client, 5)
    replies = await asyncio.gather(
        *(client.post("/orders", json=order(1)) for _ in range(20))
    )
    codes = sorted(reply.status_code for reply in replies)
    assert codes == [201] * 5 + [409] * 15
    assert await state(sessions) == {1: (6, 0)}  # 5 writes, never below zero
    assert await count(sessions, Order) == 5
    assert await count(sessions, OrderLine) == 5


async def test_orders_listing_items_in_opposite_orders_do_not_deadlock(
    client: httpx.AsyncClient, sessions: Sessions
):
    await create_items(client, 100, 100, 100)
    orders = [order(1, 2, 3), order(3, 2, 1), order(2, 3, 1)] * 6
    replies = await asyncio.gather(*(client.post("/orders", json=o) for o in orders))
    assert [reply.status_code for reply in replies] == [201] * 18
    assert await state(sessions) == {1: (19, 82), 2: (19, 82), 3: (19, 82)}


async def test_concurrent_bulk_patches_never_lose_a_version_bump(
    client: httpx.AsyncClient, sessions: Sessions
):
    await create_items(client, 0, 0, 0, 0, 0)
    id_sets = [[1, 2, 3], [3, 2, 1], [5, 4, 3], [2, 4], [1, 5], [4, 3, 2, 1]] * 2
    replies = await asyncio.gather(
        *(
            client.patch("/items/bulk", json={"ids": ids, "values": {"stock": n}})
            for n, ids in enumerate(id_sets)
        )
    )
    assert [reply.status_code for reply in replies] == [200] * len(id_sets)
    bumps = {i: sum(i in ids for ids in id_sets) for i in range(1, 6)}
    versions = {i: version for i, (version, _) in (await state(sessions)).items()}
    assert versions == {i: 1 + n for i, n in bumps.items()}


async def test_concurrent_creates_of_one_name_have_one_winner(
    client: httpx.AsyncClient, sessions: Sessions
):
    item = {"name": "Mug", "category": "c", "price": "1"}
    replies = await asyncio.gather(
        *(client.post("/items", json=item) for _ in range(6))
    )
    assert sorted(reply.status_code for reply in replies) == [201] + [409] * 5
    assert await count(sessions, Item) == 1


# --- injected faults -------------------------------------------------------------


@pytest.fixture
def fail_after_insert_into(app: FastAPI) -> Iterator[Any]:
    """Make the database accept an INSERT into a table, then crash."""
    engine: AsyncEngine = app.state.sessions.kw["bind"]
    tables: set[str] = set()

    def crash(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if any(statement.startswith(f"INSERT INTO {t} ") for t in tables):
            raise RuntimeError("injected fault")

    event.listen(engine.sync_engine, "after_cursor_execute", crash)
    yield tables.add
    event.remove(engine.sync_engine, "after_cursor_execute", crash)


async def test_a_crash_after_the_order_lines_are_written_leaves_nothing(
    client: httpx.AsyncClient, sessions: Sessions, fail_after_insert_into: Any
):
    await create_items(client, 5, 5)
    before = await state(sessions)
    fail_after_insert_into("order_lines")
    reply = await client.post("/orders", json=order(1, 2))
    assert reply.status_code == 500
    assert await state(sessions) == before  # the stock was given back
    assert await count(sessions, Order) == 0
    assert await count(sessions, OrderLine) == 0


async def test_a_crash_after_a_bulk_insert_leaves_nothing(
    client: httpx.AsyncClient, sessions: Sessions, fail_after_insert_into: Any
):
    fail_after_insert_into("items")
    rows = [{"name": f"n{n}", "category": "c", "price": "1"} for n in range(300)]
    reply = await client.post("/items/bulk", json={"items": rows})
    assert reply.status_code == 500
    assert await count(sessions, Item) == 0


async def test_sqlite_connections_wait_for_the_lock_with_wal_and_foreign_keys(
    sqlite_url: str,
):
    """SQLite only: the settings every connection of the engine has.

    A 5 s busy timeout (Python's sqlite3 default) makes a writer wait for the
    write lock instead of failing; WAL lets readers go on meanwhile.
    """
    engine = create_engine(sqlite_url).execution_options(sqlite_begin="DEFERRED")
    try:
        connections = [await engine.connect() for _ in range(3)]
        for conn in connections:
            pragmas = [
                (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("busy_timeout", "journal_mode", "foreign_keys")
            ]
            assert pragmas == [5000, "wal", 1]
        for conn in connections:
            await conn.close()
    finally:
        await engine.dispose()


def write_lock_is_free(path: str) -> bool:
    """Can another connection take the write lock right now?"""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:  # database is locked
        return False
    finally:
        other.close()


async def test_sqlite_write_sessions_lock_at_begin_read_sessions_never(
    sqlite_url: str,
):
    """SQLite only: the foundation's BEGIN modes, as the API uses them.

    A write session takes the write lock with its first statement, a read,
    so its read-then-write cannot fail with SQLITE_BUSY_SNAPSHOT; a read
    session (every GET) takes none, so it never holds a writer up.
    """
    path = sqlite_url.removeprefix("sqlite+aiosqlite:///")
    engine = create_engine(sqlite_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    try:
        writes = with_soft_delete(create_session_factory(engine))
        reads = with_soft_delete(create_read_session_factory(engine))
        async with reads() as session:
            await session.scalars(select(Item.id))
            assert write_lock_is_free(path)
        async with writes.begin() as session:
            await session.scalars(select(Item.id))
            assert not write_lock_is_free(path)
        assert write_lock_is_free(path)
    finally:
        await engine.dispose()

"""Optimistic locking: lost updates, version checks, retries, locks, HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from snippets import locking
from snippets.locking import (
    FEW_WRITERS,
    WRITERS,
    Base,
    Counter,
    Item,
    ItemNotFoundError,
    Update,
    VersionConflictError,
    add_one_locked,
    add_stock_atomic,
    atomic_writer,
    checked_writer,
    create_app,
    create_counter,
    create_default_engine,
    create_engine,
    create_item,
    create_read_session_factory,
    create_session_factory,
    demo_for_update,
    get_item,
    locked_writer,
    naive_writer,
    race,
    read_counter,
    read_item_row,
    recorded_sql,
    retry_on_conflict,
    update_item,
    update_item_cas,
    update_item_naive_cas,
)

Sessions = async_sessionmaker[AsyncSession]
UPDATES = pytest.mark.parametrize(
    "update_fn", [update_item, update_item_cas], ids=["version_id_col", "cas"]
)


async def tables(url: str) -> AsyncEngine:
    """An engine on `url` whose pool holds 50 writers, tables created."""
    engine = create_engine(url, pool_size=WRITERS)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    return engine


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await tables(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> Sessions:
    return create_session_factory(engine)


@pytest.fixture
def read_sessions(engine: AsyncEngine) -> Sessions:
    return create_read_session_factory(engine)


@pytest.fixture
async def default_sessions(engine: AsyncEngine) -> AsyncIterator[Sessions]:
    """Sessions on the engine most tutorials write (tables already created)."""
    default = create_default_engine(engine.url, pool_size=WRITERS)
    yield create_session_factory(default)
    await default.dispose()


# --- the lost update -------------------------------------------------------


async def test_naive_update_loses_49_of_50_writes_and_reports_none(
    default_sessions: Sessions,
):
    sessions = default_sessions
    counter_id = await create_counter(sessions)
    outcomes: list[str] = []
    await race(naive_writer(sessions, counter_id, outcomes))
    assert outcomes == ["ok"] * WRITERS
    assert await read_counter(sessions, counter_id) == 1


async def test_naive_update_loses_writes_on_postgres_with_the_cookbook_engine(
    postgres_url: str,
):
    """PostgreSQL only: on SQLite the cookbook's write transactions begin
    IMMEDIATE and serialize this code (see the SQLite tests below)."""
    engine = await tables(postgres_url)
    sessions = create_session_factory(engine)
    counter_id = await create_counter(sessions)
    outcomes: list[str] = []
    await race(naive_writer(sessions, counter_id, outcomes))
    assert outcomes == ["ok"] * WRITERS
    assert await read_counter(sessions, counter_id) == 1
    await engine.dispose()


@UPDATES
async def test_version_check_refuses_every_write_based_on_a_stale_read(
    sessions: Sessions, read_sessions: Sessions, update_fn: Update
):
    item_id = await create_item(sessions, "x")
    outcomes: list[str] = []
    writer = checked_writer(sessions, read_sessions, item_id, update_fn, outcomes)
    await race(writer)
    assert sorted(outcomes) == ["VersionConflictError"] * (WRITERS - 1) + ["ok"]
    item = await read_item_row(sessions, item_id)
    assert (item.stock, item.version) == (1, 2)  # every ok counted, none lost


@UPDATES
async def test_version_check_with_retry_keeps_every_write(
    database_url: str, sessions: Sessions, update_fn: Update
):
    """10 writers, each retrying in a fresh transaction. On PostgreSQL every
    first attempt reads before any writer writes, so conflicts happen and are
    retried; on SQLite the write transactions begin IMMEDIATE, so a writer
    that waited there inside its transaction would hold the lock the others
    wait for: they run one at a time instead, and never conflict."""
    writers = FEW_WRITERS
    interleave = database_url.startswith("postgresql")
    item_id = await create_item(sessions, "x")
    everyone_has_read = asyncio.Barrier(writers)
    attempts: list[int] = []

    async def writer() -> None:
        async def add_one(session: AsyncSession) -> None:
            item = await get_item(session, item_id)
            attempts.append(item.version)
            if interleave and len(attempts) <= writers:
                await everyone_has_read.wait()
            await update_fn(session, item_id, item.version, {"stock": item.stock + 1})

        await retry_on_conflict(sessions, add_one, attempts=writers)

    await asyncio.gather(*(writer() for _ in range(writers)))
    item = await read_item_row(sessions, item_id)
    assert (item.stock, item.version) == (writers, writers + 1)
    assert (len(attempts) > writers) == interleave  # retried only on PostgreSQL


async def test_atomic_update_keeps_every_write(engine: AsyncEngine, sessions: Sessions):
    """10 writers that truly overlap: on SQLite, 50 would spend seconds asleep
    in its busy handler (retries with sleeps of up to 100 ms)."""
    writers = FEW_WRITERS
    item_id = await create_item(sessions, "x")
    with recorded_sql(engine) as sql:
        await race(atomic_writer(sessions, item_id), writers)
    item = await read_item_row(sessions, item_id)
    assert (item.stock, item.version) == (writers, writers + 1)
    assert not [s for s in sql if s.startswith("SELECT")]  # nothing read first


# --- the data layer: its own exceptions, 404 apart from 409 ------------------


@UPDATES
async def test_update_applies_changes_and_bumps_the_version(
    sessions: Sessions, update_fn: Update
):
    item_id = await create_item(sessions, "lamp", stock=10)
    async with sessions.begin() as session:
        await update_fn(session, item_id, 1, {"stock": 7, "name": "desk lamp"})
    item = await read_item_row(sessions, item_id)
    assert (item.name, item.stock, item.version) == ("desk lamp", 7, 2)


@UPDATES
async def test_update_of_a_stale_version_raises_conflict_and_changes_nothing(
    sessions: Sessions, update_fn: Update
):
    item_id = await create_item(sessions, "lamp", stock=10)
    async with sessions.begin() as session:
        await update_fn(session, item_id, 1, {"stock": 7})
    with pytest.raises(VersionConflictError) as caught:
        async with sessions.begin() as session:
            await update_fn(session, item_id, 1, {"stock": 0})
    assert (caught.value.item_id, caught.value.version) == (item_id, 1)
    item = await read_item_row(sessions, item_id)
    assert (item.stock, item.version) == (7, 2)


@UPDATES
async def test_update_of_a_missing_item_raises_not_found(
    sessions: Sessions, update_fn: Update
):
    await create_item(sessions, "lamp")
    with pytest.raises(ItemNotFoundError) as caught:
        async with sessions.begin() as session:
            await update_fn(session, 999, 1, {"stock": 0})
    assert caught.value.item_id == 999


async def test_naive_compare_and_swap_calls_a_missing_item_a_conflict(
    sessions: Sessions,
):
    await create_item(sessions, "lamp")
    with pytest.raises(VersionConflictError):  # a 409 for what is a 404
        async with sessions.begin() as session:
            await update_item_naive_cas(session, 999, 1, {"stock": 0})


@UPDATES
async def test_update_refuses_to_write_the_version_or_the_id(
    sqlite_url: str, update_fn: Update
):
    """Checked in Python before any UPDATE is sent: one backend is enough."""
    engine = await tables(sqlite_url)
    sessions = create_session_factory(engine)
    item_id = await create_item(sessions, "lamp")
    for changes in [{"version": 9}, {"id": 2}, {"stock": 1, "price": 3}]:
        with pytest.raises(ValueError, match="not writable"):
            async with sessions.begin() as session:
                await update_fn(session, item_id, 1, changes)
    item = await read_item_row(sessions, item_id)
    assert (item.id, item.stock, item.version) == (item_id, 0, 1)
    await engine.dispose()


async def test_version_id_col_catches_a_write_between_read_and_flush(
    default_sessions: Sessions,
):
    """On the default engine, whose read takes no lock on either database:
    the cookbook's SQLite write transaction would make `fast` wait instead."""
    sessions = default_sessions
    item_id = await create_item(sessions, "lamp")
    async with sessions() as slow:
        loaded = await slow.get(Item, item_id)  # at version 1, kept in slow
        async with sessions.begin() as fast:
            await update_item(fast, item_id, 1, {"stock": 5})
        with pytest.raises(VersionConflictError) as caught:
            await update_item(slow, item_id, 1, {"stock": 9})  # sees version 1
        assert loaded is not None
        assert isinstance(caught.value.__cause__, StaleDataError)
    item = await read_item_row(sessions, item_id)
    assert (item.stock, item.version) == (5, 2)


async def test_version_id_col_adds_the_version_to_the_update(
    engine: AsyncEngine, sessions: Sessions
):
    item_id = await create_item(sessions, "lamp")
    with recorded_sql(engine) as sql:
        async with sessions.begin() as session:
            await update_item(session, item_id, 1, {"stock": 3})
    (statement,) = [s for s in sql if s.startswith("UPDATE")]
    assert "items.version = " in statement.split("WHERE")[1]


async def test_atomic_update_bumps_the_version_so_older_reads_conflict(
    sessions: Sessions,
):
    item_id = await create_item(sessions, "lamp")
    async with sessions.begin() as session:
        assert await add_stock_atomic(session, item_id, 3) == 3
    with pytest.raises(VersionConflictError):
        async with sessions.begin() as session:
            await update_item(session, item_id, 1, {"stock": 0})


async def test_atomic_update_of_a_missing_item_raises_not_found(
    sessions: Sessions,
):
    with pytest.raises(ItemNotFoundError):
        async with sessions.begin() as session:
            await add_stock_atomic(session, 999, 1)


async def test_retry_returns_the_first_result_that_commits(sqlite_url: str):
    """Control flow only (no statement runs): one backend is enough."""
    sessions = create_session_factory(create_engine(sqlite_url))
    calls: list[int] = []

    async def work(session: AsyncSession) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise VersionConflictError(1, len(calls))
        return "done"

    assert await retry_on_conflict(sessions, work, attempts=5) == "done"
    assert len(calls) == 3


async def test_retry_gives_up_after_its_attempts_with_the_last_conflict(
    sqlite_url: str,
):
    """Control flow only (no statement runs): one backend is enough."""
    sessions = create_session_factory(create_engine(sqlite_url))
    calls: list[int] = []

    async def work(session: AsyncSession) -> None:
        calls.append(1)
        raise VersionConflictError(1, len(calls))

    with pytest.raises(VersionConflictError) as caught:
        await retry_on_conflict(sessions, work, attempts=4)
    assert len(calls) == 4
    assert caught.value.version == 4


async def test_retry_does_not_retry_other_errors(sqlite_url: str):
    """Control flow only (no statement runs): one backend is enough."""
    sessions = create_session_factory(create_engine(sqlite_url))
    calls: list[int] = []

    async def work(session: AsyncSession) -> None:
        calls.append(1)
        raise ItemNotFoundError(1)

    with pytest.raises(ItemNotFoundError):
        await retry_on_conflict(sessions, work)
    assert len(calls) == 1


# --- pessimistic locks: FOR UPDATE (PostgreSQL), BEGIN IMMEDIATE (SQLite) ----


async def test_for_update_keeps_every_write_on_postgres(postgres_url: str):
    """PostgreSQL only: SQLite has no row locks (see the next tests).
    10 writers: the NOWAIT test below proves the lock deterministically."""
    engine = await tables(postgres_url)
    sessions = create_session_factory(engine)
    counter_id = await create_counter(sessions)
    await race(locked_writer(sessions, counter_id, add_one_locked), FEW_WRITERS)
    assert await read_counter(sessions, counter_id) == FEW_WRITERS
    await engine.dispose()


async def test_for_update_makes_the_next_locker_wait_on_postgres(
    postgres_url: str,
):
    """PostgreSQL only: NOWAIT turns the wait into an error we can assert."""
    engine = await tables(postgres_url)
    sessions = create_session_factory(engine)
    counter_id = await create_counter(sessions)
    query = select(Counter).where(Counter.id == counter_id)
    async with sessions() as holder, sessions() as other:
        with recorded_sql(engine) as sql:
            await add_one_locked(holder, counter_id)
        assert sql[0].rstrip().endswith("FOR UPDATE")
        with pytest.raises(DBAPIError, match="could not obtain lock"):
            await other.execute(query.with_for_update(nowait=True))
        await other.rollback()
        await holder.commit()
        await other.execute(query.with_for_update(nowait=True))
    await engine.dispose()


async def test_for_update_is_silently_dropped_on_sqlite(sqlite_url: str):
    """SQLite only: it ignores FOR UPDATE, so on the default engine the
    naive race still loses every write but one."""
    engine = await tables(sqlite_url)
    default = create_default_engine(sqlite_url, pool_size=WRITERS)
    sessions = create_session_factory(default)
    counter_id = await create_counter(sessions)
    outcomes: list[str] = []
    with recorded_sql(default) as sql:
        writer = naive_writer(sessions, counter_id, outcomes, add_one_locked)
        await race(writer, FEW_WRITERS)
    assert [s for s in sql if s.startswith("SELECT")]
    assert not [s for s in sql if "FOR UPDATE" in s]
    assert outcomes == ["ok"] * FEW_WRITERS
    assert await read_counter(sessions, counter_id) == 1
    await default.dispose()
    await engine.dispose()


def page_tab(title: str) -> list[str]:
    """The text block in the locking page's tab of that title."""
    page = (Path(__file__).parent.parent / "docs" / "locking.md").read_text()
    block = page.split(f'=== "{title}"\n')[1].split("```text\n", 1)[1]
    return [line.strip() for line in block.split("```", 1)[0].strip().splitlines()]


async def test_for_update_reaches_postgres_and_not_sqlite(
    database_url: str, capsys: pytest.CaptureFixture[str]
):
    """What each database receives, as the page shows it in two tabs."""
    engine = await tables(database_url)
    await demo_for_update(engine)
    await engine.dispose()
    out = capsys.readouterr().out.splitlines()
    on_postgres = database_url.startswith("postgresql")
    assert out == page_tab("PostgreSQL receives" if on_postgres else "SQLite receives")
    assert any("FOR UPDATE" in line for line in out) == on_postgres


async def write_without_waiting(url: str) -> str:
    """Try one write on a connection that will not wait for the lock."""
    engine = create_engine(url, connect_args={"timeout": 0})
    try:
        async with engine.connect() as conn:
            await conn.execute(update(Counter).values(value=Counter.value + 1))
            await conn.commit()
            return "written"
    except OperationalError as exc:
        return str(exc.orig)
    finally:
        await engine.dispose()


async def test_a_held_write_lock_fails_an_impatient_writer_at_once(
    sqlite_url: str,
):
    """SQLite only: one writer per database; busy_timeout=0 never waits."""
    engine = await tables(sqlite_url)
    async with engine.connect() as holder:
        await holder.execute(update(Counter).values(value=1))
        assert await write_without_waiting(sqlite_url) == "database is locked"
        await holder.commit()
    assert await write_without_waiting(sqlite_url) == "written"
    await engine.dispose()


async def test_a_refused_update_holds_the_sqlite_write_lock_until_rollback(
    sqlite_url: str,
):
    """SQLite only: its 0-row UPDATE still took the database's write lock."""
    engine = await tables(sqlite_url)
    sessions = create_session_factory(engine)
    item_id = await create_item(sessions, "lamp")
    async with sessions() as session:
        with pytest.raises(VersionConflictError):
            await update_item_cas(session, item_id, 7, {"stock": 1})
        assert await write_without_waiting(sqlite_url) == "database is locked"
        await session.rollback()
        assert await write_without_waiting(sqlite_url) == "written"
    await engine.dispose()


@pytest.mark.parametrize("kind", ["write", "read"])
async def test_write_sessions_take_the_lock_at_the_first_read_and_read_sessions_never(
    sqlite_url: str, kind: str
):
    """SQLite only: the foundation's BEGIN IMMEDIATE for writes, a deferred
    BEGIN for reads (PostgreSQL has row locks and no such choice)."""
    engine = await tables(sqlite_url)
    factory = create_session_factory if kind == "write" else create_read_session_factory
    sessions = factory(engine)
    counter_id = await create_counter(create_session_factory(engine))
    async with sessions() as session:
        await session.get(Counter, counter_id)  # only a read so far
        expected = "database is locked" if kind == "write" else "written"
        assert await write_without_waiting(sqlite_url) == expected
    await engine.dispose()


async def test_write_transactions_keep_every_naive_write_on_sqlite(sqlite_url: str):
    """SQLite only: the cookbook's write transactions begin IMMEDIATE, so the
    naive read-modify-write runs one at a time. 10 writers: each waits for
    the lock in SQLite's sleeping busy handler."""
    engine = await tables(sqlite_url)
    sessions = create_session_factory(engine)
    counter_id = await create_counter(sessions)
    with recorded_sql(engine) as sql:
        await race(locked_writer(sessions, counter_id), FEW_WRITERS)
    assert await read_counter(sessions, counter_id) == FEW_WRITERS
    assert sql.count("BEGIN IMMEDIATE") == FEW_WRITERS
    await engine.dispose()


async def test_an_id_beyond_integer_is_a_database_error_on_postgres(
    postgres_url: str,
):
    """PostgreSQL only: why the endpoints bound the id (SQLite accepts it)."""
    engine = await tables(postgres_url)
    with pytest.raises(DBAPIError, match="out of int32 range"):
        async with create_session_factory(engine)() as session:
            await get_item(session, 2**31)
    await engine.dispose()


# --- over HTTP: ETag and If-Match -----------------------------------------


@asynccontextmanager
async def client_for(url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test"
        ) as client:
            yield client


async def new_item_url(client: httpx.AsyncClient) -> str:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    sessions: Sessions = transport.app.state.sessions  # type: ignore[attr-defined]
    item_id = await create_item(sessions, "desk", stock=10)
    return f"/items/{item_id}"


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(database_url) as client:
        yield client


@pytest.fixture
async def item_url(client: httpx.AsyncClient) -> str:
    return await new_item_url(client)


async def test_get_sends_the_version_as_a_strong_etag(
    client: httpx.AsyncClient, item_url: str
):
    reply = await client.get(item_url)
    assert reply.status_code == 200
    assert reply.headers["ETag"] == '"1"'
    assert reply.json() == {"id": 1, "name": "desk", "stock": 10, "version": 1}


async def test_patch_with_the_current_etag_updates_and_sends_the_new_one(
    client: httpx.AsyncClient, item_url: str
):
    reply = await client.patch(item_url, json={"stock": 7}, headers={"If-Match": '"1"'})
    assert reply.status_code == 200
    assert reply.headers["ETag"] == '"2"'
    assert reply.json()["stock"] == 7
    assert (await client.get(item_url)).headers["ETag"] == '"2"'


async def test_patch_with_a_stale_etag_is_412_and_changes_nothing(
    client: httpx.AsyncClient, item_url: str
):
    await client.patch(item_url, json={"stock": 7}, headers={"If-Match": '"1"'})
    reply = await client.patch(item_url, json={"stock": 8}, headers={"If-Match": '"1"'})
    assert reply.status_code == 412
    assert "ETag" not in reply.headers
    assert (await client.get(item_url)).json()["stock"] == 7


async def test_patch_without_a_usable_precondition_is_428(sqlite_url: str):
    """Decided before any SQL runs: one backend is enough."""
    async with client_for(sqlite_url) as client:
        url = await new_item_url(client)
        for body, headers in [
            ({"stock": 1}, {}),
            ({}, {}),
            ({"stock": 1}, {"If-Match": "*"}),  # "any version" proves nothing
            ({"stock": 1}, {"If-Match": " * "}),
        ]:
            reply = await client.patch(url, json=body, headers=headers)
            assert reply.status_code == 428, (body, headers)
        assert (await client.get(url)).json() == {
            "id": 1,
            "name": "desk",
            "stock": 10,
            "version": 1,
        }


async def test_patch_of_an_unknown_item_is_404(client: httpx.AsyncClient):
    reply = await client.patch(
        "/items/99", json={"stock": 1}, headers={"If-Match": '"1"'}
    )
    assert reply.status_code == 404
    assert reply.json() == {"detail": "item 99 does not exist"}
    assert (await client.get("/items/99")).status_code == 404


async def test_patch_with_a_stale_body_version_is_409(
    client: httpx.AsyncClient, item_url: str
):
    await client.patch(item_url, json={"stock": 7, "version": 1})
    reply = await client.patch(item_url, json={"stock": 8, "version": 1})
    assert reply.status_code == 409
    assert (await client.get(item_url)).json()["stock"] == 7


async def test_if_match_is_checked_rather_than_the_body_version(
    client: httpx.AsyncClient, item_url: str
):
    stale_header = await client.patch(
        item_url, json={"stock": 2, "version": 1}, headers={"If-Match": '"5"'}
    )
    fresh_header = await client.patch(
        item_url, json={"stock": 3, "version": 5}, headers={"If-Match": '"1"'}
    )
    assert (stale_header.status_code, fresh_header.status_code) == (412, 200)
    assert fresh_header.json() == {
        "id": 1,
        "name": "desk",
        "stock": 3,
        "version": 2,  # the body's version is proof, never a value to store
    }


async def test_an_if_match_that_names_no_version_is_412(
    sqlite_url: str,
):
    """Parsed before any SQL runs: one backend is enough."""
    async with client_for(sqlite_url) as client:
        url = await new_item_url(client)
        for if_match in ['W/"1"', "1", '"abc"', '"99999999999"', '"1', "", '"0"']:
            headers = {"If-Match": if_match}
            reply = await client.patch(url, json={"stock": 1}, headers=headers)
            assert reply.status_code == 412, if_match
        assert (await client.get(url)).json()["stock"] == 10


async def test_out_of_range_ids_are_422_not_a_database_error(
    client: httpx.AsyncClient,
):
    headers = {"If-Match": '"1"'}
    for item_id in ["0", "-1", str(2**31), str(10**30), "x"]:
        url = f"/items/{item_id}"
        reply = await client.patch(url, json={"stock": 1}, headers=headers)
        assert reply.status_code == 422, item_id
        assert (await client.get(url)).status_code == 422, item_id


async def test_invalid_patch_bodies_are_422(sqlite_url: str):
    """Validated before any SQL runs: one backend is enough."""
    bodies: list[dict[str, object]] = [
        {"stock": None},
        {"name": None},
        {"version": None, "stock": 1},
        {"stock": -1},
        {"stock": 2**31},
        {"name": ""},
        {"id": 5},
        {"version": 0, "stock": 1},
        {"version": 2**31, "stock": 1},
    ]
    async with client_for(sqlite_url) as client:
        url = await new_item_url(client)
        for body in bodies:
            headers = {"If-Match": '"1"'}
            reply = await client.patch(url, json=body, headers=headers)
            assert reply.status_code == 422, body
        assert (await client.get(url)).json()["version"] == 1


async def test_concurrent_patches_with_one_etag_let_exactly_one_win(
    client: httpx.AsyncClient, item_url: str
):
    replies = await asyncio.gather(
        *(
            client.patch(item_url, json={"stock": n}, headers={"If-Match": '"1"'})
            for n in range(10)
        )
    )
    statuses = sorted(reply.status_code for reply in replies)
    assert statuses == [200] + [412] * 9
    (winner,) = [r.json()["stock"] for r in replies if r.status_code == 200]
    final = (await client.get(item_url)).json()
    assert (final["stock"], final["version"]) == (winner, 2)


async def test_openapi_documents_every_status_of_the_item_routes(sqlite_url: str):
    """The schema is the same on both backends."""
    async with client_for(sqlite_url) as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
    item = paths["/items/{item_id}"]
    assert set(item["get"]["responses"]) == {"200", "404", "422"}
    restock = paths["/items/{item_id}/restock"]["post"]
    assert set(restock["responses"]) == {"200", "404", "409", "422"}
    assert set(item["patch"]["responses"]) == {
        "200",
        "404",
        "409",
        "412",
        "422",
        "428",
    }


async def test_patch_schema_allows_no_null(sqlite_url: str):
    """The schema is the same on both backends: a generated client must not
    be told that null is allowed, since the server answers it with 422."""
    async with client_for(sqlite_url) as client:
        schema = (await client.get("/openapi.json")).json()
    fields = schema["components"]["schemas"]["ItemPatch"]["properties"]
    assert set(fields) == {"name", "stock", "version"}
    for name, field in fields.items():
        assert "anyOf" not in field, name
        assert field["type"] in {"string", "integer"}, name
        assert "default" not in field, name


async def test_get_takes_no_write_lock_on_sqlite(sqlite_url: str):
    """SQLite only: GET reads through ReadSessionDep (a deferred BEGIN), so
    it answers while a writer holds the database's one write lock."""
    async with client_for(sqlite_url) as client:
        url = await new_item_url(client)
        holder = create_engine(sqlite_url)
        async with holder.begin() as conn:  # BEGIN IMMEDIATE: the write lock
            await conn.execute(update(Item).values(stock=Item.stock))
            reply = await client.get(url)
        await holder.dispose()
    assert (reply.status_code, reply.json()["stock"]) == (200, 10)


# --- an endpoint that retries ----------------------------------------------


def read_first_then_write(monkeypatch: pytest.MonkeyPatch, writers: int) -> list[int]:
    """Make the first `writers` reads of the item wait until all have read,
    so every first attempt writes on a stale version; returns a list that
    grows by one per read (one read per attempt)."""
    real_get_item = locking.get_item
    everyone_has_read = asyncio.Barrier(writers)
    reads: list[int] = []

    async def get_item(session: AsyncSession, item_id: int) -> Item:
        item = await real_get_item(session, item_id)
        reads.append(item.version)
        if len(reads) <= writers:
            await everyone_has_read.wait()
        return item

    monkeypatch.setattr(locking, "get_item", get_item)
    return reads


async def restock_concurrently(
    client: httpx.AsyncClient, url: str, requests: int
) -> list[int]:
    replies = await asyncio.gather(
        *(client.post(f"{url}/restock", json={"amount": 1}) for _ in range(requests))
    )
    return sorted(reply.status_code for reply in replies)


async def test_restock_endpoint_keeps_every_update_under_concurrent_requests(
    client: httpx.AsyncClient, item_url: str
):
    statuses = await restock_concurrently(client, item_url, FEW_WRITERS)
    assert statuses == [200] * FEW_WRITERS
    final = (await client.get(item_url)).json()
    assert (final["stock"], final["version"]) == (10 + FEW_WRITERS, 1 + FEW_WRITERS)


async def test_restock_endpoint_retries_every_conflict_on_postgres(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
):
    """PostgreSQL only: on SQLite the write transaction begins IMMEDIATE, so
    a request cannot read before another one commits and never conflicts."""
    reads = read_first_then_write(monkeypatch, FEW_WRITERS)
    async with client_for(postgres_url) as client:
        url = await new_item_url(client)
        statuses = await restock_concurrently(client, url, FEW_WRITERS)
        final = (await client.get(url)).json()
    assert statuses == [200] * FEW_WRITERS
    assert (final["stock"], final["version"]) == (10 + FEW_WRITERS, 1 + FEW_WRITERS)
    assert reads[:FEW_WRITERS] == [1] * FEW_WRITERS  # all read version 1 first
    assert len(reads) > FEW_WRITERS  # so conflicts happened, and were retried


async def test_without_retry_concurrent_restocks_conflict_on_postgres(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
):
    """PostgreSQL only, as above: one attempt each, the same interleaving."""
    read_first_then_write(monkeypatch, FEW_WRITERS)

    async def one_attempt(sessions: Sessions, work: Any) -> Any:
        return await retry_on_conflict(sessions, work, attempts=1)

    monkeypatch.setattr(locking, "retry_on_conflict", one_attempt)
    async with client_for(postgres_url) as client:
        url = await new_item_url(client)
        statuses = await restock_concurrently(client, url, FEW_WRITERS)
        final = (await client.get(url)).json()
    assert statuses == [200] + [409] * (FEW_WRITERS - 1)
    assert (final["stock"], final["version"]) == (11, 2)  # nothing lost, 9 refused


async def test_restock_beyond_the_integer_range_is_409_not_a_database_error(
    client: httpx.AsyncClient,
):
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    sessions: Sessions = transport.app.state.sessions  # type: ignore[attr-defined]
    item_id = await create_item(sessions, "full", stock=2**31 - 1)
    reply = await client.post(f"/items/{item_id}/restock", json={"amount": 1})
    assert reply.status_code == 409
    assert (await client.get(f"/items/{item_id}")).json()["stock"] == 2**31 - 1


async def test_a_write_that_finds_the_sqlite_lock_taken_is_503_with_retry_after(
    sqlite_url: str,
):
    """SQLite only: its database-wide write lock (timeout=0 in the URL: the
    app's connections fail at once instead of waiting 5 s)."""
    async with client_for(f"{sqlite_url}?timeout=0") as client:
        url = await new_item_url(client)
        holder = create_engine(sqlite_url)
        async with holder.begin() as conn:  # BEGIN IMMEDIATE: the write lock
            await conn.execute(update(Item).values(stock=Item.stock))
            reply = await client.patch(
                url, json={"stock": 1}, headers={"If-Match": '"1"'}
            )
        await holder.dispose()
        assert (await client.get(url)).json()["stock"] == 10
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "1"
    assert reply.json() == {"detail": "database busy: retry shortly"}

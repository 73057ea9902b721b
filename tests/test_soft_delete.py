"""Soft delete: the global filter on every read path, errors, restore, purge."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import exists, false, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased, joinedload, selectinload

from snippets.soft_delete import (
    LIVE_NAME,
    Base,
    Category,
    Item,
    ItemNotFound,
    NaiveStamp,
    NameTaken,
    Note,
    Problem,
    capture_sql,
    classify,
    create_app,
    create_database,
    create_engine,
    create_item,
    create_session_factory,
    get_item,
    list_trash,
    naive_count_items,
    naive_get_item,
    naive_list_items,
    naive_rename_item,
    naive_soft_delete,
    naive_utcnow,
    name_must_be_free,
    purge_deleted,
    query_plan,
    restore_item,
    skipping_deleted,
    soft_delete_item,
)

Sessions = async_sessionmaker[AsyncSession]
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LAMP, DESK, CHAIR = 1, 2, 3  # the rows create_database() adds


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await create_database(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> Sessions:
    return skipping_deleted(create_session_factory(engine))


@pytest.fixture
def plain_sessions(engine: AsyncEngine) -> Sessions:
    """What most tutorials use: no global filter."""
    return create_session_factory(engine)


async def trash(sessions: Sessions, *item_ids: int, now: datetime = NOW) -> None:
    async with sessions.begin() as session:
        for item_id in item_ids:
            await soft_delete_item(session, item_id, now=now)


async def stored(plain_sessions: Sessions) -> dict[int, tuple[str, datetime | None]]:
    """Every row as the table holds it, deleted or not."""
    async with plain_sessions() as session:
        items = (await session.scalars(select(Item))).all()
        return {item.id: (item.name, item.deleted_at) for item in items}


# --- the naive way -----------------------------------------------------------


async def test_naive_reads_return_a_deleted_row(plain_sessions: Sessions):
    async with plain_sessions.begin() as session:
        await naive_soft_delete(session, LAMP)
    async with plain_sessions() as session:
        assert [i.name for i in await naive_list_items(session)] == ["Desk", "Chair"]
        lamp = await naive_get_item(session, LAMP)
        assert lamp is not None
        assert lamp.deleted_at is not None
        assert await naive_count_items(session) == 3
        query = select(Category).options(selectinload(Category.items))
        category = (await session.scalars(query)).one()
        assert "Lamp" in [item.name for item in category.items]


async def test_naive_writes_edit_deleted_rows_and_ignore_missing_ids(
    plain_sessions: Sessions,
):
    async with plain_sessions.begin() as session:
        await naive_soft_delete(session, LAMP)
    first = (await stored(plain_sessions))[LAMP][1]
    async with plain_sessions.begin() as session:
        await naive_rename_item(session, LAMP, "edited")
        await naive_soft_delete(session, LAMP)  # no error
        await naive_soft_delete(session, 99)  # no error either
    name, deleted_at = (await stored(plain_sessions))[LAMP]
    assert name == "edited"
    assert deleted_at != first  # the first deletion date is lost


# --- the global filter ---------------------------------------------------------


async def test_every_query_read_path_skips_deleted_rows(sessions: Sessions):
    await trash(sessions, LAMP)
    async with sessions() as session:

        async def names(query) -> list[str]:
            return list((await session.scalars(query)).all())

        other = aliased(Item)
        seen = {
            "get": await session.get(Item, LAMP),
            "list": sorted(i.name for i in (await session.scalars(select(Item)))),
            "column select": sorted(await names(select(Item.name))),
            "filter": await names(select(Item.name).where(Item.name == "Lamp")),
            "like": await names(select(Item.name).where(Item.name.like("L%"))),
            "sort": await names(select(Item.name).order_by(Item.name.desc())),
            "page 1": await names(select(Item.name).order_by(Item.id).limit(1)),
            "page 2": await names(
                select(Item.name).order_by(Item.id).limit(1).offset(1)
            ),
            "page 3": await names(
                select(Item.name).order_by(Item.id).limit(1).offset(2)
            ),
            "count(*)": await session.scalar(select(func.count()).select_from(Item)),
            "count(id)": await session.scalar(select(func.count(Item.id))),
            "exists": await session.scalar(select(exists().where(Item.name == "Lamp"))),
            "subquery": sorted(
                await names(select(Item.name).where(Item.id.in_(select(Item.id))))
            ),
            "aliased": await names(select(other.name).where(other.id == LAMP)),
        }
    assert seen == {
        "get": None,
        "list": ["Chair", "Desk"],
        "column select": ["Chair", "Desk"],
        "filter": [],
        "like": [],
        "sort": ["Desk", "Chair"],
        "page 1": ["Desk"],
        "page 2": ["Chair"],
        "page 3": [],
        "count(*)": 2,
        "count(id)": 2,
        "exists": False,
        "subquery": ["Chair", "Desk"],
        "aliased": [],
    }


async def test_eager_loads_and_joins_skip_deleted_rows(sessions: Sessions):
    await trash(sessions, LAMP)
    async with sessions() as session:
        query = select(Category).options(selectinload(Category.items))
        selectin = (await session.scalars(query)).one().items
        session.expunge_all()  # so that joinedload really loads again
        query = select(Category).options(joinedload(Category.items))
        joined = (await session.scalars(query)).unique().one().items
        join = select(Category.name).join(Category.items)
        lamp_category = await session.scalars(join.where(Item.name == "Lamp"))
        per_category = select(
            Category.name,
            select(func.count(Item.id))
            .where(Item.category_id == Category.id)
            .scalar_subquery(),
        )
        counts = (await session.execute(per_category)).all()
    assert [item.name for item in selectin] == ["Desk", "Chair"]
    assert [item.name for item in joined] == ["Desk", "Chair"]
    assert lamp_category.all() == []
    assert [tuple(row) for row in counts] == [("Lighting", 2)]


async def test_filter_adds_deleted_at_is_null_to_the_sql(
    engine: AsyncEngine, sessions: Sessions
):
    async with sessions() as session:
        with capture_sql(engine) as sent:
            await session.scalars(select(Item))
            await session.scalar(select(func.count(Item.id)))
    selects = [s for s in sent if not s.statement.startswith("BEGIN")]
    assert len(selects) == 2
    assert all("items.deleted_at IS NULL" in s.statement for s in selects)


async def test_include_deleted_opts_in_one_statement_and_its_eager_loads(
    sessions: Sessions,
):
    await trash(sessions, LAMP)
    async with sessions() as session:
        everything = select(Item.name).execution_options(include_deleted=True)
        assert len((await session.scalars(everything)).all()) == 3
        assert len((await session.scalars(select(Item.name))).all()) == 2
        options = {"include_deleted": True}
        assert await session.get(Item, LAMP, execution_options=options)
        query = select(Category).options(selectinload(Category.items))
        query = query.execution_options(include_deleted=True)
        category = (await session.scalars(query)).one()
        assert [item.name for item in category.items] == ["Lamp", "Desk", "Chair"]


async def test_refresh_of_a_deleted_object_still_loads(sessions: Sessions):
    """Refreshes are column loads: filtering them would break any deleted object."""
    await trash(sessions, LAMP)
    async with sessions() as session:
        options = {"include_deleted": True}
        lamp = await session.get(Item, LAMP, execution_options=options)
        assert lamp is not None
        await session.refresh(lamp)
        assert lamp.deleted_at == NOW


async def test_get_returns_an_identity_map_copy_without_sql_and_get_item_does_not(
    engine: AsyncEngine, sessions: Sessions
):
    async with sessions() as session:
        desk = await get_item(session, DESK)
        await soft_delete_item(session, DESK)
        with capture_sql(engine) as sent:
            assert await session.get(Item, DESK) is desk  # the leak
        assert sent == []
        with pytest.raises(ItemNotFound, match="no live item 2"):
            await get_item(session, DESK)
        assert await session.get(Item, DESK, populate_existing=True) is None


# --- soft delete, time zones ---------------------------------------------------


async def test_soft_delete_of_a_deleted_or_missing_item_is_not_found(
    sessions: Sessions, plain_sessions: Sessions
):
    await trash(sessions, LAMP)
    before = await stored(plain_sessions)
    for item_id in (LAMP, 99):  # already deleted, never existed
        async with sessions() as session:
            with pytest.raises(ItemNotFound, match=f"no live item {item_id}"):
                await soft_delete_item(session, item_id, now=NOW + timedelta(1))
            await session.commit()
    assert await stored(plain_sessions) == before  # deleted_at kept


async def test_deleted_at_is_aware_utc_in_and_out(
    sessions: Sessions, plain_sessions: Sessions
):
    async with sessions() as session:
        with pytest.raises(StatementError, match="naive datetime"):
            await soft_delete_item(session, LAMP, now=datetime(2026, 6, 1))  # noqa: DTZ001
    paris = timezone(timedelta(hours=2))
    await trash(sessions, LAMP, now=datetime(2026, 6, 1, 14, 0, tzinfo=paris))
    deleted_at = (await stored(plain_sessions))[LAMP][1]
    assert deleted_at == NOW
    assert deleted_at is not None
    assert deleted_at.tzinfo is UTC


async def test_naive_utcnow_reads_back_naive_and_breaks_an_aware_comparison(
    plain_sessions: Sessions,
):
    async with plain_sessions.begin() as session:
        session.add(NaiveStamp(id=1, deleted_at=naive_utcnow()))
    async with plain_sessions() as session:
        stamp = await session.get(NaiveStamp, 1)
        assert stamp is not None
        assert stamp.deleted_at.tzinfo is None
        with pytest.raises(TypeError, match="offset-naive and offset-aware"):
            _ = stamp.deleted_at < datetime.now(UTC)


async def test_an_aware_time_in_a_plain_datetime_column_splits_the_backends(
    engine: AsyncEngine, plain_sessions: Sessions
):
    paris_noon = datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    async with plain_sessions() as session:
        session.add(NaiveStamp(id=1, deleted_at=paris_noon))
        if engine.dialect.name == "postgresql":
            with pytest.raises(DBAPIError, match="offset-naive and offset-aware"):
                await session.commit()
            return
        await session.commit()
        stored = await session.scalar(select(NaiveStamp.deleted_at))
    assert stored == datetime(2026, 6, 1, 12, 0)  # noqa: DTZ001 - the offset is gone
    assert stored.replace(tzinfo=UTC) != paris_noon  # read as UTC: 2 hours off


@pytest.fixture
def st_johns(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local zone: Newfoundland, UTC-03:30 in January."""
    monkeypatch.setenv("TZ", "America/St_Johns")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def test_asyncpg_stores_a_naive_datetime_in_timestamptz_as_local_time(
    postgres_url: str, st_johns: None
):
    """asyncpg-only: its timestamptz encoder converts with astimezone(utc),
    which reads a naive value as the process's local time."""
    engine = create_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE stamps (at timestamptz)"))
            noon = datetime(2026, 1, 15, 12, 0)  # noqa: DTZ001 - the trap
            await conn.execute(text("INSERT INTO stamps VALUES (:at)"), {"at": noon})
            stored = await conn.scalar(text("SELECT at FROM stamps"))
    finally:
        await engine.dispose()
    assert stored == datetime(2026, 1, 15, 15, 30, tzinfo=UTC)  # not 12:00 UTC


async def test_asyncpg_returns_utc_whatever_the_session_time_zone(postgres_url: str):
    """asyncpg-only: timestamptz comes back in UTC, not in TimeZone's zone."""
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SET TIME ZONE 'Asia/Kathmandu'"))
            value = await conn.scalar(
                text("SELECT timestamptz '2026-01-15 12:00:00+05:45'")
            )
            shown = await conn.scalar(
                text("SELECT (timestamptz '2026-01-15 12:00:00+05:45')::text")
            )
    finally:
        await engine.dispose()
    assert shown == "2026-01-15 12:00:00+05:45"  # the session's zone, in text
    assert value == datetime(2026, 1, 15, 6, 15, tzinfo=UTC)
    assert value.utcoffset() == timedelta(0)


async def test_utc_datetime_keeps_the_instant_whatever_the_process_zone(
    sessions: Sessions, st_johns: None
):
    kathmandu = timezone(timedelta(hours=5, minutes=45))
    instant = datetime(2026, 1, 15, 12, 0, tzinfo=kathmandu)
    await trash(sessions, LAMP, now=instant)
    async with sessions() as session:
        query = select(Item.deleted_at).execution_options(include_deleted=True)
        stored = await session.scalar(query.where(Item.id == LAMP))
        assert stored == instant
        assert stored is not None
        assert stored.tzinfo is UTC
        session.add(Item(name="Clock", deleted_at=datetime(2026, 1, 15, 12)))  # noqa: DTZ001
        with pytest.raises(StatementError, match="naive datetime"):
            await session.flush()


def meeting_points(
    sessions: Sessions,
) -> tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[object]]]:
    """Where two concurrent writers wait for each other.

    On PostgreSQL, inside their transactions: both hold a snapshot, then
    write. On SQLite a write transaction begins IMMEDIATE (the foundation):
    the second writer waits at BEGIN for the first to commit, so they meet
    just before it.
    """
    both_ready = asyncio.Barrier(2)

    async def nothing() -> None:
        return None

    if sessions.kw["bind"].dialect.name == "sqlite":
        return both_ready.wait, nothing
    return nothing, both_ready.wait


async def test_concurrent_deletes_of_one_item_let_exactly_one_win(
    sessions: Sessions, plain_sessions: Sessions
):
    before_begin, inside = meeting_points(sessions)

    async def delete(at: datetime) -> datetime:
        await before_begin()
        async with sessions.begin() as session:
            await session.scalar(select(func.count(Item.id)))  # open a connection
            await inside()
            await soft_delete_item(session, LAMP, now=at)
            return at

    first, second = NOW, NOW + timedelta(hours=1)
    results = await asyncio.gather(
        delete(first), delete(second), return_exceptions=True
    )
    won = [r for r in results if isinstance(r, datetime)]
    lost = [r for r in results if isinstance(r, ItemNotFound)]
    assert (len(won), len(lost)) == (1, 1), results
    assert (await stored(plain_sessions))[LAMP][1] == won[0]


# --- live-only unique name, restore ------------------------------------------


async def test_name_is_unique_among_live_rows_only(
    sessions: Sessions, plain_sessions: Sessions
):
    async with sessions() as session:
        with pytest.raises(NameTaken, match="'Lamp'") as caught:
            await create_item(session, "Lamp")
    cause = caught.value.__cause__
    assert isinstance(cause, IntegrityError)
    assert classify(cause, Base.metadata).constraint == LIVE_NAME
    await trash(sessions, LAMP)
    async with sessions.begin() as session:
        second = await create_item(session, "Lamp")
    await trash(sessions, second.id)  # two Lamps in the trash: allowed
    names = [name for name, _ in (await stored(plain_sessions)).values()]
    assert names.count("Lamp") == 2


async def test_only_the_live_name_index_is_reported_as_name_taken(
    sessions: Sessions,
):
    async with sessions() as session:
        with pytest.raises(IntegrityError) as caught:  # no category 99
            await create_item(session, "Vase", category_id=99)
    assert not isinstance(caught.value, NameTaken)
    assert classify(caught.value, Base.metadata).kind is Problem.FOREIGN_KEY
    async with sessions() as session:
        session.add(Category(name="Lighting"))  # another unique rule
        with pytest.raises(IntegrityError) as caught, name_must_be_free("no"):
            await session.flush()
    problem = classify(caught.value, Base.metadata)
    assert (problem.kind, problem.constraint) == (
        Problem.UNIQUE,
        "uq_categories_name",
    )


async def test_restore_brings_back_deleted_items_only(sessions: Sessions):
    await trash(sessions, LAMP)
    for item_id in (DESK, 99):  # live, missing
        async with sessions() as session:
            with pytest.raises(ItemNotFound, match=f"no deleted item {item_id}"):
                await restore_item(session, item_id)
    async with sessions.begin() as session:
        lamp = await restore_item(session, LAMP)
    assert (lamp.id, lamp.deleted_at) == (LAMP, None)
    async with sessions() as session:
        assert (await get_item(session, LAMP)).name == "Lamp"


async def test_restore_onto_a_taken_name_is_refused_and_changes_nothing(
    sessions: Sessions, plain_sessions: Sessions
):
    await trash(sessions, LAMP)
    async with sessions.begin() as session:
        await create_item(session, "Lamp")
    before = await stored(plain_sessions)
    with pytest.raises(NameTaken, match="item 1: its name is taken"):
        async with sessions.begin() as session:
            await restore_item(session, LAMP)
    assert await stored(plain_sessions) == before


async def test_concurrent_restores_of_one_name_let_exactly_one_win(
    sessions: Sessions,
):
    await trash(sessions, LAMP)
    async with sessions.begin() as session:
        second = await create_item(session, "Lamp")
    await trash(sessions, second.id)  # two Lamps in the trash
    before_begin, inside = meeting_points(sessions)

    async def restore(item_id: int) -> int:
        await before_begin()
        async with sessions.begin() as session:
            await session.scalar(select(func.count(Item.id)))  # open a connection
            await inside()
            return (await restore_item(session, item_id)).id

    results = await asyncio.gather(
        restore(LAMP), restore(second.id), return_exceptions=True
    )
    won = [r for r in results if isinstance(r, int)]
    lost = [r for r in results if isinstance(r, NameTaken)]
    assert (len(won), len(lost)) == (1, 1), results
    async with sessions() as session:
        live = await session.scalars(select(Item.id).where(Item.name == "Lamp"))
        assert live.all() == won


# --- trash and purge -----------------------------------------------------------


async def test_trash_lists_deleted_rows_newest_first_in_pages(sessions: Sessions):
    await trash(sessions, LAMP, now=NOW - timedelta(days=2))
    await trash(sessions, CHAIR, now=NOW - timedelta(days=1))
    async with sessions() as session:
        assert [i.name for i in await list_trash(session)] == ["Chair", "Lamp"]
        page = await list_trash(session, limit=1, offset=1)
        assert [i.name for i in page] == ["Lamp"]


async def test_purge_removes_rows_deleted_before_the_cutoff_and_no_live_row(
    sessions: Sessions, plain_sessions: Sessions
):
    await trash(sessions, LAMP, now=NOW - timedelta(days=40))
    await trash(sessions, DESK, now=NOW - timedelta(days=30))  # exactly at cutoff
    async with sessions.begin() as session:
        purged = await purge_deleted(session, older_than=timedelta(days=30), now=NOW)
    assert purged == [LAMP]
    assert sorted(await stored(plain_sessions)) == [DESK, CHAIR]
    async with sessions.begin() as session:  # the widest purge there is
        far_future = NOW + timedelta(days=10_000)
        purged = await purge_deleted(session, older_than=timedelta(0), now=far_future)
    assert purged == [DESK]
    assert sorted(await stored(plain_sessions)) == [CHAIR]  # live: kept


async def test_purge_refuses_a_negative_age():
    async with AsyncSession() as session:  # refused before any SQL
        with pytest.raises(ValueError, match="must not be negative"):
            await purge_deleted(session, older_than=timedelta(days=-1))


# --- query plans -----------------------------------------------------------------


async def test_sqlite_plan_uses_the_partial_index_only_with_the_filter(
    sqlite_url: str,
):
    """EXPLAIN QUERY PLAN's wording is SQLite's own."""
    engine = await create_database(sqlite_url)
    sessions = skipping_deleted(create_session_factory(engine))
    try:
        async with sessions() as session:
            live = select(Item).where(Item.name == "Lamp")
            every = live.execution_options(include_deleted=True)
            assert await query_plan(engine, session, live) == [
                "SEARCH items USING INDEX uq_items_live_name (name=?)"
            ]
            assert await query_plan(engine, session, every) == ["SCAN items"]
    finally:
        await engine.dispose()


# --8<-- [start:pg_plan]
async def test_postgres_plan_uses_the_partial_index_only_with_the_filter(
    postgres_url: str,
):
    """PostgreSQL's EXPLAIN output differs from SQLite's EXPLAIN QUERY PLAN."""
    engine = await create_database(postgres_url)
    sessions = skipping_deleted(create_session_factory(engine))
    try:
        async with sessions() as session:
            # A tiny table may be read by a sequential scan: forbid it, so
            # the plan shows which indexes the query *can* use.
            await session.execute(text("SET enable_seqscan = off"))
            live = select(Item).where(Item.name == "Lamp")
            every = live.execution_options(include_deleted=True)
            plan = await query_plan(engine, session, live)
            assert plan[0].startswith("Index Scan using uq_items_live_name")
            plan = await query_plan(engine, session, every)
            assert "uq_items_live_name" not in "\n".join(plan)
    finally:
        await engine.dispose()


# --8<-- [end:pg_plan]


async def test_is_false_defeats_the_partial_index(
    engine: AsyncEngine, sessions: Sessions
):
    async with sessions() as session:
        if engine.dialect.name == "postgresql":  # see the test above
            await session.execute(text("SET enable_seqscan = off"))
        good = select(Note).where(Note.is_deleted == false()).order_by(Note.title)
        bad = select(Note).where(Note.is_deleted.is_(False)).order_by(Note.title)
        good_plan = "\n".join(await query_plan(engine, session, good))
        bad_plan = "\n".join(await query_plan(engine, session, bad))
    assert "ix_notes_live_title" in good_plan
    assert "ix_notes_live_title" not in bad_plan


# --- over HTTP --------------------------------------------------------------------


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(database_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test"
        ) as client:
            yield client


async def test_http_delete_is_204_then_404_and_moves_the_item_to_the_trash(
    client: httpx.AsyncClient,
):
    assert (await client.post("/items", json={"name": "Lamp"})).status_code == 201
    assert (await client.post("/items", json={"name": "Desk"})).status_code == 201
    assert (await client.delete("/items/1")).status_code == 204
    again = await client.delete("/items/1")
    assert (again.status_code, again.json()) == (404, {"detail": "no live item 1"})
    assert (await client.get("/items/1")).status_code == 404
    assert (await client.delete("/items/9")).status_code == 404
    trash = (await client.get("/items/deleted")).json()
    assert [item["name"] for item in trash] == ["Lamp"]
    assert trash[0]["deleted_at"].endswith("+00:00")  # UTCTimestamp: UTC


async def test_http_live_name_conflicts_are_409_and_restore_is_200_or_404(
    client: httpx.AsyncClient,
):
    await client.post("/items", json={"name": "Lamp"})
    duplicate = await client.post("/items", json={"name": "Lamp"})
    assert (duplicate.status_code, duplicate.json()) == (
        409,
        {"detail": "a live item is named 'Lamp'"},
    )
    assert (await client.post("/items/1/restore")).status_code == 404  # live
    await client.delete("/items/1")
    new_lamp = (await client.post("/items", json={"name": "Lamp"})).json()
    taken = await client.post("/items/1/restore")
    assert (taken.status_code, taken.json()) == (
        409,
        {"detail": "item 1: its name is taken"},
    )
    await client.delete(f"/items/{new_lamp['id']}")  # not 2 on PostgreSQL
    restored = await client.post("/items/1/restore")
    assert restored.status_code == 200
    assert restored.json() == {"id": 1, "name": "Lamp", "deleted_at": None}
    assert (await client.post("/items/9/restore")).status_code == 404


async def test_http_hostile_input_is_422_never_500(client: httpx.AsyncClient):
    paths = [
        "/items/0",
        "/items/-1",
        "/items/2147483648",  # beyond the INTEGER column: a 500 on PostgreSQL
        "/items/99999999999999999999",
        "/items/abc",
        "/items/deleted?limit=0",
        "/items/deleted?limit=101",
        "/items/deleted?offset=-1",
    ]
    statuses = {}
    for path in paths:
        statuses[f"GET {path}"] = (await client.get(path)).status_code
        if not path.startswith("/items/deleted"):
            reply = await client.delete(path)
            statuses[f"DELETE {path}"] = reply.status_code
            reply = await client.post(f"{path}/restore")
            statuses[f"POST {path}/restore"] = reply.status_code
    bodies = [
        {},
        {"name": ""},
        {"name": "x" * 201},
        {"name": None},
        {"name": "a", "id": 5},
        {"name": "a", "deleted_at": None},
    ]
    for body in bodies:
        reply = await client.post("/items", json=body)
        statuses[f"POST /items {body}"] = reply.status_code
    assert set(statuses.values()) == {422}, statuses

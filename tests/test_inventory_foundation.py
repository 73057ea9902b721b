"""The reference API on the cookbook's foundation: database errors answered by
the classifier, UTC datetimes, the Filtering recipe's search, the Sorting
recipe's name order and indexes, the keyset rule. Both backends.
"""

from __future__ import annotations

import inspect
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from snippets.inventory import create_app, crud
from snippets.inventory.database import create_engine
from snippets.inventory.listing import NULLABLE, SORTABLE, parse_item_sort
from snippets.inventory.models import Base, Item, Order, OrderLine
from snippets.inventory.routers import items

Sessions = async_sessionmaker[AsyncSession]

# FastAPI builds an app's routes lazily: the tests share one app.
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


def body(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "category": "kitchen", "price": "2.00", **fields}


async def create(client: httpx.AsyncClient, *names: str) -> None:
    reply = await client.post("/items/bulk", json={"items": [body(n) for n in names]})
    assert reply.status_code == 201, reply.text


async def ids(client: httpx.AsyncClient, **params: Any) -> list[int]:
    reply = await client.get("/items", params={"limit": 100, **params})
    assert reply.status_code == 200, reply.text
    return [item["id"] for item in reply.json()["items"]]


# --- database errors: each answered by its own status ---------------------------


@pytest.mark.parametrize(
    ("bad", "code", "detail"),
    [
        ({"stock": -1}, 422, "ck_items_stock_not_negative: breaks a check constraint"),
        ({"category": None}, 422, "category: breaks a not null constraint"),
        ({"id": 2}, 409, "id already exists"),
    ],
    ids=["check", "not null", "primary key"],
)
async def test_a_constraint_violation_is_answered_for_what_it_is_not_as_a_duplicate(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    bad: dict[str, Any],
    code: int,
    detail: str,
):
    """Validated input cannot reach these constraints: a wrapped data-layer
    function sends a value the schema would refuse. The old code answered
    each of them 409 "already used by a live item"."""
    await create(client, "a", "b")
    real = crud.update_item

    async def corrupted(
        session: AsyncSession, item_id: int, changes: Any, expected: int
    ) -> Item:
        return await real(session, item_id, {**changes, **bad}, expected)

    monkeypatch.setattr(crud, "update_item", corrupted)
    reply = await client.patch(
        "/items/1", json={"stock": 3}, headers={"If-Match": '"1"'}
    )
    assert (reply.status_code, reply.json()) == (code, {"detail": detail})
    monkeypatch.undo()
    item = (await client.get("/items/1")).json()
    assert (item["version"], item["stock"]) == (1, 0)  # rolled back


async def test_only_the_live_name_index_answers_name_taken(client: httpx.AsyncClient):
    """A rename onto a live name passes no pre-check: the unique index stops
    it, and the classifier names it."""
    await create(client, "a", "b")
    reply = await client.patch("/items/2", json={"name": "a", "version": 1})
    assert reply.status_code == 409
    assert reply.json() == {"detail": "already used by a live item: 'a'"}
    reply = await client.patch(
        "/items/bulk", json={"ids": [1, 2], "values": {"name": "c"}}
    )
    assert reply.status_code == 409
    assert reply.json() == {"detail": "already used by a live item: 'c'"}


async def test_a_foreign_key_violation_is_409_naming_the_reference(
    client: httpx.AsyncClient,
    sessions: Sessions,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
):
    """An order line naming no item: unreachable through validated input (the
    data layer checks every item first), so a wrapped create_order adds one."""
    reply = await client.post("/items", json=body("a", stock=5))
    assert reply.status_code == 201
    real = crud.create_order

    async def dangling(session: AsyncSession, customer: str, lines: Any) -> Order:
        order = await real(session, customer, lines)
        session.add(
            OrderLine(
                order_id=order.id,
                line_no=99,
                item_id=999,
                quantity=1,
                unit_price=Decimal(1),
            )
        )
        await session.flush()
        return order

    monkeypatch.setattr(crud, "create_order", dangling)
    order = {"customer": "Ada", "lines": [{"item_id": 1, "quantity": 1}]}
    reply = await client.post("/orders", json=order)
    assert reply.status_code == 409
    missing = "references a row that does not exist"
    if database_url.startswith("postgresql"):  # SQLite does not say which
        missing = f"item_id: {missing}"  # the constraint's column
    assert reply.json() == {"detail": missing}
    async with sessions() as session:
        assert (await session.scalars(select(Order.id))).all() == []
        assert await session.scalar(select(Item.stock)) == 5
        assert await session.scalar(select(Item.version)) == 1


@pytest.fixture
async def busy_error(database_url: str) -> DBAPIError:
    """A real "database busy" error of the backend, caught once.

    SQLite: a write while another connection holds the write lock, with no
    busy timeout. PostgreSQL: an UPDATE of a locked row with a lock timeout.
    """
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        await conn.execute(
            text(
                "INSERT INTO items (name, name_search, category, status, price,"
                " stock, version, created_at, updated_at) VALUES ('a', 'a', 'c',"
                " 'draft', 0, 0, 1, '2026-01-01', '2026-01-01')"
            )
        )
    await engine.dispose()
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        holder = sqlite3.connect(url.database or "", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        impatient = create_engine(database_url, connect_args={"timeout": 0})
    else:
        holder_engine = create_engine(database_url)
        holder_conn = await holder_engine.connect()
        await holder_conn.execute(text("SELECT id FROM items FOR UPDATE"))
        impatient = create_engine(
            database_url, connect_args={"server_settings": {"lock_timeout": "50"}}
        )
    try:
        async with impatient.begin() as conn:
            await conn.execute(update(Item.__table__).values(stock=1))
    except DBAPIError as exc:
        return exc
    finally:
        await impatient.dispose()
        if url.get_backend_name() == "sqlite":
            holder.rollback()
            holder.close()
        else:
            await holder_conn.close()
            await holder_engine.dispose()
    raise AssertionError("the database was not busy")


async def test_a_busy_database_is_503_with_retry_after(
    client: httpx.AsyncClient, busy_error: DBAPIError, monkeypatch: pytest.MonkeyPatch
):
    async def busy(*_: Any) -> Item:
        raise busy_error

    monkeypatch.setattr(crud, "update_item", busy)
    reply = await client.patch(
        "/items/1", json={"stock": 3}, headers={"If-Match": '"1"'}
    )
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "1"
    assert reply.json() == {"detail": "database busy: retry shortly"}


# --- UTC datetimes --------------------------------------------------------------


async def test_a_naive_datetime_is_refused_by_the_column_type(
    client: httpx.AsyncClient, sessions: Sessions
):
    naive = datetime(2026, 1, 1, 12, 0)  # noqa: DTZ001 (the value under test)
    async with sessions() as session:
        session.add(
            Item(
                name="a",
                category="c",
                status="draft",
                price=Decimal(1),
                stock=0,
                created_at=naive,
                updated_at=naive,
            )
        )
        with pytest.raises(StatementError, match="naive datetime"):
            await session.flush()
    reply = await client.get("/items", params={"created_after": naive.isoformat()})
    assert reply.status_code == 422  # and from clients: an offset is required


@pytest.fixture
def st_johns() -> Iterator[None]:
    """The process's local time zone set to UTC-03:30 for one test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", "America/St_Johns")
        time.tzset()
        yield
    time.tzset()


async def test_asyncpg_reads_a_naive_datetime_as_local_time(
    postgres_url: str, st_johns: None
):
    """PostgreSQL only: the driver's encoding of a naive value (asyncpg's
    timestamptz codec calls `astimezone(utc)`: local time, not UTC)."""
    naive = datetime(2026, 1, 1, 12, 0)  # noqa: DTZ001 (the value under test)
    conn = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
    try:
        stored = await conn.fetchval("SELECT $1::timestamptz", naive)
    finally:
        await conn.close()
    local = naive.replace(tzinfo=ZoneInfo("America/St_Johns"))
    assert stored == local  # 15:30 UTC
    assert stored != naive.replace(tzinfo=UTC)


async def test_postgres_values_come_back_in_utc_whatever_the_session_time_zone(
    postgres_url: str,
):
    """PostgreSQL only: asyncpg decodes timestamptz to UTC itself."""
    app = create_app(postgres_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            created = (await c.post("/items", json=body("a"))).json()["created_at"]
    conn = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
    try:
        await conn.execute("SET TIME ZONE 'America/St_Johns'")
        value = await conn.fetchval("SELECT created_at FROM items")
        shown = await conn.fetchval("SELECT created_at::text FROM items")
    finally:
        await conn.close()
    assert value.utcoffset() == timedelta(0)
    assert value.isoformat() == created
    assert shown.endswith("-03:30")  # the session's zone shows only in text


# --- the Filtering recipe's search ---------------------------------------------


async def test_q_finds_names_in_any_case_beyond_ascii_also_after_renames(
    client: httpx.AsyncClient,
):
    await create(client, "Éclair vase", "éclair plate", "Mug", "50% off_sale")
    assert await ids(client, q="ÉCLAIR") == [1, 2]
    assert await ids(client, q="éclair p") == [2]
    assert await ids(client, q="%") == [4]
    assert await ids(client, q="_") == [4]
    reply = await client.patch("/items/3", json={"name": "Große Tasse", "version": 1})
    assert reply.status_code == 200
    assert await ids(client, q="GROSSE") == [3]  # casefold: ß is ss
    assert await ids(client, q="mug") == []
    reply = await client.patch(
        "/items/bulk", json={"ids": [1], "values": {"name": "Crème pot"}}
    )
    assert reply.status_code == 200
    assert await ids(client, q="CRÈME") == [1]
    assert await ids(client, q="ÉCLAIR") == [2]


# --- the Sorting recipe: lower(name), the id tiebreaker, indexes ---------------


async def test_names_sort_by_lower_with_the_id_as_tiebreaker_in_lists_and_walks(
    client: httpx.AsyncClient,
):
    await create(client, "banana", "Apple", "apple", "Banana", "cherry")
    assert await ids(client, sort="name") == [2, 3, 1, 4, 5]
    assert await ids(client, sort="-name") == [5, 1, 4, 2, 3]
    for sort in ("name", "-name", "-price,name", "category,-name"):
        seen: list[int] = []
        cursor = None
        while True:
            params = {
                "sort": sort,
                "limit": 2,
                **({"cursor": cursor} if cursor else {}),
            }
            page = (await client.get("/items/keyset", params=params)).json()
            seen += [item["id"] for item in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                break
        assert seen == await ids(client, sort=sort), sort  # once each, in order


async def test_names_outside_ascii_sort_after_z_on_sqlite(sqlite_url: str):
    """SQLite only: its lower() folds ASCII letters only, as the page warns."""
    app = create_app(sqlite_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            await create(c, "Éclair", "zebra")
            assert await ids(c, sort="name") == [2, 1]


def test_no_sortable_column_is_nullable_so_the_null_rule_never_acts():
    columns = Item.__table__.c
    nullable = {
        field for field in SORTABLE if field != "name" and columns[field].nullable
    }
    assert nullable == set(NULLABLE) == set()
    assert columns["name"].nullable is False


async def test_every_sort_field_reads_an_index_on_sqlite(sqlite_url: str):
    """SQLite only: the plans of `sort=field` and `sort=-field`. Ascending
    reads the index in order; descending reads it backwards and sorts only
    the `id` tiebreaker within equal values ("RIGHT PART OF ORDER BY")."""
    engine = create_engine(sqlite_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        for field in SORTABLE:
            for sort in (field, f"-{field}"):
                keys = [by.key() for by in parse_item_sort(sort)]
                query = (
                    select(Item)
                    .where(Item.deleted_at.is_(None))
                    .order_by(*(key.order_by() for key in keys))
                    .limit(20)
                )
                sql = str(
                    query.compile(
                        engine.sync_engine, compile_kwargs={"literal_binds": True}
                    )
                )
                rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")
                plan = " / ".join(row[-1] for row in rows)
                assert "TEMP B-TREE FOR ORDER BY" not in plan, plan  # no full sort
                if not sort.startswith("-"):
                    assert "TEMP B-TREE" not in plan, plan  # no sort at all
                if field != "id":
                    assert "USING INDEX" in plan, plan
    await engine.dispose()


# --- OpenAPI: PATCH bodies offer no null ----------------------------------------


def test_no_patch_body_in_the_openapi_schema_allows_null():
    schema = create_app("sqlite+aiosqlite:///unused.db").openapi()
    models = schema["components"]["schemas"]

    def nullable(node: Any, seen: frozenset[str] = frozenset()) -> bool:
        if isinstance(node, dict):
            if node.get("type") == "null" or node.get("nullable") is True:
                return True
            ref = node.get("$ref")
            if ref is not None:
                name = ref.rsplit("/", 1)[1]
                return name not in seen and nullable(models[name], seen | {name})
            return any(nullable(value, seen) for value in node.values())
        if isinstance(node, list):
            return any(nullable(value, seen) for value in node)
        return False

    patches = [
        operation["requestBody"]["content"]["application/json"]["schema"]
        for operations in schema["paths"].values()
        for method, operation in operations.items()
        if method == "patch"
    ]
    assert len(patches) == 2
    assert not any(nullable(body) for body in patches)
    bulk = models["BulkPatch"]["properties"]["expected_versions"]
    assert bulk["type"] == "object"
    assert "expected_versions" not in models["BulkPatch"].get("required", [])


def test_list_dependencies_run_on_the_event_loop_not_in_a_thread():
    """FastAPI runs a plain `def` dependency in a worker thread: the list's
    own dependencies are `async def`, so a list request makes no thread hop
    (benchmarks/peers: 2 hops a request before)."""
    for dependency in (items.item_filters, items.item_sort, items.cursor_key):
        assert inspect.iscoroutinefunction(dependency), dependency.__name__

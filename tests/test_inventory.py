"""The reference API: every route and status code of its contract, both backends.

Each test builds the app on a fresh database; the many invalid inputs of one
route share a test (and a database) to keep the suite fast.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from snippets.inventory import create_app
from snippets.inventory.database import SecondStatementError
from snippets.inventory.models import Item, Order, OrderLine
from snippets.inventory.settings import DEFAULT_DATABASE_URL

Sessions = async_sessionmaker[AsyncSession]


# FastAPI builds an app's routes (and their validators) lazily, which costs
# more than a test: the tests share one app, pointed at a new database each.
APP = create_app()
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    APP.state.settings = replace(APP.state.settings, database_url=database_url)
    async with APP.router.lifespan_context(APP):
        yield APP


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # raise_app_exceptions=False: a crash is a 500 response, as on a server
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


@pytest.fixture
def sessions(app: FastAPI) -> Sessions:
    return app.state.sessions  # type: ignore[no-any-return]


def body(name: str = "Mug", **fields: Any) -> dict[str, Any]:
    return {"name": name, "category": "kitchen", "price": "12.50", **fields}


async def create(client: httpx.AsyncClient, name: str = "Mug", **fields: Any):
    reply = await client.post("/items", json=body(name, **fields))
    assert reply.status_code == 201, reply.text
    return reply.json()


async def count(sessions: Sessions, model: type) -> int:
    async with sessions() as session:
        query = select(func.count()).select_from(model)
        return int(await session.scalar(query) or 0)


async def versions(sessions: Sessions) -> dict[int, tuple[int, int]]:
    """id -> (version, stock) of every item, deleted ones included."""
    async with sessions() as session:
        query = select(Item.id, Item.version, Item.stock).execution_options(
            include_deleted=True
        )
        return {i: (v, s) for i, v, s in (await session.execute(query)).all()}


def named(reply: httpx.Response) -> list[str]:
    """The parameter or field each problem of a 422 is about."""
    return [str(error["loc"][1]) for error in reply.json()["detail"]]


# --- create_app ----------------------------------------------------------------


def test_database_url_defaults_to_env_then_local_sqlite(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert create_app().state.settings.database_url == DEFAULT_DATABASE_URL
    assert DEFAULT_DATABASE_URL == "sqlite+aiosqlite:///./inventory.db"
    monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:///env.db")
    assert create_app().state.settings.database_url.endswith("/env.db")
    explicit = create_app("sqlite+aiosqlite:///x.db")
    assert explicit.state.settings.database_url == "sqlite+aiosqlite:///x.db"


def test_pool_size_defaults_to_20_and_refuses_a_bad_value(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.delenv("INVENTORY_POOL_SIZE", raising=False)
    assert create_app().state.settings.pool_size == 20
    monkeypatch.setenv("INVENTORY_POOL_SIZE", "8")
    assert create_app().state.settings.pool_size == 8
    for bad in ("0", "-3", "ten", ""):
        monkeypatch.setenv("INVENTORY_POOL_SIZE", bad)
        with pytest.raises(ValueError, match="INVENTORY_POOL_SIZE must be a pos"):
            create_app()


async def test_the_engine_keeps_pool_size_connections(
    monkeypatch: pytest.MonkeyPatch, database_url: str
):
    monkeypatch.setenv("INVENTORY_POOL_SIZE", "7")
    app = create_app(database_url)
    async with app.router.lifespan_context(app):
        assert app.state.sessions.kw["bind"].pool.size() == 7


def test_make_app_serves_the_api_and_its_openapi_ui(tmp_path: Path, free_port: int):
    """What `make app` runs, on a free port, against a database in tmp_path."""
    recipe = (ROOT / "Makefile").read_text().split("\napp:", 1)[1]
    command = recipe.splitlines()[1].split()
    assert command[1:4] == ["snippets.inventory:app", "--host", "127.0.0.1"]
    port = free_port
    uvicorn = Path(sys.executable).parent / "uvicorn"
    args = [str(uvicorn), *command[1:-1], str(port)]
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/app.db"}
    server = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        docs = None
        for _ in range(100):
            try:
                docs = httpx.get(f"{base}/docs")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert docs is not None, "uvicorn did not answer within 10 s"
        assert docs.status_code == 200
        assert "swagger-ui" in docs.text
        assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "Inventory"
        created = httpx.post(f"{base}/items", json=body("Lamp"))
        assert created.status_code == 201
        assert created.headers["etag"] == '"1"'
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert (tmp_path / "app.db").exists()


async def test_lifespan_creates_missing_tables_and_keeps_existing_data(
    database_url: str,
):
    for run in range(2):  # a restart finds its tables and its data
        app = create_app(database_url)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client,
        ):
            if run == 0:
                await create(client)
            assert (await client.get("/items")).json()["total"] == 1


# --- POST /items ---------------------------------------------------------------


async def test_create_returns_201_the_item_and_its_etag(client: httpx.AsyncClient):
    reply = await client.post("/items", json=body(status="active", stock=3))
    assert reply.status_code == 201
    item = reply.json()
    assert reply.headers["ETag"] == '"1"'
    assert {k: v for k, v in item.items() if not k.endswith("_at")} == {
        "id": 1,
        "name": "Mug",
        "category": "kitchen",
        "status": "active",
        "price": "12.50",
        "stock": 3,
        "version": 1,
    }
    assert item["created_at"] == item["updated_at"]
    assert item["created_at"].endswith("+00:00")
    created = datetime.fromisoformat(item["created_at"])
    assert abs(created - datetime.now(UTC)) < timedelta(minutes=1)


async def test_create_defaults_bounds_and_exact_names(client: httpx.AsyncClient):
    item = await create(client)
    assert (item["status"], item["stock"]) == ("draft", 0)
    for name in ("mug", "Mug ", "MUG"):  # names are compared exactly
        await create(client, name)
    top = await create(
        client, "x" * 200, category="c" * 50, price="999999999.99", stock=2**31 - 1
    )
    assert (top["price"], top["stock"]) == ("999999999.99", 2**31 - 1)
    assert (await create(client, "free", price=0))["price"] == "0.00"
    assert (await create(client, "float", price=0.1))["price"] == "0.10"


async def test_create_with_a_live_name_is_409(
    client: httpx.AsyncClient, sessions: Sessions
):
    await create(client, "Mug")
    reply = await client.post("/items", json=body("Mug"))
    assert reply.status_code == 409
    assert reply.json() == {"detail": "already used by a live item: 'Mug'"}
    assert await count(sessions, Item) == 1


INVALID_ITEM_FIELDS = [
    {"colour": "red"},
    {"id": 7},
    {"version": 3},
    {"created_at": "2024-01-01T00:00:00+00:00"},
    {"status": None},
    {"stock": None},
    {"name": None},
    {"name": ""},
    {"name": "x" * 201},
    {"category": ""},
    {"category": "x" * 51},
    {"status": "gone"},
    {"price": "1.234"},
    {"price": -1},
    {"price": 10**9},
    {"price": "NaN"},
    {"stock": -1},
    {"stock": 2**31},
    {"stock": 1.5},
]


async def test_invalid_item_is_422_naming_the_field_and_creates_nothing(
    client: httpx.AsyncClient, sessions: Sessions
):
    for fields in INVALID_ITEM_FIELDS:
        reply = await client.post("/items", json={**body(), **fields})
        assert reply.status_code == 422, fields
        assert named(reply) == list(fields), fields
    reply = await client.post("/items", json={"name": "Mug", "category": "k"})
    assert (reply.status_code, named(reply)) == (422, ["price"])
    assert await count(sessions, Item) == 0


# --- GET /items/{id} -----------------------------------------------------------


async def test_read_returns_the_item_with_its_etag_404_if_missing_or_deleted(
    client: httpx.AsyncClient,
):
    item = await create(client)
    reply = await client.get("/items/1")
    assert (reply.status_code, reply.json()) == (200, item)
    assert reply.headers["ETag"] == '"1"'
    assert (await client.get("/items/2")).status_code == 404
    assert (await client.delete("/items/1")).status_code == 204
    reply = await client.get("/items/1")
    assert reply.status_code == 404
    assert reply.json() == {"detail": "unknown or deleted items: 1"}


# --- PATCH /items/{id} ---------------------------------------------------------


async def test_patch_changes_only_what_is_sent_and_bumps_the_version(
    client: httpx.AsyncClient,
):
    item = await create(client, stock=4)
    reply = await client.patch(
        "/items/1", json={"price": "9.90"}, headers={"If-Match": '"1"'}
    )
    assert reply.status_code == 200
    assert reply.headers["ETag"] == '"2"'
    updated = reply.json()
    assert updated == {
        **item,
        "price": "9.90",
        "version": 2,
        "updated_at": updated["updated_at"],
    }
    assert updated["updated_at"] > item["updated_at"]
    assert updated["updated_at"].endswith("+00:00")
    assert (await client.get("/items/1")).json() == updated

    by_body = await client.patch(
        "/items/1", json={"name": "Cup", "status": "archived", "version": 2}
    )
    assert by_body.status_code == 200
    assert (by_body.json()["name"], by_body.json()["status"]) == ("Cup", "archived")
    assert by_body.headers["ETag"] == '"3"'

    empty = await client.patch("/items/1", json={}, headers={"If-Match": '"3"'})
    assert (empty.status_code, empty.json()["version"]) == (200, 4)  # a write


async def test_stale_if_match_is_412_stale_version_409_neither_428(
    client: httpx.AsyncClient,
):
    await create(client)
    first = await client.patch(
        "/items/1", json={"stock": 1}, headers={"If-Match": '"1"'}
    )
    assert first.status_code == 200
    for etag in ('"1"', '"3"', "*", "2", 'W/"2"', '"2", "1"', '"99999999999"'):
        stale = await client.patch(
            "/items/1", json={"stock": 9}, headers={"If-Match": etag}
        )
        assert stale.status_code == 412, etag
    stale = await client.patch("/items/1", json={"stock": 9, "version": 1})
    assert stale.status_code == 409
    assert stale.json() == {"detail": "item 1 is at version 2, not 1"}
    blind = await client.patch("/items/1", json={"stock": 9})
    assert blind.status_code == 428
    item = (await client.get("/items/1")).json()
    assert (item["stock"], item["version"]) == (1, 2)  # nothing changed

    # Both sent: If-Match is the one checked.
    fresh_header = await client.patch(
        "/items/1", json={"stock": 2, "version": 1}, headers={"If-Match": '"2"'}
    )
    assert fresh_header.status_code == 200
    stale_header = await client.patch(
        "/items/1", json={"stock": 3, "version": 3}, headers={"If-Match": '"2"'}
    )
    assert stale_header.status_code == 412


async def test_patch_of_other_fields_or_null_is_422(client: httpx.AsyncClient):
    await create(client)
    for fields in [
        {"id": 5},
        {"created_at": "2024-01-01T00:00:00+00:00"},
        {"updated_at": "2024-01-01T00:00:00+00:00"},
        {"deleted_at": None},
        {"colour": "red"},
        {"name": None},
        {"price": None},
        {"status": None},
        {"version": None},
        {"stock": -1},
        {"version": 0},
    ]:
        reply = await client.patch("/items/1", json=fields, headers={"If-Match": '"1"'})
        assert reply.status_code == 422, fields
        assert named(reply) == list(fields), fields
    assert (await client.get("/items/1")).json()["version"] == 1


async def test_rename_onto_a_live_name_is_409_and_missing_item_404(
    client: httpx.AsyncClient,
):
    for name in ("Mug", "Cup", "Bowl"):
        await create(client, name)
    taken = await client.patch("/items/1", json={"name": "Cup", "version": 1})
    assert taken.status_code == 409
    assert (await client.delete("/items/3")).status_code == 204
    freed = await client.patch("/items/1", json={"name": "Bowl", "version": 1})
    assert freed.status_code == 200  # a deleted item frees its name
    for item_id in (3, 4):  # deleted, never existed
        reply = await client.patch(
            f"/items/{item_id}", json={"stock": 1}, headers={"If-Match": '"2"'}
        )
        assert reply.status_code == 404


# --- DELETE, restore, trash ----------------------------------------------------


async def test_delete_is_soft_and_bumps_the_version(
    client: httpx.AsyncClient, sessions: Sessions
):
    await create(client)
    reply = await client.delete("/items/1")
    assert (reply.status_code, reply.content) == (204, b"")
    assert (await client.get("/items/1")).status_code == 404
    assert await versions(sessions) == {1: (2, 0)}  # still stored
    assert (await client.delete("/items/1")).status_code == 404
    assert (await client.delete("/items/2")).status_code == 404
    assert await versions(sessions) == {1: (2, 0)}


async def test_restore_200_404_when_not_in_trash_409_when_name_taken(
    client: httpx.AsyncClient,
):
    item = await create(client)
    assert (await client.post("/items/1/restore")).status_code == 404  # live
    assert (await client.post("/items/2/restore")).status_code == 404  # none
    await client.delete("/items/1")
    reply = await client.post("/items/1/restore")
    assert reply.status_code == 200
    assert reply.headers["ETag"] == '"3"'
    restored = reply.json()
    assert (restored["name"], restored["version"]) == ("Mug", 3)
    assert restored["updated_at"] > item["updated_at"]
    assert (await client.get("/items/1")).status_code == 200

    await client.delete("/items/1")
    await create(client, "Mug")
    reply = await client.post("/items/1/restore")
    assert reply.status_code == 409
    assert (await client.get("/items/1")).status_code == 404


async def test_delete_with_a_stale_if_match_is_412_and_changes_nothing(
    client: httpx.AsyncClient, sessions: Sessions
):
    await create(client)
    await client.patch("/items/1", json={"stock": 3}, headers={"If-Match": '"1"'})
    for stale in ('"1"', '"3"', "1", "*", 'W/"2"'):
        reply = await client.delete("/items/1", headers={"If-Match": stale})
        assert reply.status_code == 412, stale
        assert reply.json() == {
            "detail": "item 1 is at version 2, not "
            + (stale.strip('"') if stale in ('"1"', '"3"') else "0")
        }
    assert await versions(sessions) == {1: (2, 3)}  # still live, unchanged
    assert (await client.get("/items/1")).status_code == 200
    reply = await client.delete("/items/1", headers={"If-Match": '"2"'})
    assert reply.status_code == 204
    assert await versions(sessions) == {1: (3, 3)}
    gone = await client.delete("/items/1", headers={"If-Match": '"3"'})
    assert gone.status_code == 404  # deleted: 404 before any version talk


async def test_restore_with_a_stale_if_match_is_412_and_stays_deleted(
    client: httpx.AsyncClient, sessions: Sessions
):
    await create(client)
    await client.delete("/items/1")
    trash = (await client.get("/items/deleted")).json()["items"]
    assert [(i["id"], i["version"]) for i in trash] == [(1, 2)]
    reply = await client.post("/items/1/restore", headers={"If-Match": '"1"'})
    assert reply.status_code == 412
    assert reply.json() == {"detail": "item 1 is at version 2, not 1"}
    assert (await client.get("/items/1")).status_code == 404  # still deleted
    assert await versions(sessions) == {1: (2, 0)}
    reply = await client.post("/items/1/restore", headers={"If-Match": '"2"'})
    assert (reply.status_code, reply.headers["ETag"]) == (200, '"3"')
    again = await client.post("/items/1/restore", headers={"If-Match": '"3"'})
    assert again.status_code == 404  # live: not in the trash


async def test_read_with_the_current_etag_in_if_none_match_is_304_without_body(
    client: httpx.AsyncClient,
):
    await create(client)
    for current in ('"1"', 'W/"1"', '"7", "1"', "*"):
        reply = await client.get("/items/1", headers={"If-None-Match": current})
        assert (reply.status_code, reply.content) == (304, b""), current
        assert reply.headers["ETag"] == '"1"'
    for other in ('"2"', "1", ""):
        reply = await client.get("/items/1", headers={"If-None-Match": other})
        assert (reply.status_code, reply.json()["version"]) == (200, 1), other
    await client.patch("/items/1", json={"stock": 2}, headers={"If-Match": '"1"'})
    reply = await client.get("/items/1", headers={"If-None-Match": '"1"'})
    assert (reply.status_code, reply.headers["ETag"]) == (200, '"2"')
    missing = await client.get("/items/9", headers={"If-None-Match": "*"})
    assert missing.status_code == 404


async def test_every_write_bumps_the_version_by_one_and_sets_updated_at(
    client: httpx.AsyncClient, sessions: Sessions
):
    await create(client, stock=10)

    async def stored() -> tuple[int, datetime]:
        async with sessions() as session:  # deleted or not
            query = select(Item.version, Item.updated_at).where(Item.id == 1)
            row = await session.execute(query.execution_options(include_deleted=True))
            version, updated_at = row.one()
            return version, updated_at

    seen = [await stored()]
    order = {"customer": "Ada", "lines": [{"item_id": 1, "quantity": 1}] * 2}
    writes = [
        client.patch("/items/1", json={"stock": 9, "version": 1}),
        client.patch("/items/bulk", json={"ids": [1], "values": {"stock": 8}}),
        client.post("/orders", json=order),  # one item on two lines: one bump
        client.delete("/items/1", headers={"If-Match": '"4"'}),
        client.post("/items/1/restore", headers={"If-Match": '"5"'}),
    ]
    for write in writes:
        reply = await write
        assert reply.is_success, reply.text
        version, updated_at = await stored()
        assert version == seen[-1][0] + 1
        assert updated_at > seen[-1][1]
        seen.append((version, updated_at))
    assert [version for version, _ in seen] == [1, 2, 3, 4, 5, 6]


async def test_trash_lists_only_deleted_items_with_the_list_parameters(
    client: httpx.AsyncClient,
):
    for name in ("a", "b", "c", "d"):
        await create(client, name, status="active" if name < "c" else "draft")
    for item_id in (1, 3, 4):
        await client.delete(f"/items/{item_id}")
    trash = (await client.get("/items/deleted", params={"sort": "-name"})).json()
    assert [i["name"] for i in trash["items"]] == ["d", "c", "a"]
    assert (trash["total"], trash["limit"], trash["offset"]) == (3, 20, 0)
    params = {"status": "draft", "limit": 1, "offset": 1, "sort": "name"}
    page = (await client.get("/items/deleted", params=params)).json()
    assert ([i["name"] for i in page["items"]], page["total"]) == (["d"], 2)
    live = (await client.get("/items")).json()
    assert ([i["name"] for i in live["items"]], live["total"]) == (["b"], 1)


# --- GET /items ----------------------------------------------------------------


async def test_list_envelope_limit_and_offset(client: httpx.AsyncClient):
    rows = [body(f"item{n:02d}") for n in range(25)]
    await client.post("/items/bulk", json={"items": rows})
    page = (await client.get("/items")).json()
    assert (page["total"], page["limit"], page["offset"]) == (25, 20, 0)
    assert [i["id"] for i in page["items"]] == list(range(1, 21))
    last = (await client.get("/items", params={"offset": 20, "limit": 100})).json()
    assert [i["id"] for i in last["items"]] == list(range(21, 26))
    assert (last["limit"], last["offset"], last["total"]) == (100, 20, 25)
    one = (await client.get("/items", params={"limit": 1, "offset": 3})).json()
    assert [i["id"] for i in one["items"]] == [4]
    far = (await client.get("/items", params={"offset": 10**6})).json()
    assert (far["items"], far["total"]) == ([], 25)


async def test_a_page_and_its_total_are_one_select(
    app: FastAPI, client: httpx.AsyncClient
):
    rows = [
        body(f"item{n:02d}", status="draft" if n % 2 else "active") for n in range(9)
    ]
    await client.post("/items/bulk", json={"items": rows})
    await client.delete("/items/1")  # live items: 8, of them active: 4
    selects: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    engine = app.state.read_sessions.kw["bind"].sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        page = (await client.get("/items", params={"limit": 3})).json()
        assert (len(page["items"]), page["total"]) == (3, 8)
        assert len(selects) == 1, selects
        active = {"status": "active", "limit": 2, "offset": 1}
        page = (await client.get("/items", params=active)).json()
        assert ([i["name"] for i in page["items"]], page["total"]) == (
            ["item04", "item06"],
            4,
        )
        assert len(selects) == 2
        # Past the end no row carries the total: a second SELECT counts.
        far = (await client.get("/items", params={"offset": 50})).json()
        assert (far["items"], far["total"]) == ([], 8)
        assert len(selects) == 4
    finally:
        event.remove(engine, "before_cursor_execute", record)


def engines(app: FastAPI) -> list[Engine]:
    """The engines behind the app's sessions: one, or on SQLite two (its
    one-statement reads have a pool of their own)."""
    main = app.state.sessions.kw["bind"].sync_engine  # the others derive
    own = app.state.one_statement_sessions.kw["bind"].sync_engine
    return [main] if own.pool is main.pool else [main, own]


async def test_a_read_by_id_is_one_select_and_no_begin(
    app: FastAPI, client: httpx.AsyncClient
):
    item = await create(client)
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement.lstrip().split()[0].upper())

    for engine in engines(app):
        event.listen(engine, "before_cursor_execute", record)
    try:
        assert (await client.get(f"/items/{item['id']}")).status_code == 200
        assert (await client.get("/items/999")).status_code == 404
    finally:
        for engine in engines(app):
            event.remove(engine, "before_cursor_execute", record)
    # SQLite would show its BEGIN DEFERRED here (asyncpg's BEGIN is no
    # cursor statement: the next test looks at the connection instead).
    assert sent == ["SELECT", "SELECT"]


async def test_a_read_by_id_sends_no_rollback_to_the_driver(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
):
    item = await create(client)
    # Once per engine, SQLAlchemy rolls back the first connection it makes.
    assert (await client.get(f"/items/{item['id']}")).status_code == 200
    sent: list[str] = []
    # What reaches the driver: aiosqlite's rollback is a trip to its thread
    # even with nothing to undo; asyncpg's is a ROLLBACK to the server.
    for driver in (aiosqlite.Connection, asyncpg.transaction.Transaction):
        rollback = driver.rollback

        async def counted(self: Any, rollback: Any = rollback) -> None:
            sent.append("ROLLBACK")
            await rollback(self)

        monkeypatch.setattr(driver, "rollback", counted)
    assert (await client.get(f"/items/{item['id']}")).status_code == 200
    assert (await client.get("/items/999")).status_code == 404
    assert sent == []
    assert (await client.get("/items")).status_code == 200  # for contrast
    assert sent


def collected(thing: object) -> bool:
    """Whether the garbage collector visits `thing` (frozen ones it skips)."""
    return any(other is thing for other in gc.get_objects())


async def test_start_up_objects_are_frozen_while_the_app_runs(database_url: str):
    APP.state.settings = replace(APP.state.settings, database_url=database_url)
    async with APP.router.lifespan_context(APP):
        built = APP.state.one_statement_sessions  # made during start-up
        assert not collected(built)
        assert gc.get_freeze_count() > 0
    assert collected(built)  # handed back at shutdown
    assert gc.get_freeze_count() == 0


async def fail_inside_a_savepoint(sessions: Sessions) -> None:
    async with sessions() as session, session.begin_nested():
        await session.scalar(select(Item))
        raise LookupError("the block fails: its savepoint is rolled back")


async def test_a_savepoint_in_a_one_statement_session_leaves_no_transaction(
    app: FastAPI, client: httpx.AsyncClient
):
    await create(client)
    # PostgreSQL refuses a SAVEPOINT outside a transaction; SQLite opens one.
    with pytest.raises((LookupError, DBAPIError)):
        await fail_inside_a_savepoint(app.state.one_statement_sessions)
    async with app.state.one_statement_sessions() as session:  # same connection
        assert not await open_transaction(session)


async def open_transaction(session: AsyncSession) -> bool:
    """Whether the driver's connection is inside a transaction right now."""
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    if connection.dialect.name == "sqlite":
        return bool(driver.in_transaction)  # aiosqlite's, as sqlite3's
    return bool(driver.is_in_transaction())  # asyncpg's


async def test_a_one_statement_session_reads_outside_any_transaction(
    app: FastAPI, client: httpx.AsyncClient
):
    await create(client)
    async with app.state.one_statement_sessions() as session:
        assert (await session.scalars(select(Item))).one().name == "Mug"
        assert not await open_transaction(session)
    async with app.state.read_sessions() as session:  # for contrast
        assert (await session.scalars(select(Item))).one().name == "Mug"
        assert await open_transaction(session)


async def test_a_one_statement_session_refuses_a_second_statement(
    app: FastAPI, client: httpx.AsyncClient
):
    item = await create(client)
    await client.delete(f"/items/{item['id']}")
    async with app.state.one_statement_sessions() as session:
        # The soft-delete filter holds here too.
        assert await session.scalar(select(Item)) is None
        with pytest.raises(SecondStatementError, match="another snapshot"):
            await session.scalar(select(func.count()).select_from(Item))


async def test_filters_any_of_inclusive_bounds_and_literal_search(
    client: httpx.AsyncClient,
):
    rows = [
        body("Blue MUG", status="active", category="x", price="0"),
        body("mugs", status="draft", category="y", price="5"),
        body("100% cotton", status="archived", category="z", price="10"),
        body("1000 cotton", status="active", category="y", price="10.01"),
        body("a_b", status="draft", category="x", price="3"),
        body("axb", status="draft", category="x", price="3"),
    ]
    await client.post("/items/bulk", json={"items": rows})

    async def ids(**params: Any) -> list[int]:
        reply = await client.get("/items", params=params)
        assert reply.status_code == 200, reply.text
        return [i["id"] for i in reply.json()["items"]]

    assert await ids(status=["active", "archived"]) == [1, 3, 4]
    assert await ids(category=["x", "z"]) == [1, 3, 5, 6]
    assert await ids(min_price="5", max_price="10") == [2, 3]
    assert await ids(max_price="0") == [1]  # 0 is a bound, not "no bound"
    assert await ids(min_price="10", max_price="10") == [3]
    assert await ids(status="active", category="y") == [4]
    assert await ids(q="mug") == [1, 2]  # case-insensitive
    assert await ids(q="0%") == [3]  # % matches itself
    assert await ids(q="_") == [5]  # _ matches itself
    assert await ids(q="\\") == []


async def test_created_after_is_inclusive_created_before_exclusive(
    client: httpx.AsyncClient,
):
    first = await create(client, "a")
    second = await create(client, "b")
    assert first["created_at"] < second["created_at"]
    moment = second["created_at"]

    async def names(**params: str) -> list[str]:
        reply = await client.get("/items", params=params)
        assert reply.status_code == 200, reply.text
        return [i["name"] for i in reply.json()["items"]]

    assert await names(created_after=moment) == ["b"]
    assert await names(created_before=moment) == ["a"]
    plus_five = timezone(timedelta(hours=5))  # the same instant, elsewhere
    shifted = datetime.fromisoformat(moment).astimezone(plus_five)
    assert await names(created_after=shifted.isoformat()) == ["b"]


async def test_sort_by_several_fields_with_id_as_the_last_tiebreaker(
    client: httpx.AsyncClient,
):
    rows = [
        body("e", status="active", price="3", stock=2),
        body("d", status="draft", price="5", stock=1),
        body("c", status="archived", price="3", stock=2),
        body("b", status="active", price="5", stock=1),
        body("a", status="draft", price="3", stock=2),
    ]
    await client.post("/items/bulk", json={"items": rows})

    async def ids(sort: str) -> list[int]:
        page = (await client.get("/items", params={"sort": sort})).json()
        return [i["id"] for i in page["items"]]

    assert await ids("-price,name") == [4, 2, 5, 3, 1]
    assert await ids("price") == [1, 3, 5, 2, 4]  # equal prices: id ascending
    assert await ids("-price") == [2, 4, 1, 3, 5]
    assert await ids("status,-id") == [4, 1, 3, 5, 2]  # sorted as text
    assert await ids("-stock,-name") == [1, 3, 5, 2, 4]
    assert await ids("-id") == [5, 4, 3, 2, 1]
    assert await ids("name") == [5, 4, 3, 2, 1]
    assert await ids("category,created_at") == [1, 2, 3, 4, 5]


INVALID_LIST_PARAMETERS = [
    ({"sort": "bogus"}, "sort"),
    ({"sort": ""}, "sort"),
    ({"sort": "name,"}, "sort"),
    ({"sort": "-"}, "sort"),
    ({"sort": "name,-name"}, "sort"),
    ({"sort": "deleted_at"}, "sort"),
    ({"sort": "__class__"}, "sort"),
    ({"status": ""}, "status"),
    ({"status": "DRAFT"}, "status"),
    ({"category": ""}, "category"),
    ({"category": ["c"] * 101}, "category"),  # bounded: no 40,000-item IN
    ({"q": ""}, "q"),
    ({"min_price": "5", "max_price": "4.99"}, "min_price"),
    ({"min_price": ""}, "min_price"),
    ({"limit": 0}, "limit"),
    ({"limit": 101}, "limit"),
    ({"offset": -1}, "offset"),
    ({"offset": 10**6 + 1}, "offset"),
    ({"created_after": "2024-01-01T00:00:00"}, "created_after"),
    ({"created_before": "yesterday"}, "created_before"),
]


async def test_invalid_list_parameter_is_422_naming_it(client: httpx.AsyncClient):
    await create(client)
    for params, name in INVALID_LIST_PARAMETERS:
        for path in ("/items", "/items/deleted", "/items/keyset"):
            if path == "/items/keyset" and "offset" in params:
                continue  # keyset has no offset
            reply = await client.get(path, params=params)
            assert reply.status_code == 422, (path, params)
            assert named(reply) == [name], (path, params)


# --- GET /items/keyset ---------------------------------------------------------


async def walk(
    client: httpx.AsyncClient, params: dict[str, Any], during: Any = None
) -> list[int]:
    """Every page from the first to the one whose next_cursor is null."""
    seen: list[int] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        reply = await client.get("/items/keyset", params=query)
        assert reply.status_code == 200, reply.text
        page = reply.json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        assert len(page["items"]) == params["limit"]
        if during is not None:
            await during()


async def test_keyset_walk_returns_every_item_once_in_order(
    client: httpx.AsyncClient,
):
    rows = [
        body(
            f"n{i:02d}",
            category="ab"[i % 2],
            status=["draft", "active", "archived"][i % 3],
            price=str(i % 3),  # many equal values
            stock=i % 4,
        )
        for i in range(17)
    ]
    await client.post("/items/bulk", json={"items": rows})
    late = iter(range(1000))

    async def insert_one() -> None:  # rows appear during the walk
        await create(client, f"late{next(late)}", price="1", stock=2)

    for sort in ("-price,name", "status,-stock", "category,-created_at"):
        params = {"sort": sort, "limit": 100}
        before = [
            i["id"] for i in (await client.get("/items", params=params)).json()["items"]
        ]
        seen = await walk(client, {"sort": sort, "limit": 5}, insert_one)
        assert len(seen) == len(set(seen)), sort  # nothing twice
        assert [i for i in seen if i in before] == before, sort  # all, in order
        after = [
            i["id"] for i in (await client.get("/items", params=params)).json()["items"]
        ]
        assert seen == [i for i in after if i in seen], sort  # the list's order


async def test_next_cursor_is_null_exactly_on_the_last_page(
    client: httpx.AsyncClient,
):
    rows = [body(f"i{n}", status="active" if n % 2 else "draft") for n in range(4)]
    await client.post("/items/bulk", json={"items": rows})
    first = (await client.get("/items/keyset", params={"limit": 2})).json()
    assert first["next_cursor"] is not None
    params = {"limit": 2, "cursor": first["next_cursor"]}
    second = (await client.get("/items/keyset", params=params)).json()
    assert [i["id"] for i in second["items"]] == [3, 4]
    assert second["next_cursor"] is None  # 4 items, 2 pages: no empty third
    one_page = (await client.get("/items/keyset", params={"limit": 4})).json()
    assert one_page["next_cursor"] is None
    empty = (await client.get("/items/keyset", params={"q": "zzz"})).json()
    assert empty == {"items": [], "next_cursor": None}
    active = {"status": "active", "limit": 1, "sort": "-name"}
    assert await walk(client, active) == [4, 2]


async def test_bad_cursor_is_400(client: httpx.AsyncClient, database_url: str):
    rows = [body(f"i{n}", status="active") for n in range(3)]
    await client.post("/items/bulk", json={"items": rows})
    params = {"limit": 1, "sort": "name", "status": "active"}
    cursor = (await client.get("/items/keyset", params=params)).json()["next_cursor"]
    payload, signature = cursor.split(".")
    for query in [
        {**params, "cursor": ""},
        {**params, "cursor": "x"},
        {**params, "cursor": f"{payload}A.{signature}"},
        {**params, "cursor": f"{payload}.{signature[::-1]}"},
        {**params, "cursor": cursor + "="},
        {**params, "cursor": "é" * 50},
        {**params, "cursor": cursor * 100},
        {**params, "cursor": cursor, "sort": "-name"},
        {**params, "cursor": cursor, "status": "draft"},
        {**params, "cursor": cursor, "q": "i"},
    ]:
        reply = await client.get("/items/keyset", params=query)
        assert reply.status_code == 400, query
        assert isinstance(reply.json()["detail"], str)
    good = await client.get("/items/keyset", params={**params, "cursor": cursor})
    assert [i["name"] for i in good.json()["items"]] == ["i1"]
    more = await client.get(
        "/items/keyset", params={**params, "cursor": cursor, "limit": 5}
    )
    assert [i["name"] for i in more.json()["items"]] == ["i1", "i2"]

    other = create_app(database_url)  # another process: another key
    async with (
        other.router.lifespan_context(other),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=other), base_url="http://t"
        ) as elsewhere,
    ):
        reply = await elsewhere.get(
            "/items/keyset", params={**params, "cursor": cursor}
        )
        assert reply.status_code == 400


# --- bulk ----------------------------------------------------------------------


async def test_bulk_create_returns_the_items_in_input_order(
    client: httpx.AsyncClient,
):
    names = ["zeta", "alpha", "mid", "beta"]
    reply = await client.post("/items/bulk", json={"items": [body(n) for n in names]})
    assert reply.status_code == 201
    items = reply.json()["items"]
    assert [i["name"] for i in items] == names
    assert [i["id"] for i in items] == [1, 2, 3, 4]
    assert all(i["version"] == 1 for i in items)
    page = (await client.get("/items")).json()
    assert page["items"] == items

    assert (await client.post("/items/bulk", json={"items": []})).status_code == 422
    too_many = [body(f"i{n}") for n in range(1001)]
    reply = await client.post("/items/bulk", json={"items": too_many})
    assert reply.status_code == 422
    reply = await client.post("/items/bulk", json={"items": too_many[:1000]})
    assert reply.status_code == 201
    assert [i["name"] for i in reply.json()["items"]] == [
        r["name"] for r in too_many[:1000]
    ]


async def test_bulk_create_with_one_bad_row_creates_nothing(
    client: httpx.AsyncClient, sessions: Sessions
):
    rows = [body("a"), body("b"), body("c", price="-1"), body("d")]
    reply = await client.post("/items/bulk", json={"items": rows})
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "items", 2, "price"]
    assert await count(sessions, Item) == 0

    in_batch = [body("a"), body("b"), body("a")]
    reply = await client.post("/items/bulk", json={"items": in_batch})
    assert reply.status_code == 409
    assert reply.json() == {"detail": "already used by a live item: 'a'"}
    assert await count(sessions, Item) == 0

    await create(client, "taken")
    against_table = [body("a"), body("taken")]
    reply = await client.post("/items/bulk", json={"items": against_table})
    assert reply.status_code == 409
    assert await count(sessions, Item) == 1


async def test_bulk_patch_updates_all_and_bumps_each_version(
    client: httpx.AsyncClient, sessions: Sessions
):
    await client.post("/items/bulk", json={"items": [body(n) for n in "abc"]})
    await client.patch("/items/3", json={"stock": 1, "version": 1})
    reply = await client.patch(
        "/items/bulk", json={"ids": [3, 1, 3], "values": {"stock": 7, "price": "1"}}
    )
    assert (reply.status_code, reply.json()) == (200, {"updated": 2})
    assert await versions(sessions) == {1: (2, 7), 2: (1, 0), 3: (3, 7)}
    item = (await client.get("/items/1")).json()
    assert item["price"] == "1.00"
    assert item["updated_at"] > item["created_at"]
    rename = await client.patch(
        "/items/bulk", json={"ids": [2], "values": {"name": "z"}}
    )
    assert rename.status_code == 200


async def test_bulk_patch_404_naming_unknown_ids_409_for_one_name_nothing_changed(
    client: httpx.AsyncClient, sessions: Sessions
):
    await client.post("/items/bulk", json={"items": [body(n) for n in "abc"]})
    await client.delete("/items/2")
    before = await versions(sessions)
    reply = await client.patch(
        "/items/bulk", json={"ids": [1, 2, 3, 77], "values": {"stock": 5}}
    )
    assert reply.status_code == 404
    assert reply.json() == {"detail": "unknown or deleted items: 2, 77"}
    reply = await client.patch(
        "/items/bulk", json={"ids": [1, 3], "values": {"name": "same"}}
    )
    assert reply.status_code == 409
    assert await versions(sessions) == before


async def test_bulk_patch_with_a_stale_expected_version_is_409_naming_it(
    client: httpx.AsyncClient, sessions: Sessions
):
    await client.post("/items/bulk", json={"items": [body(n) for n in "abc"]})
    await client.patch("/items/2", json={"stock": 5, "version": 1})
    before = await versions(sessions)
    change = {"ids": [1, 2, 3], "values": {"stock": 9}}
    stale = {**change, "expected_versions": {"1": 1, "2": 1, "3": 1}}
    reply = await client.patch("/items/bulk", json=stale)
    assert reply.status_code == 409
    assert reply.json() == {"detail": "changed since you read them: 2"}
    assert await versions(sessions) == before  # nothing written
    current = {**change, "expected_versions": {"2": 2, "3": 1}}  # some ids
    reply = await client.patch("/items/bulk", json=current)
    assert (reply.status_code, reply.json()) == (200, {"updated": 3})
    assert await versions(sessions) == {1: (2, 9), 2: (3, 9), 3: (2, 9)}
    unchecked = await client.patch(
        "/items/bulk", json={**change, "expected_versions": {}}
    )
    assert unchecked.status_code == 200


async def test_bulk_patch_expected_versions_refuses_null_and_unlisted_ids(
    client: httpx.AsyncClient, sessions: Sessions
):
    await client.post("/items/bulk", json={"items": [body(n) for n in "ab"]})
    change = {"ids": [1], "values": {"stock": 9}}
    for versions_sent in (None, {"1": None}, {"2": 1}, {"x": 1}, {"1": 0}, [1]):
        reply = await client.patch(
            "/items/bulk", json={**change, "expected_versions": versions_sent}
        )
        assert reply.status_code == 422, versions_sent
        assert "expected_versions" in reply.text, versions_sent
    assert await versions(sessions) == {1: (1, 0), 2: (1, 0)}


async def test_invalid_bulk_patch_is_422(client: httpx.AsyncClient, sessions: Sessions):
    await create(client)
    for payload in [
        {"ids": [], "values": {"stock": 1}},
        {"ids": list(range(1, 1002)), "values": {"stock": 1}},
        {"ids": [0], "values": {"stock": 1}},
        {"ids": [2**31], "values": {"stock": 1}},
        {"ids": None, "values": {"stock": 1}},
        {"ids": [1], "values": {"stock": None}},
        {"ids": [1], "values": {"version": 1}},
        {"ids": [1], "values": {"colour": "red"}},
        {"ids": [1]},
        {"ids": [1], "values": {"stock": 1}, "extra": True},
    ]:
        reply = await client.patch("/items/bulk", json=payload)
        assert reply.status_code == 422, payload
    assert await versions(sessions) == {1: (1, 0)}


# --- orders --------------------------------------------------------------------


async def test_order_takes_the_stock_and_records_the_prices(
    client: httpx.AsyncClient, sessions: Sessions
):
    await create(client, "a", price="2.50", stock=10)
    await create(client, "b", price="1.10", stock=3)
    lines = [
        {"item_id": 2, "quantity": 3},
        {"item_id": 1, "quantity": 4},
        {"item_id": 1, "quantity": 1},
    ]
    reply = await client.post("/orders", json={"customer": "Ada", "lines": lines})
    assert reply.status_code == 201
    order = reply.json()
    assert (order["id"], order["customer"], order["total"]) == (1, "Ada", "15.80")
    assert order["lines"] == [
        {"item_id": 2, "quantity": 3, "unit_price": "1.10"},
        {"item_id": 1, "quantity": 4, "unit_price": "2.50"},
        {"item_id": 1, "quantity": 1, "unit_price": "2.50"},
    ]
    assert order["created_at"].endswith("+00:00")
    # one write per item (its lines summed): stock 10-5 and 3-3, version +1
    assert await versions(sessions) == {1: (2, 5), 2: (2, 0)}
    assert (await client.get("/orders/1")).json() == order


async def test_order_stock_is_checked_against_the_sum_of_its_lines(
    client: httpx.AsyncClient, sessions: Sessions
):
    await create(client, "a", stock=5)
    lines = [{"item_id": 1, "quantity": 3}, {"item_id": 1, "quantity": 3}]
    reply = await client.post("/orders", json={"customer": "Ada", "lines": lines})
    assert reply.status_code == 409
    assert await versions(sessions) == {1: (1, 5)}
    exact = [{"item_id": 1, "quantity": 2}, {"item_id": 1, "quantity": 3}]
    reply = await client.post("/orders", json={"customer": "Ada", "lines": exact})
    assert reply.status_code == 201
    assert await versions(sessions) == {1: (2, 0)}


async def test_an_order_failing_on_any_line_leaves_nothing(
    client: httpx.AsyncClient, sessions: Sessions
):
    await client.post(
        "/items/bulk", json={"items": [body(n, stock=5) for n in ("a", "b", "c", "d")]}
    )
    await client.delete("/items/4")
    before = await versions(sessions)
    faults = {
        "unknown": ({"item_id": 99, "quantity": 1}, 404),
        "deleted": ({"item_id": 4, "quantity": 1}, 404),
        "no stock": ({"item_id": 2, "quantity": 4}, 409),  # 2 + 4 > 5
    }
    for fault, (bad_line, code) in faults.items():
        for position in range(4):  # first, middle, last line...
            lines = [{"item_id": i, "quantity": 2} for i in (1, 2, 3)]
            lines.insert(position, bad_line)
            order = {"customer": "Ada", "lines": lines}
            reply = await client.post("/orders", json=order)
            assert reply.status_code == code, (fault, position)
    assert await versions(sessions) == before
    assert await count(sessions, Order) == 0
    assert await count(sessions, OrderLine) == 0


async def test_the_unit_price_never_changes_and_unknown_order_is_404(
    client: httpx.AsyncClient,
):
    await create(client, "a", price="2.50", stock=10)
    lines = [{"item_id": 1, "quantity": 2}]
    await client.post("/orders", json={"customer": "Ada", "lines": lines})
    await client.patch("/items/1", json={"price": "99.00", "version": 2})
    await client.delete("/items/1")
    order = (await client.get("/orders/1")).json()
    assert (order["lines"][0]["unit_price"], order["total"]) == ("2.50", "5.00")
    reply = await client.get("/orders/2")
    assert (reply.status_code, reply.json()) == (404, {"detail": "unknown order: 2"})


async def test_invalid_order_is_422_and_the_bounds_are_accepted(
    client: httpx.AsyncClient, sessions: Sessions
):
    await create(client, stock=10**8)
    line = {"item_id": 1, "quantity": 1}
    for payload in [
        {"customer": "", "lines": [line]},
        {"customer": "x" * 201, "lines": [line]},
        {"customer": None, "lines": [line]},
        {"customer": "Ada", "lines": []},
        {"customer": "Ada", "lines": [line] * 51},
        {"customer": "Ada", "lines": [{**line, "quantity": 0}]},
        {"customer": "Ada", "lines": [{**line, "quantity": 10**6 + 1}]},
        {"customer": "Ada", "lines": [{**line, "item_id": 0}]},
        {"customer": "Ada", "lines": [{**line, "item_id": 2**31}]},
        {"customer": "Ada", "lines": [{**line, "unit_price": 0}]},
        {"customer": "Ada", "lines": [line], "id": 3},
        {"lines": [line]},
    ]:
        reply = await client.post("/orders", json=payload)
        assert reply.status_code == 422, payload
    assert await count(sessions, Order) == 0
    lines = [{"item_id": 1, "quantity": 10**6}] * 50
    reply = await client.post("/orders", json={"customer": "x" * 200, "lines": lines})
    assert reply.status_code == 201
    assert (await client.get("/items/1")).json()["stock"] == 10**8 - 50 * 10**6


# --- OpenAPI -------------------------------------------------------------------

# 503: any route that reaches the database may find it busy.
EXPECTED_CODES = {
    ("post", "/items"): {201, 400, 409, 422, 503},
    ("get", "/items"): {200, 422, 503},
    ("get", "/items/deleted"): {200, 422, 503},
    ("get", "/items/keyset"): {200, 400, 422, 503},
    ("get", "/items/export"): {200, 422, 503},
    ("post", "/items/bulk"): {201, 400, 409, 422, 503},
    ("patch", "/items/bulk"): {200, 400, 404, 409, 422, 503},
    ("get", "/items/{item_id}"): {200, 304, 404, 422, 503},
    ("patch", "/items/{item_id}"): {200, 400, 404, 409, 412, 422, 428, 503},
    ("delete", "/items/{item_id}"): {204, 404, 412, 422, 503},
    ("post", "/items/{item_id}/restore"): {200, 404, 409, 412, 422, 503},
    ("post", "/orders"): {201, 400, 404, 409, 422, 503},
    ("get", "/orders/{order_id}"): {200, 404, 422, 503},
}


def test_openapi_gives_every_parameter_body_and_response_an_example():
    schema = create_app("sqlite+aiosqlite:///unused.db").openapi()
    models = schema["components"]["schemas"]

    def has_example(node: dict[str, Any]) -> bool:
        if "$ref" in node:
            node = models[node["$ref"].rsplit("/", 1)[1]]
        return bool(node.get("examples") or node.get("example"))

    missing = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                if not parameter.get("description"):
                    missing.append((where, parameter["name"], "description"))
                if not has_example(parameter["schema"]):
                    missing.append((where, parameter["name"], "example"))
            if "requestBody" in operation:
                content = operation["requestBody"]["content"]["application/json"]
                if not has_example(content["schema"]):
                    missing.append((where, "body", "example"))
            for code, response in operation["responses"].items():
                content = response.get("content", {}).get("application/json")
                if content is None:
                    continue  # 204: no body
                if not (content.get("examples") or has_example(content["schema"])):
                    missing.append((where, code, "example"))
    assert not missing


async def test_documented_error_examples_are_what_the_api_answers(
    client: httpx.AsyncClient,
):
    responses = create_app("sqlite+aiosqlite:///unused.db").openapi()["paths"]

    def examples(path: str, method: str, code: int) -> list[Any]:
        content = responses[path][method]["responses"][str(code)]["content"]
        found = content["application/json"]["examples"].values()
        return [example["value"] for example in found]

    bad_price = {"name": "Blue mug", "category": "kitchen", "price": "-1"}
    replies = {
        ("/items", "post", 400): await client.post(
            "/items", content=b"{", headers={"content-type": "application/json"}
        ),
        ("/items", "post", 422): await client.post("/items", json=bad_price),
        ("/items/{item_id}", "get", 404): await client.get("/items/7"),
    }
    await create(client, "Blue mug")
    replies[("/items", "post", 409)] = await client.post(
        "/items", json=body("Blue mug")
    )
    for key, reply in replies.items():
        assert reply.status_code == key[2], key
        assert reply.json() in examples(*key), key


def test_openapi_lists_every_route_and_status_code_explicitly():
    schema = create_app("sqlite+aiosqlite:///unused.db").openapi()
    found = {
        (method, path): {int(code) for code in operation["responses"]}
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    assert found == EXPECTED_CODES
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), (method, path)
            for code, response in operation["responses"].items():
                assert code.isdigit(), (method, path, code)  # no "4XX"
                assert response["description"]
    for path, method in [
        ("/items", "post"),
        ("/items/{item_id}", "get"),
        ("/items/{item_id}", "patch"),
    ]:
        responses = schema["paths"][path][method]["responses"]
        success = responses["201" if method == "post" else "200"]
        assert "ETag" in success["headers"]
    patch = schema["paths"]["/items/{item_id}"]["patch"]
    assert any(p["name"].lower() == "if-match" for p in patch["parameters"])

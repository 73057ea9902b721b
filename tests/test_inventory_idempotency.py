"""The reference API's Idempotency-Key on POST /orders, both backends.

The recipe is the Retries and idempotency page's (snippets/idempotency.py):
these tests hold the reference API to its contract as built, on the
Reference API page (docs/inventory.md: "The contract" and "Orders, at most
once per key").
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from snippets.inventory import create_app, crud
from snippets.inventory.forget_keys import forget_keys
from snippets.inventory.idempotency import KEY_TTL, forget_old_keys
from snippets.inventory.models import (
    IdempotencyKey,
    Item,
    Order,
    OrderLine,
    utcnow,
)
from tests.conftest import ROOT

Sessions = async_sessionmaker[AsyncSession]

# FastAPI builds an app's routes lazily, which costs more than a test: the
# tests share one app, pointed at a new database each.
APP = create_app()
ORDER = {"customer": "Ada", "lines": [{"item_id": 1, "quantity": 2}]}


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
        rows = [
            {"name": f"item{n}", "category": "c", "price": "2.50", "stock": 10}
            for n in (1, 2)
        ]
        assert (await c.post("/items/bulk", json={"items": rows})).is_success
        yield c


@pytest.fixture
def sessions(app: FastAPI) -> Sessions:
    return app.state.sessions  # type: ignore[no-any-return]


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


async def count(sessions: Sessions, model: type) -> int:
    async with sessions() as session:
        query = select(func.count()).select_from(model)
        return int(await session.scalar(query) or 0)


async def stock_and_version(sessions: Sessions) -> dict[int, tuple[int, int]]:
    async with sessions() as session:
        rows = await session.execute(select(Item.id, Item.stock, Item.version))
        return {i: (s, v) for i, s, v in rows.all()}


async def test_naive_retry_without_a_key_orders_twice(
    client: httpx.AsyncClient, sessions: Sessions
):
    """A client whose first answer got lost, retrying without a key."""
    for _ in range(2):
        assert (await client.post("/orders", json=ORDER)).status_code == 201
    assert await count(sessions, Order) == 2
    assert (await stock_and_version(sessions))[1] == (6, 3)


async def test_a_retry_with_the_key_replays_the_first_answer(
    client: httpx.AsyncClient, sessions: Sessions
):
    first = await client.post("/orders", json=ORDER, headers=key("k-1"))
    # The same JSON value, with its keys in another order and other spacing.
    same = json.dumps(
        {"lines": [{"quantity": 2, "item_id": 1}], "customer": "Ada"}, indent=3
    )
    headers = {**key("k-1"), "Content-Type": "application/json"}
    again = await client.post("/orders", content=same, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert first.json()["lines"] == [
        {"item_id": 1, "quantity": 2, "unit_price": "2.50"}
    ]
    assert await count(sessions, Order) == 1
    assert (await stock_and_version(sessions))[1] == (8, 2)  # taken once


async def test_a_4xx_is_stored_and_replayed_not_run_again(
    client: httpx.AsyncClient, sessions: Sessions
):
    too_many = {"customer": "Ada", "lines": [{"item_id": 1, "quantity": 11}]}
    first = await client.post("/orders", json=too_many, headers=key("k-409"))
    assert first.status_code == 409
    assert first.json() == {"detail": "item 1 has fewer than 11 in stock"}
    restock = await client.patch(
        "/items/1", json={"stock": 100}, headers={"If-Match": '"1"'}
    )
    assert restock.status_code == 200
    # The order would succeed now: the key replays the answer it got.
    again = await client.post("/orders", json=too_many, headers=key("k-409"))
    assert (again.status_code, again.json()) == (409, first.json())

    unknown = {"customer": "Ada", "lines": [{"item_id": 3, "quantity": 1}]}
    first = await client.post("/orders", json=unknown, headers=key("k-404"))
    assert first.status_code == 404
    await client.post(
        "/items", json={"name": "item3", "category": "c", "price": "1.00"}
    )
    again = await client.post("/orders", json=unknown, headers=key("k-404"))
    assert (again.status_code, again.json()) == (404, first.json())
    assert await count(sessions, Order) == 0


async def test_a_stored_4xx_leaves_no_partial_write(
    client: httpx.AsyncClient, sessions: Sessions
):
    """Item 1 is taken before item 2 fails: the savepoint undoes item 1
    while the key and its 409 are committed."""
    before = await stock_and_version(sessions)
    order = {
        "customer": "Ada",
        "lines": [{"item_id": 1, "quantity": 1}, {"item_id": 2, "quantity": 99}],
    }
    reply = await client.post("/orders", json=order, headers=key("k-part"))
    assert reply.status_code == 409
    assert await stock_and_version(sessions) == before
    assert (await count(sessions, Order), await count(sessions, OrderLine)) == (
        0,
        0,
    )
    async with sessions() as session:
        stored = await session.get_one(IdempotencyKey, "k-part")
    assert (stored.status_code, stored.body) == (409, reply.json())


async def test_the_same_key_with_another_body_is_422_and_changes_nothing(
    client: httpx.AsyncClient, sessions: Sessions
):
    assert (
        await client.post("/orders", json=ORDER, headers=key("k-1"))
    ).status_code == 201
    before = await stock_and_version(sessions)
    other = {**ORDER, "customer": "Bo"}
    reply = await client.post("/orders", json=other, headers=key("k-1"))
    assert reply.status_code == 422
    (problem,) = reply.json()["detail"]
    assert problem["loc"] == ["header", "Idempotency-Key"]
    assert "another body" in problem["msg"]
    assert await count(sessions, Order) == 1
    assert await stock_and_version(sessions) == before


@pytest.mark.parametrize(
    "bad",
    ["", "x" * 256, "caf\u00e9", "tab\there", "bell\x07", "del\x7f"],
    ids=["empty", "256 chars", "not ASCII", "tab", "control", "DEL"],
)
async def test_a_key_that_is_not_1_to_255_printable_ascii_is_422(
    client: httpx.AsyncClient, sessions: Sessions, bad: str
):
    headers = {"Idempotency-Key": bad.encode("utf-8")}
    reply = await client.post("/orders", json=ORDER, headers=headers)
    assert reply.status_code == 422, reply.text
    assert await count(sessions, Order) == 0


async def test_the_longest_key_and_spaces_are_accepted(
    client: httpx.AsyncClient, sessions: Sessions
):
    for value in ("x" * 255, "a key ~!@#$%^&*()"):
        reply = await client.post("/orders", json=ORDER, headers=key(value))
        assert reply.status_code == 201, reply.text
    assert await count(sessions, IdempotencyKey) == 2


async def test_twenty_concurrent_requests_with_one_key_make_one_order(
    client: httpx.AsyncClient, sessions: Sessions
):
    replies = await asyncio.gather(
        *(client.post("/orders", json=ORDER, headers=key("k-20")) for _ in range(20))
    )
    assert {r.status_code for r in replies} == {201}
    assert len({json.dumps(r.json(), sort_keys=True) for r in replies}) == 1
    assert await count(sessions, Order) == 1
    assert (await stock_and_version(sessions))[1] == (8, 2)


async def test_naive_twenty_concurrent_requests_without_a_key_make_twenty(
    client: httpx.AsyncClient, sessions: Sessions
):
    restock = await client.patch(
        "/items/1", json={"stock": 20}, headers={"If-Match": '"1"'}
    )
    assert restock.status_code == 200  # enough for twenty orders of one
    order = {"customer": "Ada", "lines": [{"item_id": 1, "quantity": 1}]}
    replies = await asyncio.gather(
        *(client.post("/orders", json=order) for _ in range(20))
    )
    assert {r.status_code for r in replies} == {201}
    assert await count(sessions, Order) == 20
    assert (await stock_and_version(sessions))[1] == (0, 22)


async def test_a_first_request_that_failed_with_a_5xx_stores_nothing(
    client: httpx.AsyncClient,
    sessions: Sessions,
    monkeypatch: pytest.MonkeyPatch,
):
    async def crash(*_: Any) -> None:
        raise RuntimeError("the server broke after taking the stock")

    real = crud.create_order

    async def take_stock_then_crash(session: AsyncSession, *args: Any) -> Any:
        await real(session, *args)
        await crash()

    monkeypatch.setattr(crud, "create_order", take_stock_then_crash)
    failed = await client.post("/orders", json=ORDER, headers=key("k-5xx"))
    assert failed.status_code == 500
    assert await count(sessions, IdempotencyKey) == 0
    monkeypatch.setattr(crud, "create_order", real)
    retried = await client.post("/orders", json=ORDER, headers=key("k-5xx"))
    assert retried.status_code == 201  # run afresh, not a replayed 500
    assert await count(sessions, Order) == 1
    assert (await stock_and_version(sessions))[1] == (8, 2)


async def test_a_first_request_that_never_completed_stores_nothing(
    client: httpx.AsyncClient,
    sessions: Sessions,
    monkeypatch: pytest.MonkeyPatch,
):
    """The client (or the server) goes away mid-request: cancelled."""
    stock_taken, never = asyncio.Event(), asyncio.Event()
    real = crud.create_order

    async def take_stock_then_hang(session: AsyncSession, *args: Any) -> Any:
        await real(session, *args)
        stock_taken.set()
        await never.wait()

    monkeypatch.setattr(crud, "create_order", take_stock_then_hang)
    first = asyncio.create_task(
        client.post("/orders", json=ORDER, headers=key("k-gone"))
    )
    await stock_taken.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    monkeypatch.setattr(crud, "create_order", real)
    assert await count(sessions, IdempotencyKey) == 0
    retried = await client.post("/orders", json=ORDER, headers=key("k-gone"))
    assert retried.status_code == 201
    assert await count(sessions, Order) == 1
    assert (await stock_and_version(sessions))[1] == (8, 2)


async def test_keys_are_committed_with_the_order_and_kept_for_key_ttl(
    client: httpx.AsyncClient, sessions: Sessions
):
    reply = await client.post("/orders", json=ORDER, headers=key("k-ttl"))
    async with sessions() as session:
        stored = await session.get_one(IdempotencyKey, "k-ttl")
    assert (stored.status_code, stored.body) == (201, reply.json())
    async with sessions.begin() as session:
        assert await forget_old_keys(session) == 0  # younger than KEY_TTL
        await session.execute(
            update(IdempotencyKey).values(
                created_at=utcnow() - KEY_TTL - timedelta(seconds=1)
            )
        )
        assert await forget_old_keys(session) == 1
    again = await client.post("/orders", json=ORDER, headers=key("k-ttl"))
    assert again.status_code == 201
    assert again.json()["id"] != reply.json()["id"]  # forgotten: a new order


async def age_key(sessions: Sessions, key_value: str, age: timedelta) -> None:
    async with sessions.begin() as session:
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == key_value)
            .values(created_at=utcnow() - age)
        )


async def test_forget_keys_removes_keys_past_key_ttl_and_keeps_younger_ones(
    client: httpx.AsyncClient, sessions: Sessions, database_url: str
):
    """The job's function, on an engine of its own beside the app's."""
    for value in ("k-old", "k-young"):
        reply = await client.post("/orders", json=ORDER, headers=key(value))
        assert reply.status_code == 201
    await age_key(sessions, "k-old", KEY_TTL + timedelta(seconds=1))
    await age_key(sessions, "k-young", KEY_TTL - timedelta(minutes=1))
    assert await forget_keys(database_url) == 1
    async with sessions() as session:
        kept = (await session.scalars(select(IdempotencyKey.key))).all()
    assert kept == ["k-young"]
    assert await forget_keys(database_url) == 0
    assert await count(sessions, Order) == 2  # the orders stay


async def test_the_forget_keys_command_reads_database_url_and_says_how_many(
    client: httpx.AsyncClient, sessions: Sessions, database_url: str
):
    """`python -m snippets.inventory.forget_keys`, as cron would start it."""
    reply = await client.post("/orders", json=ORDER, headers=key("k-cron"))
    assert reply.status_code == 201
    await age_key(sessions, "k-cron", KEY_TTL + timedelta(seconds=1))
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "snippets.inventory.forget_keys"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "expired idempotency keys removed: 1\n"
    assert await count(sessions, IdempotencyKey) == 0


async def test_the_header_and_every_status_are_documented(
    client: httpx.AsyncClient,
):
    schema = (await client.get("/openapi.json")).json()
    post = schema["paths"]["/orders"]["post"]
    (header,) = [p for p in post["parameters"] if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key"
    assert header["required"] is False
    allowed = header["schema"]["anyOf"][0]
    assert (allowed["minLength"], allowed["maxLength"]) == (1, 255)
    assert allowed["pattern"] == r"^[\x20-\x7e]+$"
    assert "24 hours" in header["description"]
    assert set(post["responses"]) == {"201", "400", "404", "409", "422", "503"}
    assert "Idempotency-Key" in post["responses"]["422"]["description"]

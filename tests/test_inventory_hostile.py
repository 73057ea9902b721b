"""Hostile input never yields a 5xx, on both backends.

NaN and 1e400 (infinity) are accepted by Python's JSON parser but are not
JSON; a lone surrogate is valid JSON text but not UTF-8; NUL is refused by
PostgreSQL; big numbers overflow SQL integers. Each is tried in every field of
every body, and in every query and path parameter: the answer is 400 or 422 and
nothing changes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from snippets.inventory import create_app
from snippets.inventory.models import Item, Order

Sessions = async_sessionmaker[AsyncSession]
JSON = {"content-type": "application/json"}

# JSON text (not Python values): some of these cannot be written by json.dumps.
HOSTILE_VALUES = [
    "NaN",
    "-Infinity",
    "1e400",
    '"\\ud800"',
    '"\\u0000"',
    "1e20",
    "100000000000000000000000000000",
    "null",
    '{"$gt": ""}',
    "1.005",
]
UNPARSABLE_BODIES = [  # not JSON at all, or JSON the parser refuses: 400
    b"{",
    b'{"name": "a",}',
    b"\xff\xfe\x00",
    b"[" * 100_000,
    b'{"price": 1' + b"0" * 5000 + b"}",
    b'{"name": "a"}' * 2,
]
WRONG_SHAPE_BODIES = [b"", b"[]", b'"text"', b"null"]  # no object: 422
ITEM = {"name": "N", "category": "c", "price": "1.00", "stock": 1}
ROUTES: list[tuple[str, str, dict[str, Any], list[tuple[str, ...]]]] = [
    ("POST", "/items", ITEM, [(k,) for k in ITEM]),
    (
        "PATCH",
        "/items/1",
        {**ITEM, "version": 1},
        [(k,) for k in (*ITEM, "version")],
    ),
    ("POST", "/items/bulk", {"items": [ITEM]}, [("items",), ("items", 0, "name")]),
    (
        "PATCH",
        "/items/bulk",
        {"ids": [1], "values": {"stock": 2}},
        [("ids",), ("ids", 0), ("values",), ("values", "stock")],
    ),
    (
        "POST",
        "/orders",
        {"customer": "Ada", "lines": [{"item_id": 1, "quantity": 1}]},
        [("customer",), ("lines",), ("lines", 0, "item_id"), ("lines", 0, "quantity")],
    ),
]
HOSTILE_URLS = [
    "/items/1e400",
    "/items/NaN",
    "/items/-1",
    "/items/0",
    "/items/99999999999999999999",
    "/items/%00",
    "/items/%ED%A0%80",
    "/orders/99999999999999999999",
    "/orders/1.5",
    "/items?limit=NaN",
    "/items?limit=1e400",
    "/items?offset=99999999999999999999",
    "/items?min_price=NaN",
    "/items?min_price=Infinity",
    "/items?min_price=1e400",
    "/items?max_price=-0.001",
    "/items?q=%00",
    "/items?q=%ED%A0%80",
    "/items?category=%00",
    "/items?status=%00",
    "/items?sort=%00",
    "/items?sort=name,,id",
    "/items?created_after=0001-01-01T00:00:00%2B05:00",
    "/items?created_after=9999-12-31T23:59:59-05:00",
    "/items?created_before=1e400",
    "/items/keyset?cursor=%00",
    "/items/keyset?cursor=" + "A" * 10_000 + ".x",
    "/items/deleted?limit=" + "9" * 5000,
]


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
        reply = await c.post("/items", json={**ITEM, "stock": 5})
        assert reply.status_code == 201
        yield c


async def snapshot(sessions: Sessions) -> tuple[Any, ...]:
    async with sessions() as session:
        items = await session.execute(select(Item.id, Item.version, Item.stock))
        orders = await session.scalar(select(func.count()).select_from(Order))
        return tuple(items.all()), orders


def with_value(template: dict[str, Any], path: tuple[str | int, ...], raw: str):
    """The template as JSON text, with the value at `path` replaced by `raw`."""
    marker = "__hostile__"
    document = json.loads(json.dumps(template))
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = marker
    return json.dumps(document).replace(f'"{marker}"', raw).encode()


async def test_hostile_values_in_any_body_field_are_422(
    client: httpx.AsyncClient, app: FastAPI
):
    before = await snapshot(app.state.sessions)
    problems = []
    for method, url, template, paths in ROUTES:
        headers = {**JSON, "If-Match": '"1"'}
        for path in paths:
            for raw in HOSTILE_VALUES:
                content = with_value(template, path, raw)
                reply = await client.request(
                    method, url, content=content, headers=headers
                )
                if reply.status_code != 422 or "detail" not in reply.json():
                    problems.append((method, url, path, raw, reply.status_code))
    assert not problems
    assert await snapshot(app.state.sessions) == before


async def test_unparsable_bodies_are_400_and_wrong_shapes_422(
    client: httpx.AsyncClient, app: FastAPI
):
    before = await snapshot(app.state.sessions)
    problems = []
    expected = dict.fromkeys(UNPARSABLE_BODIES, 400) | dict.fromkeys(
        WRONG_SHAPE_BODIES, 422
    )
    for method, url, _, _ in ROUTES:
        for content, code in expected.items():
            reply = await client.request(method, url, content=content, headers=JSON)
            if reply.status_code != code:
                problems.append((method, url, content[:20], reply.status_code))
        for headers in ({"content-type": "text/plain"}, {}):
            reply = await client.request(
                method, url, content=b'{"name": "\xff"}', headers=headers
            )
            if reply.status_code not in {400, 422}:
                problems.append((method, url, headers, reply.status_code))
    assert not problems
    assert await snapshot(app.state.sessions) == before


async def test_hostile_urls_and_headers_never_yield_a_5xx(
    client: httpx.AsyncClient, app: FastAPI
):
    trash = await client.post("/items", json={**ITEM, "name": "in the trash"})
    assert (await client.delete(f"/items/{trash.json()['id']}")).status_code == 204
    before = await snapshot(app.state.sessions)
    problems = []
    for url in HOSTILE_URLS:
        reply = await client.get(url)
        # 200 happens: %ED%A0%80 decodes to U+FFFD, a valid search
        if reply.status_code not in {200, 400, 404, 422}:
            problems.append((url, reply.status_code))
    for etag in ('"1', '"2147483648"', '"9' * 100 + '"', b"\xe9", '"-1"', "", " "):
        reply = await client.patch(
            "/items/1", json={"stock": 0}, headers={"If-Match": etag}
        )
        if reply.status_code != 412:
            problems.append((etag, reply.status_code))
        for method, url in (("DELETE", "/items/1"), ("POST", "/items/2/restore")):
            reply = await client.request(method, url, headers={"If-Match": etag})
            if reply.status_code != 412:  # 1 live, 2 deleted: only stale
                problems.append((method, etag, reply.status_code))
        reply = await client.get("/items/1", headers={"If-None-Match": etag})
        if reply.status_code != 200:  # never the current ETag
            problems.append(("If-None-Match", etag, reply.status_code))
    assert not problems
    assert await snapshot(app.state.sessions) == before

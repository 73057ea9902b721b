"""The reference API's GET /items/export: streamed CSV and NDJSON, both backends.

The recipe is the Outside the request page's (snippets/background.py): these
tests hold the reference API to its contract as built, on the Reference API
page (docs/inventory.md: "The contract" and "The export").
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from snippets.inventory import create_app
from snippets.inventory.models import Item, utcnow

Sessions = async_sessionmaker[AsyncSession]

# FastAPI builds an app's routes lazily, which costs more than a test: the
# tests share one app, pointed at a new database each.
APP = create_app()
FIELDS = [
    "id",
    "name",
    "category",
    "status",
    "price",
    "stock",
    "version",
    "created_at",
    "updated_at",
]
ROWS = 2_500  # more than two yield_per batches of 1,000


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


async def add_items(client: httpx.AsyncClient) -> None:
    """Six items over two categories and statuses; item 3 deleted."""
    rows = [
        {
            "name": f"{word} {n}",
            "category": "kitchen" if n % 2 else "garden",
            "status": "active" if n < 4 else "draft",
            "price": f"{n}.50",
            "stock": n,
        }
        for n, word in enumerate(["Mug", "Rake", "Cup", "Hose", "mug", "Pot"], 1)
    ]
    assert (await client.post("/items/bulk", json={"items": rows})).is_success
    assert (await client.delete("/items/3")).status_code == 204


async def seed_rows(sessions: Sessions, rows: int) -> None:
    now = utcnow()
    async with sessions.begin() as session:
        await session.execute(
            insert(Item),
            [
                {
                    "name": f"item {n}",
                    "category": "bulk",
                    "status": "active",
                    "price": Decimal("1.25"),
                    "stock": 1,
                    "created_at": now,
                    "updated_at": now,
                }
                for n in range(rows)
            ],
        )


def ids_of_csv(text: str) -> list[int]:
    return [int(row[0]) for row in list(csv.reader(io.StringIO(text)))[1:]]


async def test_csv_has_a_header_row_and_every_live_item_by_id(
    client: httpx.AsyncClient,
):
    await add_items(client)
    reply = await client.get("/items/export", params={"format": "csv"})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(reply.text)))
    assert rows[0] == FIELDS
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 4, 5, 6]  # 3 is deleted
    mug = (await client.get("/items/1")).json()
    assert dict(zip(FIELDS, rows[1], strict=True)) == {
        k: str(v) for k, v in mug.items()
    }
    assert rows[1][FIELDS.index("price")] == "1.50"  # a decimal string
    assert rows[1][FIELDS.index("created_at")].endswith("+00:00")


async def test_csv_is_the_default_format(client: httpx.AsyncClient):
    await add_items(client)
    reply = await client.get("/items/export")
    assert reply.headers["content-type"] == "text/csv; charset=utf-8"
    assert ids_of_csv(reply.text) == [1, 2, 4, 5, 6]


async def test_ndjson_lines_are_the_items_as_get_returns_them(
    client: httpx.AsyncClient,
):
    await add_items(client)
    reply = await client.get("/items/export", params={"format": "ndjson"})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/x-ndjson"
    assert reply.text.endswith("\n")
    lines = [json.loads(line) for line in reply.text.splitlines()]
    expected = [(await client.get(f"/items/{i}")).json() for i in (1, 2, 4, 5, 6)]
    assert lines == expected


@pytest.mark.parametrize(
    "params",
    [
        {"category": "kitchen"},
        {"status": ["draft"], "category": ["kitchen", "garden"]},
        {"q": "MUG"},
        {"min_price": "2.50", "max_price": "5.50"},
        {"sort": "-price", "limit": 100},  # sort and limit: not export's
    ],
    ids=["category", "status and categories", "q", "price range", "sort"],
)
async def test_the_export_applies_the_filters_of_the_listing(
    client: httpx.AsyncClient, params: dict[str, Any]
):
    await add_items(client)
    listing = await client.get(
        "/items", params={k: v for k, v in params.items() if k != "sort"}
    )
    expected = sorted(item["id"] for item in listing.json()["items"])
    export_params = {k: v for k, v in params.items() if k not in ("limit", "sort")}
    reply = await client.get("/items/export", params=export_params)
    assert reply.status_code == 200
    assert ids_of_csv(reply.text) == expected
    assert expected  # the filter matched something


async def test_the_export_applies_the_time_filters(client: httpx.AsyncClient):
    await add_items(client)
    created = (await client.get("/items/2")).json()["created_at"]
    reply = await client.get(
        "/items/export",
        params={"format": "ndjson", "created_after": created},
    )
    assert [json.loads(x)["id"] for x in reply.text.splitlines()] == [1, 2, 4, 5, 6]
    later = (
        await client.get(
            "/items/export",
            params={
                "created_after": "2999-01-01T00:00:00Z",
            },
        )
    ).text
    assert later.splitlines() == [",".join(FIELDS)]  # the header row only


async def test_csv_quotes_what_it_must(client: httpx.AsyncClient):
    tricky = 'Desk, "oak"\nwith a drawer'
    reply = await client.post(
        "/items", json={"name": tricky, "category": "odd", "price": "1.00"}
    )
    assert reply.status_code == 201
    rows = list(csv.reader(io.StringIO((await client.get("/items/export")).text)))
    assert rows[1][1] == tricky


@pytest.mark.parametrize(
    "params",
    [
        {"format": "xml"},
        {"format": ""},
        {"format": "CSV"},
        {"category": ""},
        {"min_price": "3", "max_price": "2"},
        {"status": "sold"},
    ],
    ids=["xml", "empty format", "upper case", "empty filter", "min>max", "status"],
)
async def test_bad_export_parameters_are_422(
    client: httpx.AsyncClient, params: dict[str, str]
):
    assert (await client.get("/items/export", params=params)).status_code == 422


async def test_export_is_not_read_as_an_item_id(client: httpx.AsyncClient):
    reply = await client.get("/items/export")
    assert reply.status_code == 200  # /items/{item_id} would answer 422
    assert reply.text.splitlines() == [",".join(FIELDS)]


def engine_of(sessions: Sessions) -> AsyncEngine:
    engine: AsyncEngine = sessions.kw["bind"]
    return engine


async def test_a_client_that_leaves_mid_stream_returns_the_connection(
    app: FastAPI,
):
    await seed_rows(app.state.sessions, ROWS)
    engine = engine_of(app.state.read_sessions)
    first_chunk_sent = asyncio.Event()
    chunks: list[bytes] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await first_chunk_sent.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            chunks.append(message["body"])
            first_chunk_sent.set()
            await asyncio.sleep(0)  # let the disconnect be noticed

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items/export",
        "raw_path": b"/items/export",
        "query_string": b"format=csv",
        "root_path": "",
        "headers": [(b"host", b"t")],
        "server": ("t", 80),
        "client": ("c", 1),
        "app": app,
    }
    await app(scope, receive, send)
    assert 0 < len(chunks) < ROWS  # it stopped early ...
    assert engine.pool.checkedout() == 0  # ... and gave its connection back


async def test_the_export_is_documented(client: httpx.AsyncClient):
    schema = (await client.get("/openapi.json")).json()
    get = schema["paths"]["/items/export"]["get"]
    names = {p["name"] for p in get["parameters"]}
    assert {"format", "status", "category", "min_price", "max_price", "q"} <= names
    assert {"created_after", "created_before"} <= names
    assert "sort" not in names
    assert "limit" not in names
    (fmt,) = [p for p in get["parameters"] if p["name"] == "format"]
    assert fmt["schema"]["enum"] == ["csv", "ndjson"]
    assert set(get["responses"]) == {"200", "422", "503"}
    assert set(get["responses"]["200"]["content"]) == {
        "text/csv",
        "application/x-ndjson",
    }
    # Declared before /items/{item_id}, so that "export" is not an id.
    paths = list(schema["paths"])
    assert paths.index("/items/export") < paths.index("/items/{item_id}")

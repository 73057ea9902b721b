"""Extracted vs inline: status codes, composition, mass assignment, both ways."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import Request
from pydantic_core import PydanticSerializationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from snippets.extracted_vs_inline import (
    DuplicateNameError,
    Item,
    ItemCreate,
    ItemNotFoundError,
    ItemUpdate,
    client_for,
    create_app,
    create_item,
    delete_item,
    get_item,
    update_item,
)

PEN = {"name": "Pen", "price": "1.50", "stock": 10}


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(database_url)) as client:
        yield client


def sessions_of(client: httpx.AsyncClient) -> async_sessionmaker[AsyncSession]:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return transport.app.state.sessions  # type: ignore[attr-defined,no-any-return]


async def names(client: httpx.AsyncClient) -> list[str]:
    return [item["name"] for item in (await client.get("/items")).json()]


async def test_create_returns_201_with_the_public_fields_only(client):
    reply = await client.post("/items", json=PEN)
    assert reply.status_code == 201
    assert reply.json() == {"id": reply.json()["id"], **PEN}
    assert "cost" not in reply.json()


async def test_naive_response_publishes_internal_fields_as_floats(client):
    pen_id = (await client.post("/items", json=PEN)).json()["id"]
    raw = await client.get(f"/inline/items/{pen_id}/raw")
    assert raw.status_code == 200
    assert raw.json()["cost"] == 0.0  # internal, published
    assert raw.json()["price"] == 1.5  # a float, not the exact "1.50"
    fixed = await client.get(f"/items/{pen_id}")
    assert fixed.json() == {"id": pen_id, **PEN}


async def test_an_any_return_type_cannot_serialize_the_orm_object(database_url):
    """The page's aside: `-> Any` is no cure for a missing response model."""
    app = create_app(database_url)

    @app.get("/any/{item_id}")
    async def read_item_any(item_id: int, request: Request) -> Any:
        async with request.app.state.sessions() as session:
            return await session.get(Item, item_id)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)  # raise what the server would log
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            pen_id = (await c.post("/items", json=PEN)).json()["id"]
            with pytest.raises(PydanticSerializationError, match="unknown type"):
                await c.get(f"/any/{pen_id}")
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get(f"/any/{pen_id}")).status_code == 500


async def test_only_the_response_model_route_documents_its_output(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    raw = paths["/inline/items/{item_id}/raw"]["get"]["responses"]["200"]
    fixed = paths["/items/{item_id}"]["get"]["responses"]["200"]
    assert raw["content"]["application/json"]["schema"] == {}
    schema = fixed["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ItemOut"}


@pytest.mark.parametrize("prefix", ["/items", "/inline/items"])
async def test_duplicate_name_is_409_in_both_styles(client, prefix):
    assert (await client.post(prefix, json=PEN)).status_code == 201
    reply = await client.post(prefix, json=PEN)
    assert reply.status_code == 409
    assert await names(client) == ["Pen"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "", "price": "1"}, "name"),
        ({"name": "x" * 201, "price": "1"}, "name"),
        ({"name": "Pen", "price": "-1"}, "price"),
        ({"name": "Pen", "price": "1.001"}, "price"),
        ({"name": "Pen", "price": "NaN"}, "price"),
        ({"name": "Pen", "price": "1", "stock": -1}, "stock"),
        ({"name": "Pen", "price": "1", "stock": 2**31}, "stock"),
        ({"name": "Pen", "price": "1", "id": 5}, "id"),
        ({"price": "1"}, "name"),
    ],
)
async def test_invalid_create_is_422_naming_the_field(client, body, field):
    reply = await client.post("/items", json=body)
    assert reply.status_code == 422
    assert [e["loc"][-1] for e in reply.json()["detail"]] == [field]
    assert await names(client) == []


async def test_unknown_id_is_404_on_every_route(client):
    assert (await client.get("/items/42")).status_code == 404
    assert (await client.patch("/items/42", json={"stock": 1})).status_code == 404
    assert (await client.delete("/items/42")).status_code == 404
    assert (await client.get("/inline/items/42")).status_code == 404
    assert (await client.patch("/inline/items/42", json={})).status_code == 404


async def test_patch_changes_only_the_fields_sent(client):
    created = (await client.post("/items", json=PEN)).json()
    reply = await client.patch(f"/items/{created['id']}", json={"stock": 7})
    assert reply.status_code == 200
    assert reply.json() == {**created, "stock": 7}
    assert (await client.get(f"/items/{created['id']}")).json() == reply.json()


async def test_patch_rename_onto_a_taken_name_is_409_and_changes_nothing(client):
    await client.post("/items", json=PEN)
    ink = (await client.post("/items", json={"name": "Ink", "price": "3"})).json()
    reply = await client.patch(f"/items/{ink['id']}", json={"name": "Pen"})
    assert reply.status_code == 409
    assert (await client.get(f"/items/{ink['id']}")).json()["name"] == "Ink"


@pytest.mark.parametrize("field", ["name", "price", "stock"])
async def test_patch_with_explicit_null_is_422(client, field):
    created = (await client.post("/items", json=PEN)).json()
    reply = await client.patch(f"/items/{created['id']}", json={field: None})
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", field]


async def test_schema_patch_refuses_every_unknown_or_internal_field(client):
    created = (await client.post("/items", json=PEN)).json()
    hostile = {"id": 99, "cost": "0", "nmae": "Mug"}
    reply = await client.patch(f"/items/{created['id']}", json=hostile)
    assert reply.status_code == 422
    assert sorted(e["loc"][-1] for e in reply.json()["detail"]) == [
        "cost",
        "id",
        "nmae",
    ]
    assert (await client.get(f"/items/{created['id']}")).json() == created


async def test_naive_setattr_patch_rewrites_the_primary_key_and_internal_cost(client):
    created = (await client.post("/items", json=PEN)).json()
    hostile = {"id": 99, "cost": "0.01", "nmae": "Mug"}
    reply = await client.patch(f"/inline/items/{created['id']}", json=hostile)
    assert reply.status_code == 200
    assert reply.json()["id"] == 99
    assert reply.json()["name"] == "Pen"  # the typo was silently ignored
    assert (await client.get(f"/items/{created['id']}")).status_code == 404
    async with sessions_of(client)() as session:
        item = await session.get(Item, 99)
        assert item is not None
        assert item.cost == Decimal("0.01")


async def test_delete_is_204_then_404(client):
    created = (await client.post("/items", json=PEN)).json()
    first = await client.delete(f"/items/{created['id']}")
    assert first.status_code == 204
    assert first.content == b""
    assert (await client.delete(f"/items/{created['id']}")).status_code == 404


async def test_extracted_batch_is_all_or_nothing(client):
    batch = [{"name": "Ink", "price": "3"}, {"name": "Ink", "price": "3"}]
    assert (await client.post("/items/batch", json=batch)).status_code == 409
    assert await names(client) == []
    good = [{"name": "Ink", "price": "3"}, {"name": "Nib", "price": "1"}]
    reply = await client.post("/items/batch", json=good)
    assert reply.status_code == 201
    assert [item["name"] for item in reply.json()] == ["Ink", "Nib"]


async def test_inline_batch_commits_halfway_before_failing(client):
    batch = [{"name": "Ink", "price": "3"}, {"name": "Ink", "price": "3"}]
    assert (await client.post("/inline/items/batch", json=batch)).status_code == 409
    assert await names(client) == ["Ink"]


async def test_data_layer_composes_without_committing(database_url: str):
    app = create_app(database_url)
    async with client_for(app):
        sessions = app.state.sessions
        async with sessions() as session:
            pen = await create_item(session, ItemCreate.model_validate(PEN))
            await update_item(session, pen.id, ItemUpdate(stock=3))
            assert session.in_transaction()
            await session.rollback()  # the caller decides: nothing was committed
        async with sessions() as session:
            assert (await session.scalars(select(Item))).all() == []


async def test_data_layer_raises_domain_errors_not_http_errors(database_url: str):
    app = create_app(database_url)
    async with client_for(app), app.state.sessions() as session:
        with pytest.raises(ItemNotFoundError, match="item 7 not found"):
            await get_item(session, 7)
        with pytest.raises(ItemNotFoundError):
            await delete_item(session, 7)
        await create_item(session, ItemCreate.model_validate(PEN))
        with pytest.raises(DuplicateNameError, match="'Pen' already exists"):
            await create_item(session, ItemCreate.model_validate(PEN))


async def test_openapi_documents_both_styles(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/items", "/items/{item_id}", "/items/batch", "/inline/items"} <= set(paths)
    assert "422" in paths["/items"]["post"]["responses"]

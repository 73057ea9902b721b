"""Extracted vs inline: status codes, composition, mass assignment, both ways."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import Request
from fastapi.routing import APIRoute
from pydantic_core import PydanticSerializationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from snippets.extracted_vs_inline import (
    Base,
    DuplicateNameError,
    Item,
    ItemCreate,
    ItemNotFoundError,
    ItemUpdate,
    ItemUpdateNullable,
    Problem,
    SessionDep,
    allows_null,
    classify,
    client_for,
    create_app,
    create_item,
    create_item_naive,
    delete_item,
    get_item,
    get_or_create_item,
    get_read_session,
    get_session,
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
        with pytest.raises(IntegrityError) as duplicate:
            await create_item(session, ItemCreate.model_validate(PEN))
        assert classify(duplicate.value, Base.metadata).kind is Problem.UNIQUE


async def test_openapi_documents_both_styles(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/items", "/items/{item_id}", "/items/batch", "/inline/items"} <= set(paths)
    assert "422" in paths["/items"]["post"]["responses"]


# --- PATCH: omitted is unchanged, null is refused, and the schema says so ----


def patch_bodies(openapi: dict) -> list[dict]:
    """The JSON schema of every PATCH request body, $refs resolved."""
    bodies = []
    for path in openapi["paths"].values():
        if "patch" not in path or "requestBody" not in path["patch"]:
            continue
        schema = path["patch"]["requestBody"]["content"]["application/json"]
        ref = schema["schema"].get("$ref", "")
        if ref:
            schema = openapi["components"]["schemas"][ref.split("/")[-1]]
        else:
            schema = schema["schema"]
        bodies.append(schema)
    return bodies


async def test_no_published_patch_property_allows_null(client):
    openapi = (await client.get("/openapi.json")).json()
    bodies = patch_bodies(openapi)
    assert any("properties" in body for body in bodies)  # ItemUpdate is there
    for body in bodies:
        for name, prop in body.get("properties", {}).items():
            assert not allows_null(prop), name
            assert "default" not in prop, name  # omitted means unchanged


def test_naive_optional_patch_model_publishes_null_then_refuses_it():
    schema = ItemUpdateNullable.model_json_schema()["properties"]
    assert all(allows_null(prop) for prop in schema.values())
    with pytest.raises(ValueError, match="may be omitted, but not null"):
        ItemUpdateNullable.model_validate({"name": None})


async def test_patch_explicit_null_is_422_and_omitted_is_unchanged(client):
    created = (await client.post("/items", json=PEN)).json()
    url = f"/items/{created['id']}"
    assert (await client.patch(url, json={"stock": None})).status_code == 422
    reply = await client.patch(url, json={"price": "2.00"})
    assert reply.json() == {**created, "price": "2.00"}  # name, stock kept


def test_patch_model_changes_are_only_the_fields_sent():
    assert ItemUpdate.model_validate({"stock": 3}).changes() == {"stock": 3}
    assert ItemUpdate.model_validate({}).changes() == {}


# --- database errors: a duplicate is a duplicate, and nothing else is ---------


async def test_naive_data_layer_reports_a_check_failure_as_a_duplicate(
    database_url: str,
):
    app = create_app(database_url)
    free = ItemCreate.model_construct(name="Free", price=Decimal(-1), stock=0)
    async with client_for(app), app.state.sessions() as session:
        with pytest.raises(DuplicateNameError, match="'Free' already exists"):
            await create_item_naive(session, free)
        await session.rollback()
        assert await session.scalar(select(func.count()).select_from(Item)) == 0


async def test_check_failure_is_422_not_a_duplicate(database_url: str):
    app = create_app(database_url)

    @app.post("/unvalidated")  # as if the schema had missed the rule
    async def post_unvalidated(body: dict[str, Any], session: SessionDep) -> None:
        price = Decimal(body["price"])
        data = ItemCreate.model_construct(name=body["name"], price=price, stock=0)
        await create_item(session, data)

    async with client_for(app) as c:
        reply = await c.post("/unvalidated", json={"name": "Free", "price": -1})
    assert reply.status_code == 422
    detail = reply.json()["detail"]
    assert detail == "ck_items_price_not_negative: breaks a check constraint"
    assert "already exists" not in detail


async def test_duplicate_name_is_409_naming_the_field(client):
    await client.post("/items", json=PEN)
    reply = await client.post("/items", json=PEN)
    assert reply.json() == {"detail": "name already exists"}


# --- get-or-create in a savepoint -------------------------------------------


async def test_get_or_create_returns_the_existing_item(database_url: str):
    app = create_app(database_url)
    async with client_for(app):
        async with app.state.sessions.begin() as session:
            first = await get_or_create_item(session, ItemCreate.model_validate(PEN))
            again = await get_or_create_item(session, ItemCreate.model_validate(PEN))
            assert again.id == first.id
        async with app.state.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Item)) == 1


async def test_get_or_create_as_first_statement_rolls_back_with_the_transaction(
    database_url: str,
):
    """On SQLite, the SAVEPOINT must not start (and commit) a transaction."""
    app = create_app(database_url)
    async with client_for(app):
        async with app.state.sessions() as session:
            await get_or_create_item(session, ItemCreate.model_validate(PEN))
            await session.rollback()
        async with app.state.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Item)) == 0


# --- the dependencies ---------------------------------------------------------


def dependencies_of(route: APIRoute) -> set[object]:
    found, stack = set(), [route.dependant]
    while stack:
        dependant = stack.pop()
        found.add(dependant.call)
        stack.extend(dependant.dependencies)
    return found


async def test_every_get_reads_and_every_extracted_write_uses_session_dep(
    database_url: str,
):
    app = create_app(database_url)
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    for route in routes:
        calls = dependencies_of(route)
        if route.methods == {"GET"}:
            assert get_read_session in calls, route.path
            assert get_session not in calls, route.path
        elif not route.path.startswith("/inline"):
            assert get_session in calls, route.path

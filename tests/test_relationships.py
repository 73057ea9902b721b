"""Relationships: loading by statement count, server-set values, nested
writes, filters across tables, and soft delete across relationships."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError, InvalidRequestError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import joinedload, lazyload, selectinload

from snippets.relationships import (
    Customer,
    CustomerHasOrdersError,
    LineIn,
    NaiveLiveSession,
    NotFoundError,
    Order,
    OrderLine,
    Product,
    counted,
    create_app,
    create_order_naive,
    create_order_with_lines,
    get_order_with_lines,
    order_totals_naive,
    orders_buying,
    orders_with_lines,
    orders_with_lines_joined,
    rename_product,
    rename_product_refreshed,
    rename_product_returning,
    replace_lines_naive,
    restore_deleted_customer,
    seed_orders,
    shop_lifespan,
    soft_delete_customer,
    soft_delete_product,
    utcnow,
)

Sessions = async_sessionmaker[AsyncSession]
LAMP, CHAIR, MUG = 1, 2, 3
ANN, BO = 1, 2


@dataclass
class Shop:
    app: FastAPI
    engine: AsyncEngine
    sessions: Sessions
    client: httpx.AsyncClient


@pytest.fixture
async def shop(database_url: str) -> AsyncIterator[Shop]:
    """The page's app on an empty database, seeded with 50 orders."""
    app = create_app(database_url)
    async with shop_lifespan(app):
        await seed_orders(app.state.sessions)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t"
        ) as client:
            yield Shop(app, app.state.engine, app.state.sessions, client)


async def lines_of(sessions: Sessions, order_id: int) -> list[tuple[int, int, str]]:
    async with sessions() as session:
        order = await get_order_with_lines(session, order_id)
        return [
            (line.product_id, line.quantity, str(line.unit_price))
            for line in order.lines
        ]


async def count(sessions: Sessions, *criteria: object) -> int:
    async with sessions() as session:
        query = select(func.count(Order.id)).where(*criteria)  # type: ignore[arg-type]
        return await session.scalar(query) or 0


# Loading


async def test_naive_loading_sends_one_select_per_order(shop: Shop):
    async with shop.sessions() as session:
        with counted(shop.engine) as selects:
            totals = await order_totals_naive(session)
    assert len(totals) == 50
    assert len(selects) == 51


async def test_selectinload_sends_two_selects_whatever_the_count(shop: Shop):
    async with shop.sessions() as session:
        with counted(shop.engine) as selects:
            orders = await orders_with_lines(session)
        assert [len(order.lines) for order in orders] == [2] * 50
    assert len(selects) == 2
    assert " IN " in selects[1]


async def test_joinedload_sends_one_select_and_needs_unique(shop: Shop):
    async with shop.sessions() as session:
        with counted(shop.engine) as selects:
            orders = await orders_with_lines_joined(session)
        assert len(orders) == 50
        assert len({order.id for order in orders}) == 50
        assert len(selects) == 1
        query = select(Order).options(joinedload(Order.lines))
        with pytest.raises(InvalidRequestError, match="unique"):
            (await session.scalars(query)).all()


async def test_a_raise_relationship_fails_at_once_naming_itself(shop: Shop):
    async with shop.sessions() as session:
        order = (await session.scalars(select(Order).limit(1))).one()
        with pytest.raises(InvalidRequestError, match=r"'Order\.lines'"):
            _ = order.lines


async def test_awaitable_attrs_loads_one_relationship_on_purpose(shop: Shop):
    async with shop.sessions() as session:
        product = await session.get_one(Product, LAMP)
        with pytest.raises(InvalidRequestError):  # lazy="raise" still wins
            await product.awaitable_attrs.tags
        query = (
            select(Product)
            .where(Product.id == LAMP)
            .options(lazyload(Product.tags))  # a lazy load, asked for
            .execution_options(populate_existing=True)
        )
        product = (await session.scalars(query)).one()
        with counted(shop.engine) as selects:
            tags = await product.awaitable_attrs.tags
        assert sorted(tag.name for tag in tags) == ["desk", "sale"]
        assert len(selects) == 1


async def test_contains_eager_holds_only_the_matching_lines(shop: Shop):
    async with shop.sessions() as session:
        await orders_with_lines(session)  # full collections already held
        with counted(shop.engine) as selects:
            orders = await orders_buying(session, "Mug")
    assert len(selects) == 1
    assert len(orders) == 33  # every order with a Mug line, once
    for order in orders:
        assert [line.product.name for line in order.lines] == ["Mug"]


# Values the database sets


async def test_insert_fetches_the_server_default_without_a_select(shop: Shop):
    async with shop.sessions.begin() as session:
        pen = Product(name="Pen", price=Decimal(2))
        session.add(pen)
        with counted(shop.engine) as selects:
            await session.flush()
        assert pen.updated_at.tzinfo is not None
        assert selects == []


async def test_naive_update_leaves_the_server_value_expired(shop: Shop):
    async with shop.sessions.begin() as session:
        product = await rename_product(session, LAMP, "Desk lamp")
        with pytest.raises(SQLAlchemyError) as raised:
            _ = product.updated_at
        cause = getattr(raised.value, "orig", None) or raised.value
        assert type(cause).__name__ == "MissingGreenlet"


async def test_refresh_returning_and_eager_defaults_read_the_new_value(
    shop: Shop,
):
    async with shop.sessions.begin() as session:
        product = await rename_product_refreshed(session, LAMP, "A")
        assert product.updated_at.tzinfo is not None
        assert (await rename_product_returning(session, LAMP, "B")).tzinfo
        order = await session.get_one(Order, 1)
        order.note = "gift"
        with counted(shop.engine) as selects:
            await session.flush()  # eager_defaults: UPDATE ... RETURNING
        assert order.updated_at.tzinfo is not None
        assert selects == []


# Writing a parent and its children


async def test_naive_create_leaves_an_order_without_lines(shop: Shop):
    lines = [LineIn(product_id=LAMP, quantity=1), LineIn(product_id=99, quantity=1)]
    with pytest.raises(DBAPIError):
        await create_order_naive(shop.sessions, ANN, lines)
    assert await count(shop.sessions, ~Order.lines.any()) == 1


async def test_creating_an_order_is_all_or_nothing(shop: Shop):
    lines = [LineIn(product_id=LAMP, quantity=1), LineIn(product_id=99, quantity=1)]
    with pytest.raises(NotFoundError, match="products: 99"):
        async with shop.sessions.begin() as session:
            await create_order_with_lines(session, ANN, lines)
    assert await count(shop.sessions) == 50
    reply = await shop.client.post(
        "/orders",
        json={"customer_id": ANN, "lines": [{"product_id": 99, "quantity": 1}]},
    )
    assert reply.status_code == 404
    assert await count(shop.sessions) == 50


async def test_an_order_and_its_lines_are_created_in_one_request(shop: Shop):
    body = {
        "customer_id": BO,
        "lines": [
            {"product_id": MUG, "quantity": 3},
            {"product_id": CHAIR, "quantity": 1},
        ],
    }
    reply = await shop.client.post("/orders", json=body)
    assert reply.status_code == 201
    created = reply.json()
    assert created["customer"] == "bo"
    assert [(line["product"], line["quantity"]) for line in created["lines"]] == [
        ("Chair", 1),
        ("Mug", 3),
    ]
    assert await lines_of(shop.sessions, created["id"]) == [
        (CHAIR, 1, "45.00"),
        (MUG, 3, "8.00"),
    ]


async def test_naive_replace_reprices_the_lines_it_keeps(shop: Shop):
    async with shop.sessions.begin() as session:
        await session.execute(
            update(Product).where(Product.id == LAMP).values(price=25)
        )
    async with shop.sessions.begin() as session:
        order = await get_order_with_lines(session, 1)
        new = [LineIn(product_id=LAMP, quantity=5)]
        await replace_lines_naive(session, order, new)
    assert await lines_of(shop.sessions, 1) == [(LAMP, 5, "25.00")]


async def test_replace_adds_changes_removes_and_keeps_the_price_paid(
    shop: Shop,
):
    assert await lines_of(shop.sessions, 1) == [(LAMP, 1, "20.00"), (CHAIR, 1, "45.00")]
    async with shop.sessions.begin() as session:
        await session.execute(
            update(Product).where(Product.id == LAMP).values(price=25)
        )
    body = [{"product_id": LAMP, "quantity": 5}, {"product_id": MUG, "quantity": 1}]
    reply = await shop.client.put("/orders/1/lines", json=body)
    assert reply.status_code == 200
    assert await lines_of(shop.sessions, 1) == [(LAMP, 5, "20.00"), (MUG, 1, "8.00")]
    async with shop.sessions() as session:  # the Chair line is gone, not orphaned
        chair_lines = (
            select(func.count())
            .select_from(OrderLine)
            .where(OrderLine.order_id == 1, OrderLine.product_id == CHAIR)
        )
        assert await session.scalar(chair_lines) == 0


async def test_a_failed_replace_changes_nothing(shop: Shop):
    before = await lines_of(shop.sessions, 1)
    body = [{"product_id": MUG, "quantity": 1}, {"product_id": 99, "quantity": 1}]
    reply = await shop.client.put("/orders/1/lines", json=body)
    assert reply.status_code == 404
    assert reply.json() == {"detail": "unknown or deleted products: 99"}
    assert await lines_of(shop.sessions, 1) == before


@pytest.mark.parametrize(
    "body",
    [
        {"customer_id": 1, "lines": []},
        {"customer_id": 1, "lines": [{"product_id": 1, "quantity": 0}]},
        {"customer_id": 1, "lines": [{"product_id": 2**40, "quantity": 1}]},
        {
            "customer_id": 1,
            "lines": [
                {"product_id": 1, "quantity": 1},
                {"product_id": 1, "quantity": 2},
            ],
        },
        {"customer_id": 1, "lines": [{"product_id": 1, "quantity": 1}], "x": 1},
        {"customer_id": None, "lines": [{"product_id": 1, "quantity": 1}]},
    ],
    ids=["no lines", "zero", "huge id", "product twice", "unknown field", "null"],
)
async def test_hostile_order_bodies_are_422_and_store_nothing(shop: Shop, body):
    reply = await shop.client.post("/orders", json=body)
    assert reply.status_code == 422
    assert await count(shop.sessions) == 50


# Filtering and sorting across relationships


async def test_filters_across_relationships_match_each_order_once(shop: Shop):
    reply = await shop.client.get("/orders", params={"tag": "desk", "limit": 100})
    ids = [row["id"] for row in reply.json()]
    # Lamp (desk) and Chair (desk) on one order: still listed once.
    assert len(ids) == len(set(ids))
    async with shop.sessions() as session:
        with_desk = select(OrderLine.order_id).where(
            OrderLine.product_id.in_([LAMP, CHAIR])
        )
        expected = sorted(set((await session.scalars(with_desk)).all()))
    assert ids == expected
    customer = await shop.client.get("/orders", params={"customer": "bo", "limit": 100})
    assert {row["customer"] for row in customer.json()} == {"bo"}
    assert len(customer.json()) == 25
    product = await shop.client.get("/orders", params={"product": "Mug", "limit": 100})
    assert len(product.json()) == 33


async def test_sort_by_customer_ignores_case_and_breaks_ties_by_id(shop: Shop):
    reply = await shop.client.get("/orders", params={"sort": "customer", "limit": 100})
    rows = [(row["customer"], row["id"]) for row in reply.json()]
    assert rows == sorted(rows, key=lambda r: (r[0].lower(), r[1]))
    assert rows[0][0] == "Ann"  # "Ann" < "bo" only when case is ignored
    reply = await shop.client.get("/orders", params={"sort": "-customer", "limit": 3})
    assert [row["id"] for row in reply.json()] == [49, 47, 45]  # bo, newest


@pytest.mark.parametrize(
    "params",
    [{"sort": "name"}, {"sort": ""}, {"limit": 0}, {"limit": 101}, {"tag": ""}],
)
async def test_bad_list_parameters_are_422(shop: Shop, params):
    reply = await shop.client.get("/orders", params=params)
    assert reply.status_code == 422


async def test_the_list_is_one_select_with_totals_from_the_database(shop: Shop):
    with counted(shop.engine) as selects:
        reply = await shop.client.get("/orders", params={"limit": 100})
    assert len(selects) == 1
    rows = reply.json()
    assert len(rows) == 50
    async with shop.sessions() as session:
        for order in await orders_with_lines(session):
            row = rows[order.id - 1]
            total = sum(line.quantity * line.unit_price for line in order.lines)
            assert row == {
                "id": order.id,
                "customer": row["customer"],
                "lines": 2,
                "total": f"{total:.2f}",
            }


# Soft delete across relationships


async def test_naive_filter_loses_the_deleted_product_of_an_old_order(shop: Shop):
    async with shop.sessions.begin() as session:
        await soft_delete_product(session, CHAIR)
    naive = async_sessionmaker(shop.engine, sync_session_class=NaiveLiveSession)
    async with naive() as session:
        order = await get_order_with_lines(session, 2)
        products = [line.product for line in order.lines]
        assert products == [None, products[1]]  # the Chair, deleted: gone
        assert products[1] is not None


@pytest.mark.parametrize(
    "load",
    [
        selectinload(Order.lines).selectinload(OrderLine.product),
        selectinload(Order.lines).joinedload(OrderLine.product),
        joinedload(Order.lines).joinedload(OrderLine.product),
    ],
    ids=["selectin", "selectin+joined", "joined"],
)
async def test_history_loads_the_deleted_product_with_every_strategy(shop: Shop, load):
    async with shop.sessions.begin() as session:
        await soft_delete_product(session, CHAIR)
    async with shop.sessions() as session:
        query = select(Order).where(Order.id == 2).options(load)
        order = (await session.scalars(query)).unique().one()
        assert [line.product.name for line in order.lines] == ["Chair", "Mug"]
    reply = await shop.client.get("/orders/2")
    assert [line["product"] for line in reply.json()["lines"]] == ["Chair", "Mug"]


async def test_lists_and_counts_still_hide_the_deleted(shop: Shop):
    async with shop.sessions.begin() as session:
        await soft_delete_product(session, CHAIR)
        await session.execute(
            update(Order).where(Order.id == 1).values(deleted_at=utcnow())
        )
    async with shop.sessions() as session:
        names = (await session.scalars(select(Product.name))).all()
        assert sorted(names) == ["Lamp", "Mug"]
        assert await session.scalar(select(func.count()).select_from(Product)) == 2
        joined = select(Order.id).join(Order.customer).where(Order.id < 3)
        assert (await session.scalars(joined)).all() == [2]
    listed = await shop.client.get("/orders", params={"limit": 100})
    assert 1 not in [row["id"] for row in listed.json()]
    assert (await shop.client.get("/orders/1")).status_code == 404
    chair = {"customer_id": ANN, "lines": [{"product_id": CHAIR, "quantity": 1}]}
    assert (await shop.client.post("/orders", json=chair)).status_code == 404


async def test_deleting_a_customer_with_orders_is_refused_by_default(shop: Shop):
    reply = await shop.client.delete(f"/customers/{ANN}")
    assert reply.status_code == 409
    assert "25 live orders" in reply.json()["detail"]
    assert await count(shop.sessions, Order.customer_id == ANN) == 25
    async with shop.sessions() as session:
        assert await session.get(Customer, ANN) is not None


async def test_cascade_and_restore_bring_back_exactly_what_was_taken(
    shop: Shop,
):
    async with shop.sessions.begin() as session:
        await session.execute(
            update(Order).where(Order.id == 2).values(deleted_at=utcnow())
        )  # deleted earlier, on its own
    reply = await shop.client.delete(f"/customers/{ANN}", params={"cascade": "true"})
    assert reply.status_code == 204
    assert await count(shop.sessions, Order.customer_id == ANN) == 0
    assert await count(shop.sessions, Order.customer_id == BO) == 25
    reply = await shop.client.post(f"/customers/{ANN}/restore")
    assert reply.status_code == 204
    assert await count(shop.sessions, Order.customer_id == ANN) == 24
    assert (await shop.client.get("/orders/2")).status_code == 404
    again = await shop.client.post(f"/customers/{ANN}/restore")
    assert again.status_code == 404


async def test_refused_and_missing_deletes_change_nothing(shop: Shop):
    with pytest.raises(CustomerHasOrdersError):
        async with shop.sessions.begin() as session:
            await soft_delete_customer(session, BO, cascade=False)
    with pytest.raises(NotFoundError):
        async with shop.sessions.begin() as session:
            await soft_delete_customer(session, 99, cascade=True)
    with pytest.raises(NotFoundError):
        async with shop.sessions.begin() as session:
            await restore_deleted_customer(session, BO)  # not deleted
    assert await count(shop.sessions) == 50
    assert (await shop.client.delete("/products/99")).status_code == 404

"""Transactions: all or nothing, no oversell, no deadlock, savepoints, HTTP."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InvalidRequestError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
)

from snippets import transactions
from snippets.transactions import (
    Item,
    LineIn,
    Order,
    OrderIn,
    OrderLine,
    OutOfStockError,
    Redemption,
    SessionDep,
    UnknownItemError,
    create_app,
    create_engine,
    create_session_factory,
    database_error,
    demo_all_or_nothing,
    demo_begin,
    demo_http,
    demo_naive_oversell,
    demo_no_oversell,
    demo_no_savepoint,
    demo_price,
    demo_returned_error,
    demo_savepoint,
    demo_sqlite_quirk,
    outcome,
    place_order,
    place_order_and_commit,
    place_order_naive,
    place_order_with_row_locks,
    redeem_coupon,
    redeem_coupon_without_savepoint,
    short,
)

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = (ROOT / "snippets" / "transactions.py").read_text()
PAGE = (ROOT / "docs" / "transactions.md").read_text()

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def app(database_url: str) -> AsyncIterator:
    app = create_app(database_url)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
def sessions(app) -> Sessions:
    return app.state.sessions


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


def engine_of(sessions: Sessions) -> AsyncEngine:
    return sessions.kw["bind"]


async def add(sessions: Sessions, stock: int, price: str = "2.50") -> int:
    async with sessions.begin() as session:
        count = len((await session.scalars(select(Item.id))).all())
        item = Item(name=f"item {count + 1}", price=Decimal(price), stock=stock)
        session.add(item)
    return item.id


async def snapshot(sessions: Sessions) -> tuple[int, int, dict[int, int]]:
    """(orders, order lines, stock per item): what a failure must not change."""
    async with sessions() as session:
        orders = len((await session.scalars(select(Order.id))).all())
        lines = len((await session.scalars(select(OrderLine.id))).all())
        stock = dict((await session.execute(select(Item.id, Item.stock))).all())
    return orders, lines, stock


def lines_of(*pairs: tuple[int, int]) -> list[LineIn]:
    return [LineIn(item_id=i, quantity=q) for i, q in pairs]


async def order_concurrently(
    sessions: Sessions, place, orders: list[list[LineIn]]
) -> Counter[str]:
    start = asyncio.Barrier(len(orders))

    async def one(lines: list[LineIn]) -> None:
        await start.wait()
        async with sessions.begin() as session:
            await place(session, "Ann", lines)

    results = await asyncio.gather(*map(one, orders), return_exceptions=True)
    return Counter(map(outcome, results))


def tab(title: str, nth: int = 1) -> list[str]:
    """The text block in the page's nth tab of that title."""
    after = PAGE.split(f'=== "{title}"\n')[nth]
    block = after.split("```text\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines()]


async def story(sessions: Sessions, results: list[object], item_id: int) -> list[str]:
    """What the naive demo prints, for any run of one-unit orders."""
    _, lines, stock = await snapshot(sessions)
    return [
        str(Counter(map(outcome, results))),
        f"lamps sold: {lines} of 5",
        f"stock left: {stock[item_id]}",
    ]


def printed(*sections: str) -> list[str]:
    """The #> lines of the snippet's named sections, in order."""
    found = []
    for name in sections:
        body = SNIPPET.split(f"# --8<-- [start:{name}]")[1].split("# --8<-- [end:")[0]
        found += re.findall(r"^\s*#> (.*)$", body, flags=re.M)
    return found


# The naive way -------------------------------------------------------------


async def naive_orders(sessions: Sessions, item_id: int, n: int) -> list[object]:
    """n one-unit naive orders; every one reads the stock before any writes."""
    everyone_has_read = asyncio.Barrier(n)
    one_writer = asyncio.Lock()

    async def one() -> None:
        async with sessions() as session:
            await place_order_naive(session, "Ann", lines_of((item_id, 1)))
            await everyone_has_read.wait()
            async with one_writer:
                await session.commit()

    return await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)


async def test_naive_read_check_write_oversells(database_url: str, capsys):
    await demo_naive_oversell(database_url)  # twenty orders for five lamps
    title = "PostgreSQL" if database_url.startswith("postgresql") else None
    expected = tab(title or "SQLite, default driver")
    assert capsys.readouterr().out.splitlines() == expected
    assert expected[1:] == ["lamps sold: 20 of 5", "stock left: 4"]


async def test_cookbook_engine_serializes_even_the_naive_order_on_sqlite(
    sqlite_url: str,
):
    """SQLite only: its one write lock, taken at BEGIN IMMEDIATE by the
    cookbook's write transactions, covers the read too."""
    sessions = create_session_factory(create_engine(sqlite_url))
    engine = engine_of(sessions)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(transactions.Base.metadata.create_all)
        lamp = await add(sessions, stock=5)
        start = asyncio.Barrier(20)

        async def one() -> None:
            await start.wait()
            async with sessions.begin() as session:
                await place_order_naive(session, "Ann", lines_of((lamp, 1)))

        results = await asyncio.gather(
            *(one() for _ in range(20)), return_exceptions=True
        )
        expected = tab("SQLite, the cookbook's engine")
        assert await story(sessions, results, lamp) == expected
    finally:
        await engine.dispose()


def test_page_tabs_repeat_the_snippet_output():
    """The SQLite tabs repeat #> lines: they must not drift apart."""
    assert tab("SQLite, default driver") == printed("demo_naive_oversell")
    assert tab("SQLite") == printed("demo_sqlite_quirk")


# The recipe ----------------------------------------------------------------


async def test_concurrent_orders_never_oversell(sessions: Sessions):
    desk, sofa = await add(sessions, stock=5), await add(sessions, stock=5)
    one_desk = await order_concurrently(
        sessions, place_order, [lines_of((desk, 1))] * 20
    )
    two_sofas = await order_concurrently(
        sessions, place_order, [lines_of((sofa, 2))] * 10
    )
    assert one_desk == {"placed": 5, "OutOfStockError": 15}
    assert two_sofas == {"placed": 2, "OutOfStockError": 8}
    assert await snapshot(sessions) == (7, 7, {desk: 0, sofa: 1})


async def test_row_lock_variant_never_oversells(sessions: Sessions):
    desk = await add(sessions, stock=5)
    outcomes = await order_concurrently(
        sessions, place_order_with_row_locks, [lines_of((desk, 1))] * 20
    )
    assert outcomes == {"placed": 5, "OutOfStockError": 15}
    assert await snapshot(sessions) == (5, 5, {desk: 0})


async def test_unknown_item_and_short_stock_raise_domain_errors(sessions: Sessions):
    pen = await add(sessions, stock=1)
    before = await snapshot(sessions)
    for place in (place_order, place_order_with_row_locks):
        with pytest.raises(UnknownItemError, match="item 999 does not exist"):
            await place_and_commit(sessions, lines_of((pen, 1), (999, 1)), place)
        with pytest.raises(OutOfStockError, match=f"not enough stock for item {pen}"):
            await place_and_commit(sessions, lines_of((pen, 2)), place)
        assert await snapshot(sessions) == before, place.__name__


async def test_repeated_item_is_checked_against_the_sum(sessions: Sessions):
    for place in (place_order, place_order_with_row_locks):
        ink = await add(sessions, stock=5)
        with pytest.raises(OutOfStockError):
            await place_and_commit(sessions, lines_of((ink, 3), (ink, 3)), place)
        assert (await snapshot(sessions))[2][ink] == 5, place.__name__
        order = await place_and_commit(sessions, lines_of((ink, 3), (ink, 2)), place)
        assert [line.quantity for line in order.lines] == [3, 2]
        assert (await snapshot(sessions))[2][ink] == 0, place.__name__
    assert (await snapshot(sessions))[:2] == (2, 4)


async def test_unit_price_is_the_price_at_order_time(sessions: Sessions):
    cup = await add(sessions, stock=5, price="6.50")
    async with sessions.begin() as session:
        order = await place_order(session, "Ann", lines_of((cup, 1)))
    async with sessions.begin() as session:
        await session.execute(update(Item).values(price=Decimal("9.99")))
    async with sessions() as session:
        stored = await session.scalars(
            select(OrderLine.unit_price).where(OrderLine.order_id == order.id)
        )
        assert stored.all() == [Decimal("6.50")]


async def test_place_order_leaves_the_commit_to_the_caller(sessions: Sessions):
    pen = await add(sessions, stock=3)
    async with sessions() as session:
        await place_order(session, "Ann", lines_of((pen, 1)))
        await session.rollback()
    assert await snapshot(sessions) == (0, 0, {pen: 3})


async def test_data_layer_begin_works_only_before_anything_ran(sessions: Sessions):
    pen = await add(sessions, stock=3)
    async with sessions() as session:
        await session.get(Item, pen)  # autobegins
        with pytest.raises(InvalidRequestError, match="already begun"):
            await place_order_and_commit(session, "Ann", lines_of((pen, 1)))
    assert await snapshot(sessions) == (0, 0, {pen: 3})
    async with sessions() as session:  # nothing ran yet: begin() is fine
        await place_order_and_commit(session, "Ann", lines_of((pen, 1)))
    assert await snapshot(sessions) == (1, 1, {pen: 2})


async def test_orders_in_opposite_line_order_all_succeed_on_sqlite(sqlite_url: str):
    """SQLite only: one write lock, taken at BEGIN, so nothing to deadlock on;
    PostgreSQL's row locks get a forced interleaving further down."""
    app = create_app(sqlite_url)
    async with app.router.lifespan_context(app):
        sessions = app.state.sessions
        a, b = await add(sessions, stock=100), await add(sessions, stock=100)
        orders = [lines_of((a, 1), (b, 1)), lines_of((b, 1), (a, 1))] * 5
        outcomes = await order_concurrently(sessions, place_order, orders)
        assert outcomes == {"placed": 10}
        assert await snapshot(sessions) == (10, 20, {a: 90, b: 90})


# All or nothing: a fault injected at each step ------------------------------


class Fault(Exception):
    pass


def raise_fault_at(prefix: str, nth: int):
    """An engine event hook that raises Fault at the nth statement starting
    with prefix (or at the nth COMMIT), and the list of what it saw."""
    seen: list[str] = []

    def hook(conn, cursor=None, statement: str = "COMMIT", *_) -> None:
        if statement.startswith(prefix):
            seen.append(statement)
            if len(seen) == nth:
                raise Fault(statement)

    return hook, seen


async def place_and_commit(
    sessions: Sessions, lines: list[LineIn], place=place_order
) -> Order:
    async with sessions.begin() as session:
        return await place(session, "Ann", lines)


STEPS = {
    "after the first stock UPDATE": ("UPDATE items", 1),
    "after the last stock UPDATE": ("UPDATE items", 2),
    "after the order INSERT": ("INSERT INTO orders", 1),
    "after the lines INSERT": ("INSERT INTO order_lines", 1),
    "at COMMIT": ("COMMIT", 1),
}


async def test_a_fault_at_any_step_persists_nothing(sessions: Sessions):
    pen, ink = await add(sessions, stock=5), await add(sessions, stock=5)
    before = await snapshot(sessions)
    engine = engine_of(sessions)
    for step, (prefix, nth) in STEPS.items():
        hook, seen = raise_fault_at(prefix, nth)
        name = "commit" if prefix == "COMMIT" else "after_cursor_execute"
        event.listen(engine.sync_engine, name, hook)
        with pytest.raises(Fault):
            await place_and_commit(sessions, lines_of((pen, 1), (ink, 2), (pen, 1)))
        event.remove(engine.sync_engine, name, hook)
        assert len(seen) == nth, step  # the fault fired at this step
        assert await snapshot(sessions) == before, step
        assert engine.pool.checkedout() == 0, step


# Deadlocks (PostgreSQL: row locks) ------------------------------------------


async def gate_after_first_lock(monkeypatch, engine: AsyncEngine) -> None:
    """Hold each order after its first stock UPDATE until the other order
    has taken its own first lock, or is waiting for one."""
    real_take_stock = transactions.take_stock
    gated: set[int] = set()

    async def someone_waits_for_a_lock() -> bool:
        async with engine.connect() as conn:
            waiting = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname ="
                    " current_database() AND wait_event_type = 'Lock'"
                )
            )
            return bool(waiting)

    async def take_stock(session: AsyncSession, item_id: int, quantity: int):
        price = await real_take_stock(session, item_id, quantity)
        if id(session) not in gated:
            gated.add(id(session))
            for _ in range(2000):
                if len(gated) == 2 or await someone_waits_for_a_lock():
                    break
            else:
                pytest.fail("the other order neither locked nor waited")
        return price

    monkeypatch.setattr(transactions, "take_stock", take_stock)


async def detect_deadlocks_sooner(engine: AsyncEngine) -> None:
    """Not a timing: only spares the suite PostgreSQL's 1 s deadlock_timeout,
    when the test user may change it (a superuser may)."""
    async with engine.connect() as conn:
        superuser = await conn.scalar(text("SELECT current_setting('is_superuser')"))
    if superuser == "on":

        def lower(conn) -> None:
            conn.exec_driver_sql("SET LOCAL deadlock_timeout = '100ms'")

        event.listen(engine.sync_engine, "begin", lower)


async def opposite_orders(sessions: Sessions) -> tuple[list[object], int, int]:
    a, b = await add(sessions, stock=10), await add(sessions, stock=10)

    async def one(lines: list[LineIn]) -> None:
        async with sessions.begin() as session:
            await place_order(session, "Ann", lines)

    results = await asyncio.gather(
        one(lines_of((a, 1), (b, 1))),
        one(lines_of((b, 1), (a, 1))),
        return_exceptions=True,
    )
    return results, a, b


async def test_opposite_line_orders_do_not_deadlock_on_postgres(
    postgres_url: str, monkeypatch
):
    """PostgreSQL only: SQLite locks the whole database, not rows."""
    app = create_app(postgres_url)
    async with app.router.lifespan_context(app):
        sessions = app.state.sessions
        await gate_after_first_lock(monkeypatch, engine_of(sessions))
        results, a, b = await opposite_orders(sessions)
        assert [str(Counter(map(outcome, results)))] == tab("Sorted by id (the recipe)")
        assert await snapshot(sessions) == (2, 4, {a: 8, b: 8})


async def test_locking_in_line_order_deadlocks_on_postgres(
    postgres_url: str, monkeypatch
):
    """PostgreSQL only: without the sort, two orders wait for each other."""
    monkeypatch.setattr(
        transactions,
        "total_per_item",
        lambda lines: {line.item_id: line.quantity for line in lines},
    )
    app = create_app(postgres_url)
    async with app.router.lifespan_context(app):
        sessions = app.state.sessions
        await detect_deadlocks_sooner(engine_of(sessions))
        await gate_after_first_lock(monkeypatch, engine_of(sessions))
        results, a, b = await opposite_orders(sessions)
        failed = [r for r in results if r is not None]
        assert len(failed) == 1
        assert isinstance(failed[0], DBAPIError)
        assert [short(failed[0])] == tab("In line order")
        assert "deadlock detected" in short(failed[0])
        assert await snapshot(sessions) == (1, 2, {a: 9, b: 9})


# Savepoints -----------------------------------------------------------------


async def test_failed_savepoint_cancels_its_step_and_the_order_only_if_uncaught(
    sessions: Sessions,
):
    pad = await add(sessions, stock=5)
    redeemed = []
    for _ in range(2):  # caught: only the savepoint rolls back
        async with sessions.begin() as session:
            order = await place_order(session, "Ann", lines_of((pad, 1)))
            redeemed.append(await redeem_coupon(session, order, "WELCOME"))
    assert redeemed == [True, False]
    assert await snapshot(sessions) == (2, 2, {pad: 3})
    async with sessions() as session:
        assert len((await session.scalars(select(Redemption.code))).all()) == 1

    async def order_and_redeem() -> None:
        async with sessions.begin() as session:
            order = await place_order(session, "Bob", lines_of((pad, 1)))
            async with session.begin_nested():  # the error is not caught
                session.add(Redemption(code="WELCOME", order_id=order.id))

    with pytest.raises(IntegrityError):  # uncaught: the whole order rolls back
        await order_and_redeem()
    assert await snapshot(sessions) == (2, 2, {pad: 3})


async def test_catching_a_flush_error_without_savepoint_loses_the_order_silently(
    sessions: Sessions,
):
    pad = await add(sessions, stock=5)
    async with sessions.begin() as session:
        first = await place_order(session, "Ann", lines_of((pad, 1)))
        session.add(Redemption(code="WELCOME", order_id=first.id))
    before = await snapshot(sessions)
    async with sessions.begin() as session:  # no exception comes out of here
        order = await place_order(session, "Bob", lines_of((pad, 1)))
        assert not await redeem_coupon_without_savepoint(session, order, "WELCOME")
    assert order.id is not None  # the caller would report this order...
    assert await snapshot(sessions) == before  # ...which was never stored


def coupon_routes(app) -> None:
    """Two test routes: an order with a coupon, redeemed without and with a
    savepoint, each through the request's committing SessionDep."""

    @app.post("/test/orders-without-savepoint", status_code=201)
    async def without(body: OrderIn, session: SessionDep) -> dict[str, int]:
        order = await place_order(session, body.customer, body.lines)
        await redeem_coupon_without_savepoint(session, order, "WELCOME")
        return {"id": order.id}

    @app.post("/test/orders-with-savepoint", status_code=201)
    async def with_savepoint(body: OrderIn, session: SessionDep) -> dict[str, int]:
        order = await place_order(session, body.customer, body.lines)
        await redeem_coupon(session, order, "WELCOME")
        return {"id": order.id}


async def order_with_a_used_coupon(database_url: str, route: str) -> tuple[int, bool]:
    """POST an order whose coupon was already redeemed: (status, stored?)."""
    app = create_app(database_url)
    coupon_routes(app)
    async with app.router.lifespan_context(app):
        sessions = app.state.sessions
        pad = await add(sessions, stock=5)
        async with sessions.begin() as session:  # the coupon is already used
            first = await place_order(session, "Ann", lines_of((pad, 1)))
            session.add(Redemption(code="WELCOME", order_id=first.id))
        before = await snapshot(sessions)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            body = {"customer": "Bob", "lines": [{"item_id": pad, "quantity": 1}]}
            reply = await c.post(f"/test/orders-{route}", json=body)
        after = await snapshot(sessions)
    if after == before:
        return reply.status_code, False
    assert after == (2, 2, {pad: 3})  # the order, its line, its stock
    return reply.status_code, True


async def test_naive_endpoint_catching_a_flush_error_answers_201_and_stores_nothing(
    database_url: str,
):
    assert await order_with_a_used_coupon(database_url, "without-savepoint") == (
        201,
        False,
    )


async def test_endpoint_with_a_savepoint_answers_201_and_stores_the_order(
    database_url: str,
):
    assert await order_with_a_used_coupon(database_url, "with-savepoint") == (
        201,
        True,
    )


async def test_released_savepoint_survives_a_rollback_only_on_sqlites_default(
    database_url: str, capsys
):
    await demo_sqlite_quirk(database_url)  # default engine, then create_engine
    out = capsys.readouterr().out.splitlines()
    if database_url.startswith("sqlite"):
        assert out == tab("SQLite")
        assert [line.endswith("row kept: True") for line in out] == [True, False]
    else:
        assert out == tab("PostgreSQL", 2)
        assert not any(line.endswith("row kept: True") for line in out)


# Over HTTP -------------------------------------------------------------------


async def test_post_orders_answers_201_404_409_and_persists_only_the_201(
    client: httpx.AsyncClient, sessions: Sessions
):
    mug = await add(sessions, stock=5, price="8.00")
    ink = await add(sessions, stock=5)
    before = await snapshot(sessions)
    for lines, status, detail in [
        ([(mug, 1), (999, 1)], 404, "item 999 does not exist"),
        ([(mug, 1), (ink, 6)], 409, f"not enough stock for item {ink}"),
        ([(ink, 3), (ink, 3)], 409, f"not enough stock for item {ink}"),
    ]:
        body = {
            "customer": "Hal",
            "lines": [{"item_id": i, "quantity": q} for i, q in lines],
        }
        reply = await client.post("/orders", json=body)
        assert (reply.status_code, reply.json()) == (status, {"detail": detail})
        assert await snapshot(sessions) == before

    body = {"customer": "Hal", "lines": [{"item_id": mug, "quantity": 2}] * 2}
    reply = await client.post("/orders", json=body)
    assert reply.status_code == 201
    assert reply.json() == {
        "id": reply.json()["id"],
        "customer": "Hal",
        "lines": [{"item_id": mug, "quantity": 2, "unit_price": "8.00"}] * 2,
        "total": "32.00",
    }
    assert await snapshot(sessions) == (1, 2, {mug: 1, ink: 5})


INVALID = {
    "no lines": {"customer": "Hal", "lines": []},
    "empty customer": {"customer": "", "lines": [{"item_id": 1, "quantity": 1}]},
    "zero quantity": {"customer": "Hal", "lines": [{"item_id": 1, "quantity": 0}]},
    "huge quantity": {
        "customer": "Hal",
        "lines": [{"item_id": 1, "quantity": 10**6 + 1}],
    },
    "id beyond bigint": {
        "customer": "Hal",
        "lines": [{"item_id": 2**63, "quantity": 1}],
    },
    "id beyond integer": {
        "customer": "Hal",
        "lines": [{"item_id": 2**31, "quantity": 1}],
    },
    "zero id": {"customer": "Hal", "lines": [{"item_id": 0, "quantity": 1}]},
    "51 lines": {"customer": "Hal", "lines": [{"item_id": 1, "quantity": 1}] * 51},
    "unknown line field": {
        "customer": "Hal",
        "lines": [{"item_id": 1, "quantity": 1, "price": "0.01"}],
    },
    "unknown field": {
        "customer": "Hal",
        "lines": [{"item_id": 1, "quantity": 1}],
        "id": 5,
    },
    "null customer": {"customer": None, "lines": [{"item_id": 1, "quantity": 1}]},
}


LINE = b'"lines": [{"item_id": 1, "quantity": 1}]'
HOSTILE = {
    "lone surrogate": b'{"customer": "\\ud800", ' + LINE + b"}",
    "NUL": b'{"customer": "a\\u0000", ' + LINE + b"}",
    "NaN id": b'{"customer": "a", "lines": [{"item_id": NaN, "quantity": 1}]}',
    "1e400": b'{"customer": "a", "lines": [{"item_id": 1, "quantity": 1e400}]}',
    "not JSON": b'{"customer": ',
    "a list": b"[1, 2]",
}


async def test_invalid_and_hostile_bodies_are_422_and_persist_nothing(
    client: httpx.AsyncClient, sessions: Sessions
):
    await add(sessions, stock=5)
    before = await snapshot(sessions)
    for case, body in INVALID.items():
        assert (await client.post("/orders", json=body)).status_code == 422, case
    for case, raw in HOSTILE.items():  # FastAPI's own handler would 500 here
        reply = await client.post(
            "/orders", content=raw, headers={"content-type": "application/json"}
        )
        assert reply.status_code == 422, case
        assert all("input" not in error for error in reply.json()["detail"]), case
    assert await snapshot(sessions) == before


async def test_concurrent_http_orders_never_oversell(
    client: httpx.AsyncClient, sessions: Sessions
):
    desk = await add(sessions, stock=5)
    body = {"customer": "Hal", "lines": [{"item_id": desk, "quantity": 1}]}
    replies = await asyncio.gather(
        *(client.post("/orders", json=body) for _ in range(20))
    )
    assert Counter(r.status_code for r in replies) == {201: 5, 409: 15}
    assert await snapshot(sessions) == (5, 5, {desk: 0})


# An error returned, not raised -------------------------------------------------


async def order_that_fails_after_taking_stock(
    client: httpx.AsyncClient, sessions: Sessions, url: str
) -> tuple[int, int, int]:
    """POST an order whose first line is taken and whose second fails:
    (status, pens taken, orders stored)."""
    pen, ink = await add(sessions, stock=10), await add(sessions, stock=1)
    before = await snapshot(sessions)
    body = {
        "customer": "Ivy",
        "lines": [{"item_id": pen, "quantity": 2}, {"item_id": ink, "quantity": 3}],
    }
    reply = await client.post(url, json=body)
    after = await snapshot(sessions)
    return reply.status_code, before[2][pen] - after[2][pen], after[0] - before[0]


async def test_naive_returned_error_response_still_commits_the_stock_taken(
    client: httpx.AsyncClient, sessions: Sessions
):
    status, taken, orders = await order_that_fails_after_taking_stock(
        client, sessions, "/naive/orders"
    )
    assert (status, taken, orders) == (409, 2, 0)  # a 409, and 2 pens gone


async def test_raised_error_rolls_back_the_stock_taken(
    client: httpx.AsyncClient, sessions: Sessions
):
    status, taken, orders = await order_that_fails_after_taking_stock(
        client, sessions, "/orders"
    )
    assert (status, taken, orders) == (409, 0, 0)


async def test_a_broken_check_constraint_is_a_422_naming_it(app, sessions: Sessions):
    """The foundation's handler, on this page's CHECK (stock >= 0): no route
    can break it, so the error comes from a direct UPDATE."""
    pen = await add(sessions, stock=1)
    with pytest.raises(IntegrityError) as caught:
        async with sessions.begin() as session:
            await session.execute(update(Item).where(Item.id == pen).values(stock=-1))
    reply = await database_error(None, caught.value)  # type: ignore[arg-type]
    assert reply.status_code == 422
    assert json.loads(reply.body) == {
        "detail": "ck_items_stock_not_negative: breaks a check constraint"
    }


def test_openapi_documents_404_and_409():
    responses = create_app("sqlite+aiosqlite://").openapi()["paths"]["/orders"]["post"]
    assert {"201", "404", "409", "422"} <= set(responses["responses"])


# The page's output is PostgreSQL's too -------------------------------------


async def test_recipe_demos_print_the_same_on_postgres(postgres_url: str, capsys):
    """PostgreSQL only: the page shows SQLite's run; this is PostgreSQL's."""
    app = create_app(postgres_url)
    async with app.router.lifespan_context(app):
        for demo in (
            demo_no_oversell,
            demo_begin,
            demo_all_or_nothing,
            demo_price,
            demo_savepoint,
            demo_no_savepoint,
        ):
            await demo(app.state.sessions, app.state.read_sessions)
        await demo_returned_error(app)
        await demo_http(app)
    assert capsys.readouterr().out.splitlines() == printed(
        "demo_no_oversell",
        "demo_begin",
        "demo_all_or_nothing",
        "demo_price",
        "demo_savepoint",
        "demo_no_savepoint",
        "demo_returned_error",
        "demo_http",
    )

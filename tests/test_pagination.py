"""Pagination: bounds, stable order, totals, keyset walks, cursors, plans."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    Table,
    delete,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from snippets.pagination import (
    MAX_OFFSET,
    SORTS,
    Cursor,
    Item,
    ItemOut,
    OrderKey,
    after,
    b64,
    before,
    create_app,
    create_engine,
    decode_cursor,
    encode_cursor,
    explain,
    naive_price_page,
    page_query,
    sample_items,
    seek_after,
    unb64,
)

KEY = b"test-only key, 32 bytes long...."
FIVE = Decimal("5.00")
START = datetime(2026, 3, 1, tzinfo=UTC)
Row = dict[str, Any]


@asynccontextmanager
async def serve(url: str, rows: int = 0) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(url, cursor_key=KEY)
    async with app.router.lifespan_context(app):
        await add_items(app, sample_items(rows))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


def raising(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """A client of the same app that raises the app's errors instead of a 500."""
    transport = httpx.ASGITransport(app=app_of(client))
    return httpx.AsyncClient(transport=transport, base_url="http://t")


def app_of(client: httpx.AsyncClient) -> FastAPI:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    app = transport.app
    assert isinstance(app, FastAPI)
    return app


def engine_of(app: FastAPI) -> AsyncEngine:
    engine: AsyncEngine = app.state.sessions.kw["bind"]
    return engine


async def add_items(app: FastAPI, items: list[Item]) -> None:
    rows = [
        {
            "name": i.name,
            "category": i.category,
            "price": i.price,
            "created_at": i.created_at or START,
        }
        for i in items
    ]
    if rows:  # one executemany: much faster than add_all on SQLite
        async with app.state.sessions.begin() as session:
            await session.execute(insert(Item), rows)


async def all_rows(client: httpx.AsyncClient) -> list[Row]:
    async with app_of(client).state.sessions() as session:
        items = await session.scalars(select(Item))
        return [ItemOut.model_validate(item).model_dump() for item in items]


def in_order(rows: list[Row], sort: str) -> list[int]:
    """The ids in the order the API promises: NULL below every value."""
    ordered = list(rows)
    for key in reversed(SORTS[sort]):  # stable sorts, last key first
        value = partial(sort_value, name=key.column.key, descending=key.descending)
        ordered.sort(key=value, reverse=key.descending)
    return [row["id"] for row in ordered]


def sort_value(row: Row, name: str, descending: bool) -> tuple[bool, Any]:
    return (row[name] is not None, row[name])  # NULL lowest: reverse() agrees


async def walk_keyset(
    client: httpx.AsyncClient,
    params: dict[str, Any],
    limits: list[int],
    between_pages: Callable[[], Any] | None = None,
) -> list[int]:
    ids: list[int] = []
    query = dict(params)
    for page_number in range(1000):
        query["limit"] = limits[page_number % len(limits)]
        reply = await client.get("/items/keyset", params=query)
        assert reply.status_code == 200, reply.text
        page = reply.json()
        ids += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            return ids
        query["cursor"] = page["next_cursor"]
        if between_pages is not None:
            await between_pages()
    raise AssertionError("the walk never ended")


async def walk_offset(
    client: httpx.AsyncClient,
    params: dict[str, Any],
    limit: int,
    between_pages: Callable[[], Any] | None = None,
) -> tuple[list[int], set[int]]:
    ids: list[int] = []
    totals: set[int] = set()
    offset = 0
    while True:
        query = {**params, "limit": limit, "offset": offset}
        page = (await client.get("/items", params=query)).json()
        ids += [item["id"] for item in page["items"]]
        totals.add(page["total"])
        if offset + limit >= page["total"]:
            return ids, totals
        offset += limit
        if between_pages is not None:
            await between_pages()


def repeated(ids: list[int]) -> set[int]:
    return {i for i in ids if ids.count(i) > 1}


# -- the naive endpoint -------------------------------------------------------


async def test_naive_negative_limit_returns_the_whole_table_on_sqlite(sqlite_url):
    """SQLite reads LIMIT -1 as "no limit"; le=100 alone does not stop it."""
    async with serve(sqlite_url, rows=150) as client:
        reply = await client.get("/naive/items", params={"limit": -1})
    assert reply.status_code == 200
    assert len(reply.json()) == 150


async def test_naive_negative_limit_is_a_server_error_on_postgres(postgres_url):
    """PostgreSQL rejects a negative LIMIT: the same input becomes a 500."""
    async with serve(postgres_url, rows=5) as client, raising(client) as raw:
        reply = await client.get("/naive/items", params={"limit": -1})
        with pytest.raises(DBAPIError, match="LIMIT must not be negative"):
            await raw.get("/naive/items", params={"limit": -1})
    assert reply.status_code == 500


async def test_naive_huge_offset_is_a_server_error(database_url):
    async with serve(database_url, rows=5) as client, raising(client) as raw:
        reply = await client.get("/naive/items", params={"offset": 2**63})
        with pytest.raises(
            (OverflowError, DBAPIError), match=r"too large|out of int64 range"
        ):
            await raw.get("/naive/items", params={"offset": 2**63})
    assert reply.status_code == 500


# -- bounds --------------------------------------------------------------------

BAD_INPUT = [
    ("/items", "limit", 0),
    ("/items", "limit", -1),
    ("/items", "limit", 101),
    ("/items", "limit", 10**30),
    ("/items", "limit", "ten"),
    ("/items", "limit", "1.5"),
    ("/items", "limit", ""),
    ("/items", "offset", -1),
    ("/items", "offset", MAX_OFFSET + 1),
    ("/items", "offset", 2**63),
    ("/items", "offset", 10**30),
    ("/items", "offset", "x"),
    ("/items", "sort", "name"),
    ("/items", "sort", ""),
    ("/items", "category", ""),
    ("/items", "category", "x" * 51),
    ("/items/keyset", "limit", 0),
    ("/items/keyset", "limit", -1),
    ("/items/keyset", "limit", 101),
    ("/items/keyset", "limit", 10**30),
    ("/items/keyset", "limit", "ten"),
    ("/items/keyset", "sort", "id; DROP TABLE items"),
]


async def test_bad_limit_offset_or_sort_is_422_naming_the_parameter(database_url):
    async with serve(database_url, rows=5) as client:
        wrong = []
        for path, name, value in BAD_INPUT:
            reply = await client.get(path, params={name: value})
            where = reply.json()["detail"][0]["loc"] if reply.is_error else None
            if reply.status_code != 422 or where != ["query", name]:
                wrong.append((path, name, value, reply.status_code, where))
    assert not wrong


# -- a stable order ------------------------------------------------------------


def scan_backwards_when(engine: AsyncEngine, flag: list[bool]) -> None:
    """Each checked-out connection scans unordered rows backwards if flag[0]."""

    def set_scan_order(dbapi_connection: Any, *_: Any) -> None:
        value = "ON" if flag[0] else "OFF"
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA reverse_unordered_selects = {value}")
        cursor.close()

    event.listen(engine.sync_engine, "checkout", set_scan_order)


async def test_naive_pages_repeat_and_skip_rows_when_the_scan_order_changes(
    sqlite_url,
):
    """reverse_unordered_selects is SQLite's switch for the order of unordered
    rows: it stands for any change of plan between two requests."""
    async with serve(sqlite_url, rows=20) as client:
        backwards = [False]
        scan_backwards_when(engine_of(app_of(client)), backwards)
        ids = []
        for offset in range(0, 20, 5):
            backwards[0] = offset % 10 == 5  # pages 2 and 4 scan backwards
            reply = await client.get(
                "/naive/items", params={"offset": offset, "limit": 5}
            )
            ids += [item["id"] for item in reply.json()]
    assert ids == [1, 2, 3, 4, 5, 15, 14, 13, 12, 11, 11, 12, 13, 14, 15, 5, 4, 3, 2, 1]
    assert set(range(1, 21)) - set(ids) == {6, 7, 8, 9, 10, 16, 17, 18, 19, 20}


async def test_ordered_pages_do_not_depend_on_the_scan_order(sqlite_url):
    """SQLite only, for reverse_unordered_selects (see the test above)."""
    async with serve(sqlite_url, rows=20) as client:
        expected = in_order(await all_rows(client), "price")
        backwards = [False]
        scan_backwards_when(engine_of(app_of(client)), backwards)
        ids = []
        for offset in range(0, 20, 5):
            backwards[0] = offset % 10 == 5
            reply = await client.get("/items", params={"offset": offset, "limit": 5})
            ids += [item["id"] for item in reply.json()["items"]]
    assert ids == expected


# --8<-- [start:pg_heap_order]
async def test_naive_pages_repeat_and_skip_rows_after_an_update_on_postgres(
    postgres_url,
):
    """PostgreSQL writes an updated row as a new tuple at the end of the heap,
    so a scan without ORDER BY returns it last."""
    async with serve(postgres_url, rows=20) as client:

        async def page(number: int) -> list[int]:
            params = {"limit": 5, "offset": 5 * (number - 1)}
            reply = await client.get("/naive/items", params=params)
            return [item["id"] for item in reply.json()]

        first = await page(1)
        async with app_of(client).state.sessions.begin() as session:
            await session.execute(
                update(Item).where(Item.id == 1).values(name="renamed")
            )
        rest = [await page(n) for n in (2, 3, 4)]
    assert first == [1, 2, 3, 4, 5]
    assert rest == [[7, 8, 9, 10, 11], [12, 13, 14, 15, 16], [17, 18, 19, 20, 1]]
    # row 1 twice, row 6 never


# --8<-- [end:pg_heap_order]


async def test_ordered_pages_survive_an_update_on_postgres(postgres_url):
    """The counterpart of the test above, on the endpoint with ORDER BY."""
    async with serve(postgres_url, rows=20) as client:
        expected = in_order(await all_rows(client), "price")
        first = await client.get("/items", params={"limit": 5})
        async with app_of(client).state.sessions.begin() as session:
            await session.execute(
                update(Item).where(Item.id == 1).values(name="renamed")
            )
        ids = [item["id"] for item in first.json()["items"]]
        for offset in (5, 10, 15):
            reply = await client.get("/items", params={"limit": 5, "offset": offset})
            ids += [item["id"] for item in reply.json()["items"]]
    assert ids == expected


# -- offset pages and totals -----------------------------------------------------


async def test_offset_walk_returns_every_row_once_with_a_constant_total(database_url):
    async with serve(database_url, rows=40) as client:
        rows = await all_rows(client)
        for sort in SORTS:
            for category in (None, "games"):
                params = {"sort": sort} | ({"category": category} if category else {})
                ids, totals = await walk_offset(client, params, limit=8)
                chosen = [r for r in rows if category in (None, r["category"])]
                assert ids == in_order(chosen, sort), (sort, category)
                assert totals == {len(chosen)}


async def test_total_counts_the_filtered_rows_also_past_the_last_page(database_url):
    async with serve(database_url, rows=30) as client:
        pages = [
            (await client.get("/items", params=params)).json()
            for params in (
                {"offset": MAX_OFFSET},
                {"offset": 10, "limit": 10, "category": "games"},
                {"category": "toys"},
            )
        ]
    assert pages[0] == {"items": [], "total": 30, "limit": 20, "offset": MAX_OFFSET}
    assert (pages[1]["items"], pages[1]["total"]) == ([], 10)
    assert (pages[2]["items"], pages[2]["total"]) == ([], 0)


async def test_a_page_with_its_total_is_one_select(database_url):
    async with serve(database_url, rows=30) as client:
        engine = engine_of(app_of(client)).sync_engine
        selects: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                selects.append(statement)

        event.listen(engine, "before_cursor_execute", record)
        page = (await client.get("/items", params={"category": "games"})).json()
        assert (len(page["items"]), page["total"]) == (10, 10)
        assert len(selects) == 1, selects
        past = (await client.get("/items", params={"offset": 40})).json()
        assert (past["items"], past["total"]) == ([], 30)
        assert len(selects) == 3  # no row to carry it: the count alone


# -- keyset walks ----------------------------------------------------------------


async def test_keyset_walk_returns_every_row_once_in_order_nulls_lowest(database_url):
    """Many equal prices and NULLs; every sort, with and without a filter, and a
    limit that changes from page to page (the cursor does not depend on it)."""
    async with serve(database_url, rows=30) as client:
        rows = await all_rows(client)
        for sort in SORTS:
            for category in (None, "games"):
                params = {"sort": sort} | ({"category": category} if category else {})
                chosen = [r for r in rows if category in (None, r["category"])]
                ids = await walk_keyset(client, params, limits=[4, 9])
                assert ids == in_order(chosen, sort), (sort, category)


async def walk_pages(
    client: httpx.AsyncClient, params: dict[str, Any], limit: int
) -> list[dict[str, Any]]:
    """Every page, first to last, following next_cursor."""
    pages, query = [], {**params, "limit": limit}
    while True:
        reply = await client.get("/items/keyset", params=query)
        assert reply.status_code == 200, reply.text
        pages.append(reply.json())
        if pages[-1]["next_cursor"] is None:
            return pages
        query["cursor"] = pages[-1]["next_cursor"]


async def test_prev_cursor_walks_back_to_the_first_page_page_by_page(database_url):
    """Back from the last page, each previous page is the page shown before
    it, in every order (datetimes, Decimals, NULLs, descending keys)."""
    async with serve(database_url, rows=30) as client:
        rows = await all_rows(client)
        for sort in SORTS:
            for category in (None, "games"):
                params = {"sort": sort} | ({"category": category} if category else {})
                forward = await walk_pages(client, params, limit=4)
                back, page = [forward[-1]], forward[-1]
                while page["prev_cursor"] is not None:
                    query = {**params, "limit": 4, "cursor": page["prev_cursor"]}
                    page = (await client.get("/items/keyset", params=query)).json()
                    back.append(page)
                ids = [[item["id"] for item in p["items"]] for p in back[::-1]]
                assert ids == [[item["id"] for item in p["items"]] for p in forward]
                chosen = [r for r in rows if category in (None, r["category"])]
                flat = [i for page_ids in ids for i in page_ids]
                assert flat == in_order(chosen, sort), (sort, category)
                assert forward[0]["prev_cursor"] is None
                assert back[-1] == forward[0]


async def test_prev_cursor_after_the_rows_before_it_are_gone_is_the_first_page(
    database_url,
):
    async with serve(database_url, rows=12) as client:
        forward = await walk_pages(client, {"sort": "-created_at"}, limit=4)
        gone = [item["id"] for page in forward[:2] for item in page["items"]]
        async with app_of(client).state.sessions.begin() as session:
            await session.execute(delete(Item).where(Item.id.in_(gone)))
        params = {"sort": "-created_at", "limit": 4}
        back = await client.get(
            "/items/keyset", params={**params, "cursor": forward[2]["prev_cursor"]}
        )
        first = await client.get("/items/keyset", params=params)
    assert back.json() == first.json()
    assert back.json()["items"] == forward[2]["items"]


# -- the keyset predicate itself: 3 keys, 8 direction mixes ------------------

TRIPLES = Table(
    "triples",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("a", Integer, nullable=True),  # few values, many NULLs: ties
    Column("b", Integer, nullable=True),
)


def triple_rows() -> list[dict[str, int | None]]:
    values = (None, 1, 1, 2, None, 3)
    return [
        {"id": n, "a": values[n % 6], "b": values[(n // 2) % 6]} for n in range(1, 41)
    ]


def python_order(rows: list[dict[str, Any]], keys: list[OrderKey]) -> list[int]:
    """The rule, in Python: NULL below every value, each key its direction."""
    ordered = list(rows)
    for key in reversed(keys):
        name = key.column.key
        ordered.sort(
            key=lambda r, n=name: (r[n] is not None, r[n]), reverse=key.descending
        )
    return [r["id"] for r in ordered]


async def keyset_walk(
    conn: Any, keys: list[OrderKey], limit: int, *, backwards: bool
) -> list[int]:
    """Page through TRIPLES with after(), or with before() from the end."""
    walk_keys = [k.reversed() for k in keys] if backwards else keys
    columns = [k.column for k in walk_keys]
    ids: list[int] = []
    values = None
    while True:
        query = select(TRIPLES.c.id, *columns).order_by(
            *(k.order_by() for k in walk_keys)
        )
        if values is not None:
            condition = before(keys, values) if backwards else after(keys, values)
            query = query.where(condition)
        rows = (await conn.execute(query.limit(limit))).all()
        if not rows:
            return ids[::-1] if backwards else ids
        ids += [row[0] for row in rows]
        values = list(rows[-1][1:])


@pytest.mark.parametrize(
    "directions", list(itertools.product((False, True), repeat=3)), ids=str
)
async def test_keyset_walk_over_nullable_keys_with_ties_never_skips_or_repeats(
    database_url, directions
):
    """after() and before() over (a, b, id), a and b nullable with many ties,
    in each of the 8 direction mixes, forwards and backwards, pages of 3."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(TRIPLES.metadata.create_all)
            await conn.execute(insert(TRIPLES), triple_rows())
            a, b, pk = TRIPLES.c.a, TRIPLES.c.b, TRIPLES.c.id
            keys = [
                OrderKey(a, directions[0], nullable=True),
                OrderKey(b, directions[1], nullable=True),
                OrderKey(pk, directions[2]),
            ]
            expected = python_order(triple_rows(), keys)
            in_sql = select(pk).order_by(*(k.order_by() for k in keys))
            assert list(await conn.scalars(in_sql)) == expected  # ORDER BY agrees
            assert await keyset_walk(conn, keys, 3, backwards=False) == expected
            assert await keyset_walk(conn, keys, 3, backwards=True) == expected
    finally:
        await engine.dispose()


async def walk_naive_price(client: httpx.AsyncClient) -> list[int]:
    ids: list[int] = []
    values = None
    async with app_of(client).state.read_sessions() as session:
        while True:
            rows = (await session.scalars(naive_price_page(values))).all()
            if not rows:
                return ids
            ids += [row.id for row in rows]
            values = [rows[-1].price, rows[-1].id]


async def test_naive_database_null_order_loses_the_null_rows_on_postgres(
    postgres_url,
):
    """PostgreSQL sorts NULL above every value; after() assumes the rule."""
    async with serve(postgres_url, rows=30) as client:
        ids = await walk_naive_price(client)
        rows = await all_rows(client)
    nulls = {row["id"] for row in rows if row["price"] is None}
    assert len(nulls) == 5
    assert not nulls & set(ids)  # every unpriced item is lost
    assert len(ids) == 30 - 5


async def test_naive_database_null_order_happens_to_work_on_sqlite(sqlite_url):
    """SQLite sorts NULL lowest by itself: the same code walks every row."""
    async with serve(sqlite_url, rows=30) as client:
        ids = await walk_naive_price(client)
        assert ids == in_order(await all_rows(client), "price")


async def test_naive_default_null_order_makes_a_keyset_walk_lose_rows_on_postgres(
    postgres_url,
):
    """PostgreSQL puts NULLs last in ASC by default; after() assumes the rule
    (NULLs lowest). The walk never reaches the NULL rows. (On SQLite, whose
    NULLs are lowest, the same code happens to work.)"""
    engine = create_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(TRIPLES.metadata.create_all)
            await conn.execute(insert(TRIPLES), triple_rows())
            keys = [OrderKey(TRIPLES.c.a, nullable=True), OrderKey(TRIPLES.c.id)]
            ids, values = [], None
            while True:
                query = select(TRIPLES.c.id, TRIPLES.c.a)
                query = query.order_by(TRIPLES.c.a, TRIPLES.c.id)  # naive
                if values is not None:
                    query = query.where(after(keys, values))
                rows = (await conn.execute(query.limit(3))).all()
                if not rows:
                    break
                ids += [row[0] for row in rows]
                values = [rows[-1][1], rows[-1][0]]
    finally:
        await engine.dispose()
    nulls = {r["id"] for r in triple_rows() if r["a"] is None}
    assert not nulls & set(ids)  # every NULL row is lost
    assert len(ids) == 40 - len(nulls)


# -- cursors carry Decimals and datetimes --------------------------------------


def test_a_cursor_round_trips_decimals_aware_datetimes_and_nulls():
    bound = {"sort": "-created_at", "category": None}
    kathmandu = timezone(timedelta(hours=5, minutes=45))
    moment = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=kathmandu)
    cursor = Cursor([Decimal("5.10"), moment, None, "games", 7], backwards=True)
    back = decode_cursor(KEY, encode_cursor(KEY, bound, cursor), bound, 5)
    assert back == cursor
    assert [type(v) for v in back.values] == [Decimal, datetime, type(None), str, int]
    assert str(back.values[0]) == "5.10"  # the scale is kept
    assert back.values[1].utcoffset() == timedelta(0)  # the same instant, in UTC
    with pytest.raises(TypeError, match="naive datetime"):
        encode_cursor(KEY, bound, Cursor([datetime(2026, 3, 1), 1]))  # noqa: DTZ001


def test_naive_json_cursor_cannot_carry_a_datetime_or_a_decimal():
    for value in (datetime(2026, 3, 1, tzinfo=UTC), Decimal("5.00")):
        with pytest.raises(TypeError, match="not JSON serializable"):
            json.dumps({"v": [value, 1]})


class Writer:
    """A second task that inserts rows each time the walker finishes a page."""

    def __init__(self, app: FastAPI, prices: tuple[Decimal | None, ...]) -> None:
        self.app, self.prices = app, prices
        self.page_done, self.rows_added = asyncio.Event(), asyncio.Event()
        self.stopped = False

    async def run(self) -> None:
        while True:
            await self.page_done.wait()
            self.page_done.clear()
            if self.stopped:
                return
            new = [Item(name="new", category="games", price=p) for p in self.prices]
            await add_items(self.app, new)
            self.rows_added.set()

    async def between_pages(self) -> None:
        self.page_done.set()
        await self.rows_added.wait()
        self.rows_added.clear()

    def stop(self) -> None:
        self.stopped = True
        self.page_done.set()


async def test_keyset_walk_while_rows_are_inserted_returns_each_old_row_once(
    database_url,
):
    """Between pages, another task adds rows with a NULL, a tied and a highest
    price. Rows added behind the cursor may be missed; no row may come twice,
    none of the rows present throughout may be skipped, and all is in order."""
    async with serve(database_url, rows=30) as client:
        old = {row["id"] for row in await all_rows(client)}
        for sort in SORTS:
            writer = Writer(app_of(client), prices=(None, FIVE, Decimal("99.99")))

            async def walk(sort: str = sort, writer: Writer = writer) -> list[int]:
                try:
                    return await walk_keyset(
                        client, {"sort": sort}, [10], writer.between_pages
                    )
                finally:
                    writer.stop()

            ids, _ = await asyncio.gather(walk(), writer.run())
            everything = in_order(await all_rows(client), sort)
            assert not repeated(ids), sort
            assert old <= set(ids), sort
            assert ids == [i for i in everything if i in set(ids)], sort
            assert len(ids) > len(old), "the walk saw none of the new rows"


async def test_offset_walk_repeats_rows_after_an_insert_and_skips_after_a_delete(
    database_url,
):
    """Why keyset pages: a row inserted ahead of the offset pushes a row already
    seen onto the next page; a row deleted there pulls an unseen row back."""
    async with serve(database_url, rows=30) as client:
        app = app_of(client)
        expected = in_order(await all_rows(client), "price")

        async def add_a_row_on_top() -> None:
            await add_items(app, [Item(name="new", category="games", price=None)])

        async def delete_the_top_row() -> None:  # once: then it is gone
            async with app.state.sessions.begin() as session:
                await session.execute(delete(Item).where(Item.id == expected[0]))

        grown, _ = await walk_offset(client, {"sort": "price"}, 10, add_a_row_on_top)
        async with app.state.sessions.begin() as session:  # back to the 30
            await session.execute(delete(Item).where(Item.name == "new"))
        shrunk, _ = await walk_offset(client, {"sort": "price"}, 10, delete_the_top_row)
    assert repeated(grown)
    never_shown = set(expected) - {expected[0]} - set(shrunk)
    assert never_shown  # present throughout, and skipped


async def test_next_cursor_is_null_exactly_on_the_last_page(database_url):
    async with serve(database_url, rows=14) as client:
        first = (await client.get("/items/keyset", params={"limit": 7})).json()
        params = {"limit": 7, "cursor": first["next_cursor"]}
        last = (await client.get("/items/keyset", params=params)).json()
        everything = (await client.get("/items/keyset", params={"limit": 14})).json()
        one_more = (await client.get("/items/keyset", params={"limit": 13})).json()
        empty = (await client.get("/items/keyset", params={"category": "toys"})).json()
    assert first["next_cursor"] is not None
    assert (len(last["items"]), last["next_cursor"]) == (7, None)  # full, last
    assert (len(everything["items"]), everything["next_cursor"]) == (14, None)
    assert (len(one_more["items"]), one_more["next_cursor"] is None) == (13, False)
    assert empty == {"items": [], "next_cursor": None, "prev_cursor": None}


# -- cursors -------------------------------------------------------------------


def flip(text: str) -> str:
    return ("B" if text[0] == "A" else "A") + text[1:]


def forge(cursor: str, change: Callable[[dict[str, Any]], None]) -> str:
    payload, signature = cursor.split(".")
    data = json.loads(unb64(payload))
    change(data)
    return f"{b64(json.dumps(data).encode())}.{signature}"


async def test_bad_cursors_are_400_with_a_clear_detail(database_url):
    async with serve(database_url, rows=10) as client:
        first = await client.get("/items/keyset", params={"limit": 2})
        good = first.json()["next_cursor"]
        payload, signature = good.split(".")
        bound = {"sort": "price", "category": None}
        cases = [
            ({"cursor": ""}, "empty cursor"),
            ({"cursor": "x"}, "malformed cursor"),
            ({"cursor": "a.b.c"}, "malformed cursor"),
            ({"cursor": "é.é"}, "malformed cursor"),
            ({"cursor": "!!!.???"}, "malformed cursor"),
            ({"cursor": "abcde.abc"}, "malformed cursor"),  # impossible padding
            ({"cursor": good + "A" * 1000}, "malformed cursor"),
            ({"cursor": f"{payload}."}, "cursor signature does not match"),
            (
                {"cursor": f"{payload}.{flip(signature)}"},
                "cursor signature does not match",
            ),
            (
                {"cursor": forge(good, lambda d: d["v"].__setitem__(-1, 1))},
                "cursor signature does not match",
            ),
            (
                {"cursor": forge(good, lambda d: d["q"].update(sort="-price"))},
                "cursor signature does not match",
            ),
            (
                {"cursor": encode_cursor(b"another key", bound, Cursor([None, 1]))},
                "cursor signature does not match",
            ),
            (
                {"cursor": good, "sort": "-price"},
                "cursor was made for another sort or filter",
            ),
            (
                {"cursor": good, "category": "games"},
                "cursor was made for another sort or filter",
            ),
            (
                {"cursor": encode_cursor(KEY, bound, Cursor([1]))},
                "cursor does not fit this sort",
            ),
        ]
        wrong = []
        for params, detail in cases:
            reply = await client.get("/items/keyset", params=params)
            if (reply.status_code, reply.json()) != (400, {"detail": detail}):
                wrong.append((params, reply.status_code, reply.text))
        again = await client.get("/items/keyset", params={"limit": 2, "cursor": good})
    assert not wrong
    assert again.status_code == 200  # the good cursor still works


# -- plans ---------------------------------------------------------------------


def seeks(sort: str, category: str | None = None):
    """A keyset page early in each order (as most pages read are)."""
    keys = SORTS[sort]
    values = {
        "price": [FIVE, 17],
        "-price": [Decimal("45.00"), 17],
        "-category,price": ["games", FIVE, 17],
        "-created_at": [START + timedelta(days=1), 17],
    }
    return page_query(sort, category).where(seek_after(keys, values[sort]))


SEEKS = ("price", "-category,price", "-created_at")  # a range on the first key


async def test_sqlite_plans_use_an_index_for_every_sort(sqlite_url):
    """EXPLAIN QUERY PLAN is SQLite's; the PostgreSQL test is below."""
    app = create_app(sqlite_url, cursor_key=KEY)
    async with app.router.lifespan_context(app), app.state.read_sessions() as session:
        plans = {}
        queries = {f"keyset {s}": seeks(s) for s in SORTS}
        queries |= {f"offset {s}": page_query(s, None).offset(50) for s in SORTS}
        queries |= {f"keyset {s} games": seeks(s, "games") for s in ("price", "-price")}
        for label, query in queries.items():
            plans[label] = " ".join(await explain(session, query))
    for label, plan in plans.items():
        assert "USING INDEX ix_" in plan, (label, plan)
        assert "TEMP B-TREE" not in plan, (label, plan)
        kind, sort, *games = label.split()
        seeking = kind == "keyset" and (sort in SEEKS or bool(games))
        assert plan.startswith("SEARCH" if seeking else "SCAN"), (label, plan)


# --8<-- [start:pg_explain]
async def test_postgres_plans_use_an_index_for_every_sort(postgres_url):
    """PostgreSQL's EXPLAIN and planner; the SQLite test is above."""
    app = create_app(postgres_url, cursor_key=KEY)
    async with app.router.lifespan_context(app), app.state.sessions() as session:
        await session.execute(
            text(
                "INSERT INTO items (name, category, price, created_at)"
                " SELECT 'item', (ARRAY['books', 'games', 'tools'])[g % 3 + 1],"
                " NULLIF(g % 50, 0), now() - g * interval '1 minute'"
                " FROM generate_series(1, 5000) AS g"
            )
        )
        await session.execute(text("ANALYZE items"))
        plans = {sort: "\n".join(await explain(session, seeks(sort))) for sort in SORTS}
    assert "Index Scan using ix_items_price" in plans["price"]
    assert "Index Cond: (price >= 5.00)" in plans["price"]
    assert "Index Scan Backward using ix_items_price" in plans["-price"]
    assert "Index Scan using ix_items_category" in plans["-category,price"]
    assert "Index Cond: ((category)::text <= 'games'::text)" in plans["-category,price"]
    assert "Index Scan Backward using ix_items_created_at" in plans["-created_at"]
    assert "Index Cond: (created_at <= " in plans["-created_at"]
    assert not any("Sort" in plan for plan in plans.values())  # the index's order


# --8<-- [end:pg_explain]

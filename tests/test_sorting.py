"""Sorting: the naive getattr sort fails; the whitelist sorts right on both."""

from __future__ import annotations

import contextlib
import functools
import io
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, insert, literal, select, text
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from snippets import sorting
from snippets.sorting import (
    MAX_SORT_FIELDS,
    SORT_COLUMNS,
    Product,
    SortField,
    SortKey,
    add_catalogue,
    before,
    create_app,
    parse_sort,
    sort_terms,
    sorted_page,
)

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "sorting.md"
SNIPPET = ROOT / "snippets" / "sorting.py"
ALLOWED = "allowed: id, name, category, price (- for descending)"
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    app = create_app(database_url)
    async with app.router.lifespan_context(app):
        yield app


def client_for(app: FastAPI, *, raise_errors: bool = False) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_errors)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@contextlib.asynccontextmanager
async def catalogue_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The catalogue of the page, and a client that sees crashes as 500s."""
    async with app.state.sessions.begin() as session:
        await add_catalogue(session)
    async with client_for(app) as client:
        yield client


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with catalogue_client(app) as client:
        yield client


@pytest.fixture
async def sqlite_app(sqlite_url: str) -> AsyncIterator[FastAPI]:
    """For behaviour decided in Python, or checked on PostgreSQL by another test
    (each use says which): one backend is enough."""
    app = create_app(sqlite_url)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def sqlite_client(sqlite_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with catalogue_client(sqlite_app) as client:
        yield client


def dialect(app: FastAPI) -> str:
    return str(app.state.sessions.kw["bind"].dialect.name)


async def names(client: httpx.AsyncClient, url: str) -> list[str]:
    reply = await client.get(url)
    assert reply.status_code == 200, reply.text
    return [p["name"] for p in reply.json()]


# --- the naive way -------------------------------------------------------------

INTERNAL_NAMES = [
    "__class__",
    "metadata",
    "__table__",
    "registry",
    "__init__",
    "supplier",
    "colour",
    "id; DROP TABLE products",
]


async def test_naive_sort_by_internal_or_unknown_names_is_a_500(
    app: FastAPI, client: httpx.AsyncClient
):
    for name in INTERNAL_NAMES:
        for order in ("asc", "desc"):
            params = {"sort_by": name, "order": order}
            reply = await client.get("/naive/products", params=params)
            assert reply.status_code == 500, (name, order)
    assert len(await names(client, "/products")) == 5  # the table is intact


async def test_naive_sort_by_table_writes_the_schema_into_the_error(
    sqlite_url: str,
):
    """SQLite only: the error is raised while building the query, before SQL."""
    app = create_app(sqlite_url)
    async with (
        app.router.lifespan_context(app),
        client_for(app, raise_errors=True) as c,
    ):
        with pytest.raises(ArgumentError, match=r"Column\('cost_price'"):
            await c.get("/naive/products?sort_by=__table__")
        with pytest.raises(ArgumentError, match="expression expected"):
            await c.get("/naive/products?sort_by=__class__")
        with pytest.raises(AttributeError, match="no attribute 'colour'"):
            await c.get("/naive/products?sort_by=colour")


async def test_naive_sort_by_relationship_sends_broken_sql_or_crashes(app: FastAPI):
    message = {
        "sqlite": "no such column: suppliers.id",
        "postgresql": 'missing FROM-clause entry for table "suppliers"',
    }[dialect(app)]
    async with client_for(app, raise_errors=True) as c:
        with pytest.raises(DBAPIError, match=message):
            await c.get("/naive/products?sort_by=supplier")
        with pytest.raises(NotImplementedError):
            await c.get("/naive/products?sort_by=supplier&order=desc")


async def test_naive_sort_by_hidden_column_leaks_its_order(
    sqlite_client: httpx.AsyncClient,
):
    """SQLite here; on PostgreSQL demo_naive prints the same leak (tested below)."""
    client = sqlite_client
    reply = await client.get("/naive/products?sort_by=cost_price")
    assert reply.status_code == 200
    assert all("cost_price" not in product for product in reply.json())
    by_cost = [name for name, *_ in sorted(sorting.CATALOGUE, key=lambda r: r[3])]
    assert [p["name"] for p in reply.json()] == by_cost


async def test_naive_uppercase_desc_silently_sorts_ascending(
    sqlite_client: httpx.AsyncClient,
):
    """SQLite only: the direction is chosen in Python (PostgreSQL: page tabs)."""
    lower = await names(sqlite_client, "/naive/products?sort_by=id&order=desc")
    upper = await names(sqlite_client, "/naive/products?sort_by=id&order=DESC")
    assert lower == ["bread", "Apricot", "cherry", "apple", "Banana"]
    assert upper == ["Banana", "apple", "cherry", "Apricot", "bread"]


async def test_naive_null_position_differs_between_backends(
    app: FastAPI, client: httpx.AsyncClient
):
    reply = await client.get("/naive/products?sort_by=price")
    prices = [p["price"] for p in reply.json()]
    expected_first = {"sqlite": True, "postgresql": False}[dialect(app)]
    assert (prices[0] is None) is expected_first
    assert (prices[-1] is None) is not expected_first


async def test_sqlite_naive_order_by_name_puts_capitals_first(
    sqlite_client: httpx.AsyncClient,
):
    """SQLite only: its BINARY collation is fixed; PostgreSQL's depends on setup."""
    got = await names(sqlite_client, "/naive/products?sort_by=name")
    assert got == ["Apricot", "Banana", "apple", "bread", "cherry"]


# --- parsing the sort parameter --------------------------------------------------


def test_parse_sort_reads_a_direction_per_field():
    assert parse_sort("-price,name") == [
        SortKey(SortField.price, descending=True),
        SortKey(SortField.name, descending=False),
    ]
    assert parse_sort("id") == [SortKey(SortField.id, descending=False)]


REJECTED = [
    ("cost_price", "unknown sort field 'cost_price'"),
    ("supplier_id", "unknown sort field 'supplier_id'"),
    ("supplier", "unknown sort field 'supplier'"),
    ("__class__", "unknown sort field '__class__'"),
    ("__table__", "unknown sort field '__table__'"),
    ("metadata", "unknown sort field 'metadata'"),
    ("_sa_instance_state", "unknown sort field '_sa_instance_state'"),
    ("id; DROP TABLE products", "unknown sort field 'id; DROP TABLE products'"),
    ("lower(name)", "unknown sort field 'lower(name)'"),
    ("products.price", "unknown sort field 'products.price'"),
    ("price DESC", "unknown sort field 'price DESC'"),
    ("price nulls first", "unknown sort field 'price nulls first'"),
    ("PRICE", "unknown sort field 'PRICE'"),
    ("Price", "unknown sort field 'Price'"),
    (" price", "unknown sort field ' price'"),
    ("+price", "unknown sort field '+price'"),
    ("--price", "unknown sort field '-price'"),
    ("price\x00", "unknown sort field 'price\\x00'"),
    ("ñame", "unknown sort field 'ñame'"),
    ("1", "unknown sort field '1'"),
    ("", "empty sort field in ''"),
    ("-", "empty sort field in '-'"),
    (",", "empty sort field in ','"),
    ("price,", "empty sort field in 'price,'"),
    (",price", "empty sort field in ',price'"),
    ("price,,name", "empty sort field in 'price,,name'"),
    ("price,-price", "sort field 'price' given twice"),
    ("name,name", "sort field 'name' given twice"),
    ("-id,id", "sort field 'id' given twice"),
    ("name,category,price,id", "4 sort fields, at most 3"),
    ("a,b,c,d", "4 sort fields, at most 3"),
    (",,,,,,,,", "9 sort fields, at most 3"),
]


@pytest.mark.parametrize(("sort", "problem"), REJECTED)
def test_parse_sort_rejects_naming_the_problem_and_listing_the_fields(
    sort: str, problem: str
):
    with pytest.raises(ValueError, match="allowed") as caught:
        parse_sort(sort)
    assert str(caught.value) == f"{problem}; {ALLOWED}"


def test_every_public_field_has_a_column_and_nothing_else_does():
    assert set(SORT_COLUMNS) == set(SortField)
    assert {f.value for f in SortField} == {"id", "name", "category", "price"}
    assert MAX_SORT_FIELDS == 3


async def test_every_hostile_sort_is_a_422_before_any_sql(
    app: FastAPI, client: httpx.AsyncClient
):
    statements: list[str] = []
    engine = app.state.sessions.kw["bind"].sync_engine

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        for sort, problem in REJECTED:
            reply = await client.get("/products", params={"sort": sort})
            assert reply.status_code == 422, sort
            [error] = reply.json()["detail"]
            assert error["loc"] == ["query", "sort"]
            assert error["msg"] == f"{problem}; {ALLOWED}"
            assert error["input"] == sort
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert statements == []


async def test_overlong_repeated_and_plus_sorts_are_422(
    sqlite_client: httpx.AsyncClient,
):
    """SQLite only: rejected while parsing, before any SQL is sent."""
    client = sqlite_client
    too_long = await client.get("/products", params={"sort": "name," * 100})
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["query", "sort"]
    # A literal + in a query string is a space: it arrives as ' price'.
    plus = await client.get("/products?sort=+price")
    assert plus.status_code == 422
    assert plus.json()["detail"][0]["input"] == " price"
    # Repeated: whichever value FastAPI takes, it goes through the whitelist.
    twice = await client.get("/products?sort=price&sort=cost_price")
    assert twice.status_code == 422
    limit = await client.get("/products?sort=price&limit=0")
    assert limit.status_code == 422


def test_openapi_documents_the_sort_parameter():
    schema = create_app("sqlite+aiosqlite://").openapi()
    [sort] = [
        p
        for p in schema["paths"]["/products"]["get"]["parameters"]
        if p["name"] == "sort"
    ]
    assert sort["in"] == "query"
    assert "id, name, category, price" in sort["description"]
    assert sort["schema"]["default"] == "id"


# --- the recipe ------------------------------------------------------------------


def reference_order(rows: list[dict[str, Any]], sort: str) -> list[int]:
    """The order the page promises, computed in Python: keys in turn, NULL
    below every value, text by its lower-case form, ascending id last unless
    given."""
    keys = [(t.removeprefix("-"), t.startswith("-")) for t in sort.split(",")]
    if "id" not in {field for field, _ in keys}:
        keys.append(("id", False))

    def value(row: dict[str, Any], field: str) -> Any:
        return row[field].lower() if field == "name" else row[field]

    def compare(a: dict[str, Any], b: dict[str, Any]) -> int:
        for field, descending in keys:
            x, y = value(a, field), value(b, field)
            if x == y:
                continue
            if x is None or y is None:
                below = -1 if x is None else 1  # NULL below every value
                return below * (-1 if descending else 1)
            return (-1 if x < y else 1) * (-1 if descending else 1)
        return 0

    return [row["id"] for row in sorted(rows, key=functools.cmp_to_key(compare))]


async def add_many(
    sessions: Sessions, count: int = 60, first_id: int = 1
) -> list[dict[str, Any]]:
    """Rows full of ties: few prices (some NULL), names equal but for case.
    Letters only, so lower() orders them alike under any collation."""
    rng = random.Random(7)
    words = ["apple", "Apple", "APPLE", "pear", "Pear", "fig", "kiwi", "Kiwi"]
    rows = [
        {
            "id": i,
            "name": rng.choice(words),
            "category": rng.choice(["fruit", "bakery", "dairy"]),
            "price": rng.choice([None, 100, 100, 250, 999]),
            "cost_price": rng.randrange(1000),
        }
        for i in range(first_id, first_id + count)
    ]
    async with sessions.begin() as session:
        await session.execute(insert(Product), rows)
    return rows


SORTS = [
    "-price,name",
    "price",
    "-price",
    "name",
    "-name",
    "category,-price",
    "-category,name,-id",
    "-id",
    "price,-category",
]


async def test_sorted_list_matches_the_promised_order(app: FastAPI):
    rows = await add_many(app.state.sessions)
    async with client_for(app) as client:
        for sort in SORTS:
            reply = await client.get("/products", params={"sort": sort, "limit": 100})
            assert reply.status_code == 200, sort
            got = [p["id"] for p in reply.json()]
            assert got == reference_order(rows, sort), sort


async def test_primary_key_breaks_ties_unless_already_given(
    client: httpx.AsyncClient,
):
    fruit_by_category = await names(client, "/products?sort=category")
    assert fruit_by_category == ["bread", "Banana", "apple", "cherry", "Apricot"]
    by_id_desc = await names(client, "/products?sort=category,-id")
    assert by_id_desc == ["bread", "Apricot", "cherry", "apple", "Banana"]
    terms = [(str(t.column), t.descending) for t in sort_terms(parse_sort("category"))]
    assert terms == [("products.category", False), ("products.id", False)]
    given = sort_terms(parse_sort("category,-id"))
    assert [(str(t.column), t.descending) for t in given] == [
        ("products.category", False),
        ("products.id", True),
    ]


async def test_nulls_sort_lowest_first_ascending_last_descending(
    client: httpx.AsyncClient,
):
    for sort in ("price", "-price", "-price,name", "price,-name"):
        reply = await client.get("/products", params={"sort": sort})
        prices = [p["price"] for p in reply.json()]
        ascending = not sort.startswith("-")
        assert prices[0 if ascending else -1] is None, sort
        assert prices.count(None) == 1, sort


async def test_name_sorts_case_blind_on_both_backends(client: httpx.AsyncClient):
    got = await names(client, "/products?sort=name")
    assert got == ["apple", "Apricot", "Banana", "bread", "cherry"]
    got = await names(client, "/products?sort=-name")
    assert got == ["cherry", "bread", "Banana", "Apricot", "apple"]


async def test_lower_folds_non_ascii_only_on_postgres(app: FastAPI):
    async with app.state.sessions() as session:
        folded = await session.scalar(select(func.lower("ÉCLAIR")))
    assert folded == {"sqlite": "Éclair", "postgresql": "éclair"}[dialect(app)]


async def test_postgres_name_order_follows_the_collation(postgres_url: str):
    """PostgreSQL only: collations are its feature; "C" sorts like SQLite."""
    app = create_app(postgres_url)
    async with app.router.lifespan_context(app):
        async with app.state.sessions.begin() as session:
            await add_catalogue(session)
        async with app.state.sessions() as session:
            binary = await sorting.names_ordered_by(session, Product.name.collate("C"))
            icu = await sorting.names_ordered_by(
                session, Product.name.collate("und-x-icu")
            )
            lower = func.lower(Product.name)
            lower_binary = await sorting.names_ordered_by(session, lower.collate("C"))
            lower_icu = await sorting.names_ordered_by(
                session, lower.collate("und-x-icu")
            )
    assert binary == ["Apricot", "Banana", "apple", "bread", "cherry"]
    assert icu == ["apple", "Apricot", "Banana", "bread", "cherry"]
    assert lower_binary == lower_icu == icu


# --- what sorting by lower() guarantees, exactly -----------------------------------

LETTERS = ["apple", "Apple", "APPLE", "Banana", "apricot", "b", "AB", "abc", "Zed"]
PUNCTUATED = ["a b", "a-b", "a_b", "az", "zebra", "~z", "éclair", "eclair", "ed"]


def ascii_lower(text: str) -> str:
    return "".join(c.lower() if "A" <= c <= "Z" else c for c in text)


def byte_order(names: list[str]) -> list[str]:
    """SQLite's ORDER BY lower(name), id: ASCII folded, then UTF-8 bytes."""
    numbered = list(enumerate(names))
    numbered.sort(key=lambda pair: (ascii_lower(pair[1]).encode(), pair[0]))
    return [name for _, name in numbered]


async def lower_orders(url: str, names: list[str], collations: list[str]) -> list[Any]:
    """ORDER BY lower(name) [COLLATE x], id, for each collation given."""
    app = create_app(url)
    async with app.router.lifespan_context(app):
        async with app.state.sessions.begin() as session:
            rows = [{"name": n, "category": "c", "cost_price": 1} for n in names]
            await session.execute(insert(Product), rows)
        async with app.state.read_sessions() as session:
            lower = func.lower(Product.name)
            keys = [lower] + [lower.collate(c) for c in collations]
            return [await sorting.names_ordered_by(session, key) for key in keys]


async def test_sqlite_lower_folds_ascii_and_then_compares_bytes(sqlite_url: str):
    """SQLite only: BINARY is its one default, on every build."""
    (got,) = await lower_orders(sqlite_url, LETTERS + PUNCTUATED + ["ÉCLAIR"], [])
    assert got == byte_order(LETTERS + PUNCTUATED + ["ÉCLAIR"])
    assert got[-2:] == ["ÉCLAIR", "éclair"]  # "Éclair" (C3 89) < "éclair" (C3 A9)


async def test_postgres_lower_sorts_ascii_letters_alike_under_c_and_icu(
    postgres_url: str,
):
    """PostgreSQL only: collations are its feature (pg_collation lists them)."""
    orders = await lower_orders(
        postgres_url, LETTERS, ["C", "und-x-icu", "en-US-x-icu"]
    )
    c, icu, en = orders[1:]
    assert c == icu == en == byte_order(LETTERS)


async def test_postgres_lower_sorts_punctuation_and_accents_apart_under_icu(
    postgres_url: str,
):
    """PostgreSQL only: the collations of one server disagree."""
    _, c, icu = await lower_orders(postgres_url, PUNCTUATED, ["C", "und-x-icu"])
    assert c == byte_order(PUNCTUATED)  # bytes: the same as SQLite
    assert c == ["a b", "a-b", "a_b", "az", "eclair", "ed", "zebra", "~z", "éclair"]
    assert icu == ["~z", "a b", "a_b", "a-b", "az", "eclair", "éclair", "ed", "zebra"]


async def test_postgres_lower_in_the_c_collation_folds_ascii_only_like_sqlite(
    postgres_url: str,
):
    """PostgreSQL only: lower() follows the collation's character classes."""
    app = create_app(postgres_url)
    async with app.router.lifespan_context(app), app.state.read_sessions() as s:
        c = await s.scalar(select(func.lower(literal("ÉCLAIR").collate("C"))))
        utf8 = await s.scalar(select(func.lower(literal("ÉCLAIR").collate("C.utf8"))))
    assert (c, utf8) == ("Éclair", "éclair")


# --- keyset pagination -------------------------------------------------------------


async def walk(sessions: Sessions, sort: str, limit: int) -> list[int]:
    keys = parse_sort(sort)
    seen: list[int] = []
    cursor = None
    async with sessions() as session:
        for _ in range(100):
            page, cursor = await sorted_page(session, keys, cursor, limit)
            assert page, "an empty page before the end"
            seen += [product.id for product in page]
            if cursor is None:
                return seen
    raise AssertionError("the walk did not end")


async def test_keyset_walk_returns_every_row_once_in_order(app: FastAPI):
    rows = await add_many(app.state.sessions)
    for sort in ("-price,name", "price,-name", "name,-price", "-id"):
        for limit in (5, 7, 100):
            ids = await walk(app.state.sessions, sort, limit)
            assert ids == reference_order(rows, sort), (sort, limit)


async def test_keyset_walk_backwards_with_before_is_the_reverse(app: FastAPI):
    """The Pagination page's before(): the same rule read from the end, also
    over lower(name) and a nullable price."""
    rows = await add_many(app.state.sessions)
    for sort in ("-price,name", "price,-name", "name,-price"):
        terms = sort_terms(parse_sort(sort))
        backwards = [term.reversed() for term in terms]
        columns = [term.column for term in terms]
        seen: list[int] = []
        cursor = None
        async with app.state.read_sessions() as session:
            while True:
                query = select(Product.id, *columns).order_by(
                    *(term.order_by() for term in backwards)
                )
                if cursor is not None:
                    query = query.where(before(terms, cursor))
                page = (await session.execute(query.limit(7))).all()
                if not page:
                    break
                seen += [row[0] for row in page]
                cursor = tuple(page[-1][1:])
        assert seen[::-1] == reference_order(rows, sort), sort


async def test_keyset_last_page_has_no_cursor(sqlite_app: FastAPI):
    """SQLite only: the cursor's shape is Python's; the walk runs on both."""
    await add_many(sqlite_app.state.sessions, count=6)
    keys = parse_sort("-price,name")
    async with sqlite_app.state.sessions() as session:
        first, cursor = await sorted_page(session, keys, None, 3)
        assert len(first) == 3
        assert cursor is not None
        assert len(cursor) == 3  # price, lower(name), id
        second, cursor = await sorted_page(session, keys, cursor, 3)
    assert len(second) == 3
    assert cursor is None


# --- what the page shows -------------------------------------------------------------


def snippet_output(demo: str) -> list[str]:
    """The #> lines of one section of the snippet."""
    source = SNIPPET.read_text()
    section = source.split(f"# --8<-- [start:{demo}]")[1].split("# --8<-- [end:")[0]
    return re.findall(r"^\s*#> ?(.*)$", section, flags=re.M)


def page_tab(demo: str, backend: str) -> list[str]:
    """The text block of one tab after `<!-- output: demo -->` on the page."""
    block = PAGE.read_text().split(f"<!-- output: {demo} -->")[1]
    tab = block.split(f'=== "{backend}"')[1]
    body = tab.split("```text\n")[1].split("```")[0]
    return [line.removeprefix("    ") for line in body.rstrip().splitlines()]


async def printed(demo: Callable[..., Awaitable[None]], *args: Any) -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        await demo(*args)
    return out.getvalue().splitlines()


async def test_demos_print_the_same_on_both_backends(
    app: FastAPI, client: httpx.AsyncClient
):
    for name in ("demo_naive", "demo_sorted", "demo_errors"):
        demo = getattr(sorting, name)
        assert await printed(demo, client) == snippet_output(name), name
    got = await printed(sorting.demo_keyset, app.state.sessions)
    assert got == snippet_output("demo_keyset")


async def test_page_tabs_show_what_each_backend_prints(
    app: FastAPI, client: httpx.AsyncClient
):
    backend = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[dialect(app)]
    got = await printed(sorting.demo_naive_direction, client)
    assert got == page_tab("demo_naive_direction", backend)
    for name in ("demo_case", "demo_index"):
        got = await printed(getattr(sorting, name), app.state.sessions)
        assert got == page_tab(name, backend), name


async def test_sqlite_index_serves_the_default_sort_without_a_sort_step(
    sqlite_app: FastAPI,
):
    """SQLite here; PostgreSQL's plans are checked by the page-tab test and by
    the statistics test below."""
    async with sqlite_app.state.sessions.begin() as session:
        await add_catalogue(session)
    async with sqlite_app.state.sessions() as session:
        served = await sorting.explain(
            session, sorting.sorted_products(parse_sort("-price,name"), 20)
        )
        unserved = await sorting.explain(
            session, sorting.sorted_products(parse_sort("category"), 20)
        )
    served_plan, unserved_plan = "\n".join(served), "\n".join(unserved)
    assert "ix_products_price_name" in served_plan
    assert "TEMP B-TREE" not in served_plan
    assert "ix_products_price_name" not in unserved_plan
    assert "USE TEMP B-TREE FOR ORDER BY" in unserved_plan


async def test_postgres_index_is_nulls_last_and_chosen_with_statistics(
    postgres_url: str,
):
    """PostgreSQL only: SQLite cannot declare NULLS LAST in an index; and the
    page's claim about PostgreSQL's planner: five rows after ANALYZE are sorted
    in memory, two hundred are read through the index."""
    app = create_app(postgres_url)
    query = sorting.sorted_products(parse_sort("-price,name"), 20)
    async with app.router.lifespan_context(app):
        sessions = app.state.sessions
        async with sessions.begin() as session:
            await add_catalogue(session)
        async with sessions() as session:
            await session.execute(text("ANALYZE products"))
            small = await sorting.explain(session, query)
        await add_many(sessions, count=200, first_id=100)
        async with sessions() as session:
            await session.execute(text("ANALYZE products"))
            large = await sorting.explain(session, query)
            ddl = await session.scalar(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"),
                {"name": "ix_products_price_name"},
            )
    assert "price DESC NULLS LAST, lower((name)::text), id" in ddl
    assert "Sort" in small[1]
    assert large == [
        "Limit",
        "  ->  Index Scan using ix_products_price_name on products",
    ]

"""Filtering: typed optional filters, literal search, UTC ranges, indexes."""

from __future__ import annotations

import itertools
import random
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import ColumnElement, literal, select
from sqlalchemy.exc import StatementError

from snippets import filtering
from snippets.filtering import (
    SEED,
    Item,
    ItemFilter,
    ItemQuery,
    NaiveItem,
    add_many_rows,
    add_seed_items,
    at,
    bound_plan,
    client_for,
    create_app,
    fold,
    item_conditions,
    lifespan,
    name_contains,
    name_search_contains,
    newest_in,
    tell_story,
)

PAGE = Path(__file__).resolve().parent.parent / "docs" / "filtering.md"
ALL = sorted((row[0] for row in SEED), key=str)
Params = list[tuple[str, str | int]]


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    app = create_app(database_url)
    async with app.router.lifespan_context(app):
        async with app.state.sessions.begin() as session:
            await add_seed_items(session)
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        yield client


@pytest.fixture
async def sqlite_app(sqlite_url: str) -> AsyncIterator[FastAPI]:
    """For what the backend cannot change: validation runs before any SQL,
    and the naive endpoint's flaws and @validates are in Python."""
    app = create_app(sqlite_url)
    async with app.router.lifespan_context(app):
        async with app.state.sessions.begin() as session:
            await add_seed_items(session)
        yield app


@pytest.fixture
async def sqlite_client(sqlite_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(sqlite_app) as client:
        yield client


def names(reply: httpx.Response) -> list[str]:
    assert reply.status_code == 200, reply.text
    return [item["name"] for item in reply.json()]


# --- the oracle: what each filter means, written as plain Python ------------


def matches(f: ItemFilter, row: tuple[str, str, str, int, datetime]) -> bool:
    name, category, status, price, created_at = row
    return (
        (f.status is None or status in f.status)
        and (f.category is None or category in f.category)
        and (f.min_price is None or price >= f.min_price)
        and (f.max_price is None or price <= f.max_price)
        and (f.q is None or fold(f.q) in fold(name))
        and (f.created_after is None or created_at >= f.created_after)
        and (f.created_before is None or created_at < f.created_before)
    )


def as_params(f: ItemFilter) -> Params:
    params: Params = []
    for key, value in f.model_dump(exclude_none=True).items():
        values = value if isinstance(value, list) else [value]
        params += [
            (key, v.isoformat() if isinstance(v, datetime) else v) for v in values
        ]
    return params


def filter_combinations() -> list[ItemQuery]:
    choices = itertools.product(
        [None, ["active"], ["draft", "archived"]],
        [None, ["kitchen"], ["kitchen", "decor"]],
        [(None, None), (0, 0), (450, 1200), (None, 800), (1500, None)],
        [None, "50%", "_", "E", "cup"],
        [(None, None), (at(1, 9), None), (None, at(2, 0)), (at(1, 9), at(2, 12))],
        [20, 2],
    )
    combos = [
        ItemQuery(
            status=status,
            category=category,
            min_price=low,
            max_price=high,
            q=q,
            created_after=after,
            created_before=before,
            limit=limit,
        )
        for status, category, (low, high), q, (after, before), limit in choices
    ]
    return random.Random(4).sample(combos, 40)


async def test_filters_combine_and_agree_with_the_python_oracle(
    client: httpx.AsyncClient,
):
    nonempty = 0
    for f in filter_combinations():
        expected = [row[0] for row in reversed(SEED) if matches(f, row)][: f.limit]
        assert names(await client.get("/items", params=as_params(f))) == expected
        nonempty += bool(expected)
    assert nonempty > 6  # the sample is not all empty results


async def test_bounds_are_as_documented_and_times_compare_as_instants(
    client: httpx.AsyncClient,
):
    exact = {"min_price": 450, "max_price": 450}  # both inclusive
    assert names(await client.get("/items", params=exact)) == ["Tea cup"]
    nine = at(1, 9).isoformat()  # Tea cup's created_at
    after = names(await client.get("/items", params={"created_after": nine}))
    before = names(await client.get("/items", params={"created_before": nine}))
    assert "Tea cup" in after  # inclusive
    assert before == ["Free sticker"]  # exclusive
    paris = timezone(timedelta(hours=1))
    ten_in_paris = datetime(2026, 3, 1, 10, tzinfo=paris)  # the same instant
    for same in (ten_in_paris.isoformat(), "2026-03-01T04:00:00-05:00"):
        params = {"created_after": same, "max_price": 450}
        assert names(await client.get("/items", params=params)) == ["Tea cup"]


async def test_client_datetimes_need_an_offset_and_are_read_as_utc(
    sqlite_client: httpx.AsyncClient,
):
    """UTCTimestamp: parsing is Python's, the same on both databases."""
    naive = await sqlite_client.get(
        "/items", params={"created_after": "2026-03-01T09:00:00"}
    )
    error = naive.json()["detail"][0]
    assert naive.status_code == 422
    assert (error["loc"], error["msg"]) == (
        ["query", "created_after"],
        "Input should have timezone info",
    )
    kathmandu = ItemFilter.model_validate({"created_after": "2026-03-01T14:45+05:45"})
    assert kathmandu.created_after == at(1, 9)
    assert kathmandu.created_after.tzinfo is UTC
    reply = await sqlite_client.get(
        "/items", params={"created_after": "2026-03-03T05:45:00+05:45"}
    )
    assert [item["created_at"] for item in reply.json()] == [
        "2026-03-03T00:00:00+00:00"  # written back in UTC, with +00:00
    ]


@pytest.fixture
def st_johns(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local zone: Newfoundland, UTC-03:30 in early March."""
    monkeypatch.setenv("TZ", "America/St_Johns")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def test_naive_created_at_is_stored_as_local_time_by_asyncpg(
    postgres_url: str, st_johns: None
):
    """asyncpg-only: DateTime(timezone=True) is timestamptz, and asyncpg
    encodes a naive value with astimezone(utc): as the process's local time."""
    app = create_app(postgres_url)
    nine_utc_meant = datetime(2026, 3, 1, 9, 0)  # noqa: DTZ001 - the trap
    async with app.router.lifespan_context(app), app.state.sessions() as session:
        naive = NaiveItem(
            name="clock",
            category="c",
            status="draft",
            price=1,
            created_at=nine_utc_meant,
        )
        session.add(naive)
        await session.flush()
        stored = await session.scalar(select(NaiveItem.created_at))
        assert stored == datetime(2026, 3, 1, 12, 30, tzinfo=UTC)  # 3.5 hours off
        item = Item(name="clock", category="c", status="draft", price=1)
        item.created_at = nine_utc_meant
        session.add(item)
        with pytest.raises(StatementError, match="naive datetime"):
            await session.flush()  # UTCDateTime refuses it on both databases


# --- falsy values and the naive filter ---------------------------------------


async def test_naive_filter_returns_every_row_for_zero_and_empty_string(
    sqlite_client: httpx.AsyncClient,
):
    for params in ({"max_price": 0}, {"category": ""}, {"q": ""}):
        found = names(await sqlite_client.get("/naive/items", params=params))
        assert sorted(found, key=str) == ALL


async def test_zero_is_a_filter_value(sqlite_client: httpx.AsyncClient):
    """The oracle test also covers 0 on PostgreSQL."""
    assert names(await sqlite_client.get("/items", params={"max_price": 0})) == [
        "Free sticker"
    ]
    assert names(await sqlite_client.get("/items", params={"min_price": 0})) == [
        row[0] for row in reversed(SEED)
    ]


async def test_naive_search_treats_percent_and_underscore_as_wildcards(
    sqlite_client: httpx.AsyncClient,
):
    underscore = await sqlite_client.get("/naive/items", params={"q": "_"})
    percent = await sqlite_client.get("/naive/items", params={"q": "50%"})
    assert sorted(names(underscore), key=str) == ALL
    assert names(percent) == ["500 ml bottle", "50% off mug"]


# --- hostile input: every bad value is a 422 naming its parameter -----------

BAD: list[tuple[str, list[str]]] = [
    ("status", [""]),
    ("status", ["ACTIVE"]),
    ("status", ["active' OR '1'='1"]),
    ("status", ["active"] * 21),
    ("category", [""]),
    ("category", ["   "]),
    ("category", ["x" * 51]),
    ("category", ["ok\x00"]),
    ("category", [f"c{n}" for n in range(21)]),
    ("min_price", ["abc"]),
    ("min_price", ["-1"]),
    ("min_price", ["1e400"]),
    ("min_price", ["NaN"]),
    ("min_price", [str(10**30)]),
    ("max_price", ["inf"]),
    ("max_price", ["1.5"]),
    ("max_price", [str(filtering.MAX_PRICE + 1)]),
    ("q", [""]),
    ("q", ["  "]),
    ("q", ["x" * 101]),
    ("q", ["\x00"]),
    ("created_after", ["2026-03-01T09:00:00"]),
    ("created_after", ["2026-13-01T00:00:00Z"]),
    ("created_after", ["yesterday"]),
    ("created_after", ["0001-01-01T00:00:00+01:00"]),
    ("created_before", ["9999-12-31T23:59:59-01:00"]),
    ("created_before", ["2026-03-01T09:00:00 01:00"]),  # an unencoded +
    ("limit", ["0"]),
    ("limit", ["101"]),
    ("stauts", ["active"]),
]


async def test_every_bad_value_is_422_naming_its_parameter(
    sqlite_client: httpx.AsyncClient,
):
    for name, values in BAD:
        reply = await sqlite_client.get("/items", params=[(name, v) for v in values])
        assert reply.status_code == 422, (name, values, reply.text)
        where = [error["loc"][:2] for error in reply.json()["detail"]]
        assert where == [["query", name]], (name, values)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"min_price": 5, "max_price": 4}, "max_price"),
        (
            {
                "created_after": "2026-03-01T10:00:00+01:00",
                "created_before": "2026-03-01T09:00:00Z",  # the same instant
            },
            "created_before",
        ),
    ],
)
async def test_an_empty_range_is_422_naming_its_upper_bound(
    sqlite_client: httpx.AsyncClient, params: dict[str, str | int], name: str
):
    reply = await sqlite_client.get("/items", params=params)
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["query", name]


EDGE_VALUES: list[tuple[str, str]] = [
    ("q", "' OR 1=1 --"),
    ("q", "x'); DROP TABLE items; --"),
    ("q", "\\"),
    ("q", "/%_"),
    ("q", "🙂" * 25),
    ("category", "\"'`;"),
    ("min_price", str(filtering.MAX_PRICE)),
    ("created_after", "0001-01-01T00:00:00Z"),
    ("created_before", "9999-12-31T23:59:59.999999Z"),
    ("created_after", "1700000000"),  # a Unix time: pydantic accepts it
]


async def test_an_injection_attempt_is_just_a_search_string(
    client: httpx.AsyncClient,
):
    assert names(await client.get("/items", params={"q": "' OR 1=1 --"})) == []
    for name, value in EDGE_VALUES:  # quotes, escapes, extremes: values too
        reply = await client.get("/items", params={name: value})
        assert reply.status_code == 200, (name, value, reply.text)
    raw = await client.get("/items?q=%ED%A0%80%FF")  # bytes that are not UTF-8
    assert raw.status_code == 200  # decoded as U+FFFD: a search like any other
    assert sorted(names(await client.get("/items")), key=str) == ALL  # intact


def test_every_filter_value_is_a_bound_parameter():
    marker = "zq'x"
    f = ItemFilter(
        status=["active"],
        category=[marker],
        min_price=1,
        max_price=2,
        q=marker,
        created_after=at(1, 0),
        created_before=at(2, 0),
    )
    compiled = select(Item).where(*item_conditions(f)).compile()
    assert marker not in str(compiled)
    assert "2026" not in str(compiled)
    assert len(compiled.params) == 7
    assert marker in compiled.params.values()


# --- search: literal, case-insensitive, Unicode ------------------------------

ASCII_NAMES = ["100%", "1000", "a_b", "axb", "a/b", "a//b", "a\\b", "O'Brien"]
NAMES = [*ASCII_NAMES, "TEA CUP", "Straße", "ÉCRU", "e\u0301cru"]
QUERIES = ["%", "_", "/", "//", "\\", "0%", "a_b", "'", "tea", "a/", "x"]
QUERIES += ["STRASSE", "straße", "écru", "e\u0301CRU", "ÉLAN"]


async def found_by(app: FastAPI, condition: ColumnElement[bool]) -> set[str]:
    async with app.state.sessions() as session:
        rows = await session.scalars(select(Item.name).where(condition))
        return set(rows)


async def test_search_matches_like_python_in(app: FastAPI):
    """name_contains is `in` after lower() for ASCII; name_search_contains is
    `in` after fold() for every text: %, _ and / are plain characters."""
    async with app.state.sessions.begin() as session:
        for name in NAMES:
            session.add(Item(name=name, category="c", status="draft", price=1))
    for q in QUERIES:
        folded = {n for n in NAMES if fold(q) in fold(n)}
        lowered = {n for n in ASCII_NAMES if q.lower() in n.lower()}
        assert await found_by(app, name_search_contains(q)) & set(NAMES) == folded, q
        assert await found_by(app, name_contains(q)) & set(ASCII_NAMES) == lowered, q
    assert await found_by(app, name_search_contains("STRASSE")) == {"Straße"}
    assert await found_by(app, name_search_contains("écru")) == {"ÉCRU", "e\u0301cru"}


async def test_name_search_follows_a_rename(sqlite_app: FastAPI):
    """SQLite only: @validates runs in Python, whatever the database."""
    async with sqlite_app.state.sessions.begin() as session:
        item = (await session.scalars(select(Item).where(Item.price == 0))).one()
        item.name = "Ünique"
    assert await found_by(sqlite_app, name_search_contains("üNIQUE")) == {"Ünique"}
    assert await found_by(sqlite_app, name_search_contains("sticker")) == set()


async def test_sqlite_ilike_folds_ascii_only(sqlite_app: FastAPI):
    """SQLite-only: its LIKE and lower() know ASCII case only (no ICU)."""
    assert await found_by(sqlite_app, name_contains("élan")) == set()
    assert await found_by(sqlite_app, name_contains("éLAN")) == set()
    assert await found_by(sqlite_app, name_contains("lAN")) == {"Élan vase"}


# --- time zones ----------------------------------------------------------------


async def test_utc_datetime_stores_the_instant_and_returns_aware_utc(app: FastAPI):
    paris = timezone(timedelta(hours=1))
    async with app.state.sessions.begin() as session:
        item = Item(name="clock", category="c", status="draft", price=1)
        item.created_at = datetime(2026, 3, 1, 10, tzinfo=paris)
        session.add(item)
    async with app.state.sessions() as session:
        query = select(Item.created_at).where(Item.name == "clock")
        stored = await session.scalar(query)
        assert stored == datetime(2026, 3, 1, 9, tzinfo=UTC)
        assert stored is not None
        assert stored.utcoffset() == timedelta(0)
        item = Item(name="naive", category="c", status="draft", price=1)
        item.created_at = datetime(2026, 3, 1, 9)  # noqa: DTZ001
        session.add(item)
        with pytest.raises(StatementError, match="naive datetime"):
            await session.flush()


async def test_sqlite_plain_tz_column_drops_the_offset_and_misfilters(
    sqlite_url: str,
):
    """SQLite-only: PostgreSQL has a real timestamptz (see the next test)."""
    paris = timezone(timedelta(hours=1))
    app = create_app(sqlite_url)
    async with app.router.lifespan_context(app), app.state.sessions() as session:
        session.add(
            NaiveItem(
                name="clock",
                category="c",
                status="draft",
                price=1,
                created_at=datetime(2026, 3, 1, 10, tzinfo=paris),  # 09:00 UTC
            )
        )
        await session.flush()
        stored = await session.scalar(select(NaiveItem.created_at))
        assert stored == datetime(2026, 3, 1, 10)  # noqa: DTZ001
        half_past_nine = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
        earlier = select(NaiveItem.id).where(NaiveItem.created_at < half_past_nine)
        assert (await session.scalars(earlier)).all() == []  # 09:00 < 09:30


# --- indexes -------------------------------------------------------------------


async def plans(app: FastAPI) -> tuple[str, str]:
    async with app.state.sessions.begin() as session:
        await add_many_rows(session, 1500)
    async with app.state.sessions() as session:
        naive = "\n".join(await bound_plan(session, newest_in(NaiveItem)))
        fixed = "\n".join(await bound_plan(session, newest_in(Item)))
    return naive, fixed


async def test_composite_index_removes_the_sort_a_status_index_leaves(app: FastAPI):
    naive, fixed = await plans(app)
    sort_step = re.compile(r"TEMP B-TREE FOR ORDER BY|\bSort\b")
    assert "ix_naive_items_status" in naive
    assert sort_step.search(naive)  # every active row is read, then sorted
    assert "ix_items_listing" in fixed
    assert not sort_step.search(fixed)  # read in order, stops after 20 rows


async def test_sqlite_substring_search_reads_every_row(sqlite_url: str):
    """SQLite-only plan text; a leading % defeats a B-tree on any database."""
    app = create_app(sqlite_url)
    async with app.router.lifespan_context(app), app.state.sessions() as session:
        query = select(Item).where(name_search_contains("cup"))
        assert await bound_plan(session, query) == ["SCAN items"]


# --- PostgreSQL: what the page's PostgreSQL tabs show is what it prints -------


def postgres_tabs() -> list[list[str]]:
    lines = PAGE.read_text().splitlines()
    blocks = []
    for number, line in enumerate(lines):
        if line.strip() != '=== "PostgreSQL"':
            continue
        start = lines.index("    ```text", number)
        end = lines.index("    ```", start + 1)
        blocks.append([text[4:] for text in lines[start + 1 : end]])
    return blocks


def runs_in(block: list[str], printed: list[str]) -> bool:
    return any(printed[i : i + len(block)] == block for i in range(len(printed)))


async def test_postgres_output_on_the_page_is_what_postgres_prints(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
):
    app = create_app(postgres_url)
    async with lifespan(app):
        await tell_story(app)
    printed = capsys.readouterr().out.splitlines()
    tabs = postgres_tabs()
    assert len(tabs) >= 3
    for block in tabs:
        assert runs_in(block, printed), block
    assert "'É' ILIKE 'é': True" in printed  # ILIKE folds Unicode here
    assert "NaiveItem: 2026-03-01T09:00:00+00:00" in printed  # a real timestamptz


async def test_postgres_text_pitfalls_the_recipe_avoids(postgres_url: str):
    """PostgreSQL-only, two rules of its text type. NUL is refused: the naive
    endpoint answers 500, the recipe 422 before any SQL. ILIKE folds case by
    the collation's character type: under "C" (also a database created with
    LC_CTYPE 'C'), ASCII only, as on SQLite; fold() does not depend on it."""
    app = create_app(postgres_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            naive = await c.get("/naive/items", params={"q": "a\x00"})
            fixed = await c.get("/items", params={"q": "a\x00"})
        async with app.state.sessions() as session:
            in_c = select(literal("É").collate("C").ilike("é"))
            in_default = select(literal("É").ilike("é"))
            assert await session.scalar(in_c) is False
            assert await session.scalar(in_default) is True  # C.UTF-8 here
            sharp_s = select(literal("straße").ilike("STRASSE"))
            assert await session.scalar(sharp_s) is False  # fold() says equal
    assert naive.status_code == 500
    assert fixed.status_code == 422

"""Bulk operations: inserts, updates, upserts, imports, chunks, both backends."""

from __future__ import annotations

import asyncio
import random
import re
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import event, func, insert, select, update
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    SADeprecationWarning,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.orm.exc import StaleDataError

from snippets import bulk
from snippets.bulk import (
    Brand,
    DuplicateSkus,
    Move,
    Product,
    ProductChanges,
    ProductIn,
    ProductsNotFound,
    RowError,
    Upserted,
    add_moves,
    chunked,
    copy_moves,
    copy_moves_naive,
    create_engine,
    create_session_factory,
    create_tables,
    dialect_insert,
    import_products,
    import_products_naive,
    insert_commit_per_chunk,
    insert_in_chunks,
    insert_moves,
    insert_moves_core,
    insert_moves_unguarded,
    insert_products,
    load_moves,
    moves,
    products,
    set_stock,
    statements_sent,
    update_products,
    update_products_where,
    update_stock_naive,
    upsert_products,
    upsert_products_inserted,
    upsert_products_naive,
    upsert_statement,
)

Sessions = async_sessionmaker[AsyncSession]
ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "bulk.md"
SNIPPET = ROOT / "snippets" / "bulk.py"


async def ready_engine(url: str) -> AsyncEngine:
    engine = create_engine(url)
    await create_tables(engine)
    return engine


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await ready_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> Sessions:
    return create_session_factory(engine)


async def seed(sessions: Sessions, n: int) -> list[int]:
    async with sessions.begin() as session:
        return await insert_products(session, products(n))


async def rows_of(sessions: Sessions, *columns):
    async with sessions() as session:
        query = select(*columns).order_by(*columns)
        return [tuple(row) for row in await session.execute(query)]


async def total(sessions: Sessions, model: type) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def soft_delete(sessions: Sessions, product_id: int) -> None:
    async with sessions.begin() as session:
        await session.execute(
            update(Product)
            .where(Product.id == product_id)
            .values(deleted_at=func.current_timestamp())
        )


# --- the page shows the real output of both backends -------------------------


def page_outputs(name: str) -> dict[str, list[str]]:
    """The ```text blocks of the tabs that follow <!-- output: name -->."""
    lines = PAGE.read_text().splitlines()
    outputs: dict[str, list[str]] = {}
    tab, inside = "", False
    for line in lines[lines.index(f"<!-- output: {name} -->") + 1 :]:
        if match := re.match(r'^=== "(.+)"$', line):
            tab = match.group(1)
        elif line.strip() == "```text":
            inside, outputs[tab] = True, []
        elif line.strip() == "```" and inside:
            inside = False
            if len(outputs) == 2:
                break
        elif inside:
            outputs[tab].append(line.removeprefix("    "))
    return outputs


def snippet_output(name: str) -> list[str]:
    """The #> lines of a snippet section (test_pipeline checks them on SQLite)."""
    source = SNIPPET.read_text()
    section = source.split(f"# --8<-- [start:{name}]")[1].split("# --8<-- [end:")[0]
    return re.findall(r"^\s*#> ?(.*)$", section, flags=re.M)


@pytest.mark.parametrize("demo", ["demo_insert", "demo_returning"])
def test_page_sqlite_tab_is_the_snippet_output(demo: str):
    assert page_outputs(demo)["SQLite"] == snippet_output(demo)


@pytest.mark.parametrize("demo", ["demo_insert", "demo_returning"])
async def test_page_postgresql_tab_is_what_postgresql_prints(
    demo: str, postgres_url: str, capsys: pytest.CaptureFixture[str]
):
    engine = await ready_engine(postgres_url)
    await getattr(bulk, demo)(engine)
    await engine.dispose()
    assert capsys.readouterr().out.splitlines() == page_outputs(demo)["PostgreSQL"]


# --- bulk insert ---------------------------------------------------------------


async def test_bulk_inserts_send_one_statement_and_store_every_row(
    engine: AsyncEngine, sessions: Sessions
):
    rows = moves(300)
    for load in (insert_moves, insert_moves_core):
        with statements_sent(engine) as sent:
            async with sessions.begin() as session:
                await load(session, rows)
        assert sent["INSERT"] == 1
    stored = await rows_of(sessions, Move.id, Move.sku, Move.quantity)
    expected = [(r["sku"], r["quantity"]) for r in rows] * 2
    assert [(sku, qty) for _, sku, qty in stored] == expected


async def test_fast_load_stores_every_row_and_is_undone_by_a_rollback(
    sessions: Sessions,
):
    rows = moves(300)
    async with sessions() as session:
        await load_moves(session, rows)
        assert await session.scalar(select(func.count()).select_from(Move)) == 300
        await session.rollback()
    assert await total(sessions, Move) == 0
    async with sessions.begin() as session:
        await load_moves(session, rows)
    stored = await rows_of(sessions, Move.id, Move.sku, Move.quantity)
    assert [(sku, qty) for _, sku, qty in stored] == [
        (r["sku"], r["quantity"]) for r in rows
    ]


async def test_an_empty_list_is_not_a_no_op(sessions: Sessions):
    """Why the recipes return early on empty input."""
    async with sessions() as session:
        with pytest.raises(IntegrityError):  # INSERT of defaults: no sku
            await session.execute(insert(Product), [])


class DefaultsBase(DeclarativeBase):
    pass


class Tag(DefaultsBase):
    """Every column has a default: nothing stops a row of defaults."""

    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(default="untitled")
    note: Mapped[str | None]


@pytest.mark.parametrize("layer", ["orm", "core"])
async def test_an_empty_list_stores_one_row_of_defaults(
    engine: AsyncEngine, sessions: Sessions, layer: str
):
    """The same on SQLite and PostgreSQL, through the session or the connection
    (where SQLAlchemy 2.1 warns that an empty list will raise one day)."""
    async with engine.begin() as conn:
        await conn.run_sync(DefaultsBase.metadata.create_all)
    async with sessions.begin() as session:
        if layer == "orm":  # silently
            with warnings.catch_warnings():
                warnings.simplefilter("error", SADeprecationWarning)
                await session.execute(insert(Tag), [])
        else:  # Core at least warns
            conn = await session.connection()
            with pytest.warns(SADeprecationWarning, match="Empty parameter sequence"):
                await conn.execute(insert(Tag), [])
    assert await rows_of(sessions, Tag.id, Tag.label, Tag.note) == [
        (1, "untitled", None)
    ]


async def test_naive_insert_of_an_empty_list_sends_an_insert(
    engine: AsyncEngine, sessions: Sessions
):
    with statements_sent(engine) as sent, pytest.raises(IntegrityError):
        async with sessions.begin() as session:
            await insert_moves_unguarded(session, [])
    assert sent["INSERT"] == 1


async def test_guarded_insert_of_an_empty_list_sends_nothing(
    engine: AsyncEngine, sessions: Sessions
):
    with statements_sent(engine) as sent:
        async with sessions.begin() as session:
            await insert_moves(session, [])
    assert sent["INSERT"] == 0
    assert await total(sessions, Move) == 0


async def test_recipes_accept_empty_input_and_write_nothing(sessions: Sessions):
    async with sessions.begin() as session:
        await insert_moves(session, [])
        await insert_moves_core(session, [])
        await load_moves(session, [])
        assert await insert_products(session, []) == []
        assert await upsert_products(session, []) == Upserted([], [], [])
        assert await import_products(session, []) == []
        await update_products(session, [], ProductChanges(stock=1))
        await set_stock(session, {})
        await insert_in_chunks(session, [])
    assert (await total(sessions, Move), await total(sessions, Product)) == (0, 0)


async def test_naive_copy_before_any_statement_escapes_the_transaction(
    postgres_url: str,
):
    engine = await ready_engine(postgres_url)
    sessions = create_session_factory(engine)
    async with sessions() as session:
        conn = await session.connection()  # no statement sent yet
        await copy_moves_naive(conn, [("SKU-1", 5)])
        await session.rollback()
    assert await total(sessions, Move) == 1  # the rollback undid nothing
    await engine.dispose()


async def test_copy_after_a_statement_is_undone_by_a_rollback(postgres_url: str):
    engine = await ready_engine(postgres_url)
    sessions = create_session_factory(engine)
    async with sessions() as session:
        await copy_moves(await session.connection(), [("SKU-1", 5)])
        await session.rollback()
    assert await total(sessions, Move) == 0
    await engine.dispose()


async def test_returned_ids_follow_the_input_order_across_batches(
    engine: AsyncEngine, sessions: Sessions
):
    rows = products(1_001)  # one row more than an insertmanyvalues batch
    random.Random(7).shuffle(rows)
    sql: list[str] = []
    event.listen(
        engine.sync_engine, "before_cursor_execute", lambda *a: sql.append(a[2])
    )
    async with sessions.begin() as session:
        ids = await insert_products(session, rows)
    inserts = [s for s in sql if s.startswith("INSERT")]
    assert len(inserts) == 2
    # Sorting needs the sentinel back: without sort_by_parameter_order=True
    # the database would return only the ids, in an order it does not promise.
    assert all(
        re.search(r"RETURNING (products\.)?id, (products\.)?sku$", s) for s in inserts
    )
    sku_of = dict(await rows_of(sessions, Product.id, Product.sku))
    assert [sku_of[i] for i in ids] == [row.sku for row in rows]


async def test_add_all_sends_one_insert_per_row_on_sqlite(sqlite_url: str):
    engine = await ready_engine(sqlite_url)
    with statements_sent(engine) as sent:
        async with async_sessionmaker(engine).begin() as session:
            await add_moves(session, moves(200))
    assert sent["INSERT"] == 200
    await engine.dispose()


async def test_add_all_batches_on_sqlite_when_the_model_has_a_sentinel(
    sqlite_url: str,
):
    """Product.sku is an insert sentinel; Move has none (see the page output)."""
    engine = await ready_engine(sqlite_url)
    with statements_sent(engine) as sent:
        async with async_sessionmaker(engine).begin() as session:
            session.add_all([Product(**row.model_dump()) for row in products(200)])
    assert sent["INSERT"] == 1
    await engine.dispose()


# --- bulk update ---------------------------------------------------------------


async def test_naive_update_silently_skips_missing_ids_and_keeps_versions(
    sessions: Sessions,
):
    await seed(sessions, 2)
    async with sessions.begin() as session:
        await update_stock_naive(session, [1, 2, 999], stock=50)  # no error
    assert await rows_of(sessions, Product.id, Product.stock, Product.version) == [
        (1, 50, 1),
        (2, 50, 1),
    ]


async def test_update_reports_missing_ids_and_changes_nothing(sessions: Sessions):
    await seed(sessions, 3)
    with pytest.raises(ProductsNotFound) as caught:
        async with sessions.begin() as session:
            await update_products(session, [3, 998, 1, 999], ProductChanges(stock=7))
    assert caught.value.ids == [998, 999]
    assert str(caught.value) == "no live products with ids [998, 999]"
    assert await rows_of(sessions, Product.stock, Product.version) == [
        (0, 1),
        (1, 1),
        (2, 1),
    ]


async def test_update_treats_deleted_products_as_missing(sessions: Sessions):
    await seed(sessions, 2)
    await soft_delete(sessions, 2)
    with pytest.raises(ProductsNotFound) as caught:
        async with sessions.begin() as session:
            await update_products(session, [1, 2], ProductChanges(name="New"))
    assert caught.value.ids == [2]
    assert await rows_of(sessions, Product.id, Product.name) == [
        (1, "Product 0"),
        (2, "Product 1"),
    ]


async def test_update_applies_changes_and_bumps_each_version_once(
    sessions: Sessions,
):
    await seed(sessions, 3)
    async with sessions.begin() as session:
        await update_products(session, [1, 1, 2, 2], ProductChanges(stock=9))
    assert await rows_of(sessions, Product.id, Product.stock, Product.version) == [
        (1, 9, 2),
        (2, 9, 2),
        (3, 2, 1),
    ]


async def test_update_sends_one_statement_per_chunk_of_ids(
    engine: AsyncEngine, sessions: Sessions, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(bulk, "IDS_PER_STATEMENT", 10)  # 25 ids: 3 chunks
    await seed(sessions, 3)
    with statements_sent(engine) as sent, pytest.raises(ProductsNotFound) as caught:
        async with sessions.begin() as session:
            await update_products(session, range(1, 26), ProductChanges(stock=1))
    # PostgreSQL takes the whole list as one array parameter: = ANY(:ids).
    assert sent["UPDATE"] == {"sqlite": 3, "postgresql": 1}[engine.dialect.name]
    assert caught.value.ids == list(range(4, 26))


async def test_postgres_update_goes_past_the_parameter_limit_in_one_statement(
    postgres_url: str,
):
    """The limit is asyncpg's; = ANY(:ids) sends 32,768 ids as one parameter."""
    engine = await ready_engine(postgres_url)
    sessions = async_sessionmaker(engine)
    await seed(sessions, 3)
    sql: list[str] = []
    event.listen(
        engine.sync_engine, "before_cursor_execute", lambda *a: sql.append(a[2])
    )
    with pytest.raises(ProductsNotFound) as caught:
        async with sessions.begin() as session:
            await update_products(session, range(1, 32_769), ProductChanges(stock=1))
    assert caught.value.ids == list(range(4, 32_769))
    updates = [s for s in sql if s.startswith("UPDATE")]
    assert len(updates) == 1
    assert re.search(r"products\.id = ANY \(\$\d::INTEGER\[\]\)", updates[0])
    assert await rows_of(sessions, Product.stock, Product.version) == [
        (0, 1),
        (1, 1),
        (2, 1),
    ]
    await engine.dispose()


async def test_concurrent_bulk_updates_bump_every_version_once_each(
    sessions: Sessions,
):
    await seed(sessions, 20)
    ids = list(range(1, 21))

    async def update_all(stock: int) -> None:
        async with sessions.begin() as session:
            await update_products(session, ids, ProductChanges(stock=stock))

    await asyncio.gather(*(update_all(n) for n in range(5)))
    assert await rows_of(sessions, Product.version) == [(6,)] * 20


# --8<-- [start:parameter_limit]
async def test_postgres_refuses_an_in_list_over_32767_ids(postgres_url: str):
    engine = await ready_engine(postgres_url)
    sessions = async_sessionmaker(engine)
    with pytest.raises(DBAPIError, match="cannot exceed 32767"):
        async with sessions.begin() as session:
            await update_stock_naive(session, range(1, 32_769), stock=0)
    await engine.dispose()


# --8<-- [end:parameter_limit]


async def test_update_where_returns_the_live_matching_ids_and_bumps_versions(
    sessions: Sessions,
):
    await seed(sessions, 12)  # stock is id - 1 modulo 10
    await soft_delete(sessions, 11)
    async with sessions.begin() as session:
        ids = await update_products_where(
            session, Product.stock < 1, ProductChanges(stock=5)
        )
    assert ids == [1]  # id 11 also has stock 0, but it is deleted
    rows = await rows_of(sessions, Product.id, Product.stock, Product.version)
    assert rows[0] == (1, 5, 2)
    assert rows[10] == (11, 0, 1)


async def test_set_stock_sets_each_value_and_bumps_versions(sessions: Sessions):
    await seed(sessions, 3)
    async with sessions.begin() as session:
        await set_stock(session, {1: 10, 3: 30})
    assert await rows_of(sessions, Product.id, Product.stock, Product.version) == [
        (1, 10, 2),
        (2, 1, 1),
        (3, 30, 2),
    ]


async def test_set_stock_reports_missing_ids_and_changes_nothing(
    sessions: Sessions,
):
    await seed(sessions, 2)
    await soft_delete(sessions, 2)
    with pytest.raises(ProductsNotFound) as caught:
        async with sessions.begin() as session:
            await set_stock(session, {1: 10, 2: 20, 77: 70})
    assert caught.value.ids == [2, 77]
    assert await rows_of(sessions, Product.id, Product.stock, Product.version) == [
        (1, 0, 1),
        (2, 1, 1),
    ]


# --8<-- [start:stale_sqlite]
async def test_sqlite_orm_bulk_update_raises_for_a_missing_id(sqlite_url: str):
    engine = await ready_engine(sqlite_url)
    sessions = async_sessionmaker(engine)
    await seed(sessions, 1)
    async with sessions() as session:
        rows = [{"id": 1, "stock": 5}, {"id": 999, "stock": 7}]
        with pytest.raises(StaleDataError, match="expected to update 2 row"):
            await session.execute(update(Product), rows)
    await engine.dispose()


# --8<-- [end:stale_sqlite]


# --8<-- [start:stale_postgres]
async def test_postgres_orm_bulk_update_skips_a_missing_id(postgres_url: str):
    engine = await ready_engine(postgres_url)
    sessions = async_sessionmaker(engine)
    await seed(sessions, 1)
    async with sessions.begin() as session:
        rows = [{"id": 1, "stock": 5}, {"id": 999, "stock": 7}]
        await session.execute(update(Product), rows)  # no error
    assert await rows_of(sessions, Product.id, Product.stock) == [(1, 5)]
    await engine.dispose()


# --8<-- [end:stale_postgres]


async def test_bulk_statements_run_no_mapper_events(sessions: Sessions):
    calls: list[str] = []

    def record(*_: object) -> None:
        calls.append("event")

    event.listen(Product, "before_insert", record)
    event.listen(Product, "before_update", record)
    try:
        await seed(sessions, 2)
        async with sessions.begin() as session:
            await update_products(session, [1, 2], ProductChanges(stock=3))
            await update_products_where(
                session, Product.id > 0, ProductChanges(name="n")
            )
    finally:
        event.remove(Product, "before_insert", record)
        event.remove(Product, "before_update", record)
    assert calls == []
    assert await rows_of(sessions, Product.version) == [(3,), (3,)]


@pytest.mark.parametrize(
    "payload",
    [{}, {"name": None}, {"stock": None}, {"version": 5}, {"stock": -1}, {"name": ""}],
    ids=str,
)
def test_product_changes_rejects_empty_null_unknown_and_invalid(payload: dict):
    with pytest.raises(ValidationError):
        ProductChanges.model_validate(payload)


async def test_update_keeps_loaded_objects_in_sync(sessions: Sessions):
    await seed(sessions, 1)
    async with sessions() as session:
        product = await session.get_one(Product, 1)
        await update_products(session, [1], ProductChanges(stock=4))
        assert (product.stock, product.version) == (4, 2)  # evaluated, no I/O


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")
async def test_sql_function_value_expires_the_loaded_attribute(sessions: Sessions):
    await seed(sessions, 1)
    async with sessions() as session:
        product = await session.get_one(Product, 1)
        await session.execute(
            update(Product).where(Product.id == 1).values(name=func.upper(Product.name))
        )
        with pytest.raises(SQLAlchemyError, match="greenlet_spawn has not been"):
            _ = product.name
        await session.refresh(product)
        assert product.name == "PRODUCT 0"


# --- bulk upsert ---------------------------------------------------------------


async def versions_by_sku(sessions: Sessions) -> dict[str, int]:
    return dict(await rows_of(sessions, Product.sku, Product.version))


async def test_upsert_inserts_new_and_updates_live_skus(sessions: Sessions):
    await seed(sessions, 2)  # P-00000 (id 1), P-00001 (id 2)
    feed = [
        ProductIn(sku="NEW-1", name="New", stock=3),
        ProductIn(sku="P-00001", name="Renamed", stock=8),
    ]
    async with sessions.begin() as session:
        result = await upsert_products(session, feed)
    assert result == Upserted(inserted=["NEW-1"], updated=["P-00001"], unchanged=[])
    assert await rows_of(
        sessions, Product.id, Product.sku, Product.name, Product.stock, Product.version
    ) == [
        (1, "P-00000", "Product 0", 0, 1),
        (2, "P-00001", "Renamed", 8, 2),
        (3, "NEW-1", "New", 3, 1),
    ]


async def test_naive_upsert_bumps_the_version_of_unchanged_rows(sessions: Sessions):
    await seed(sessions, 3)
    async with sessions.begin() as session:
        await upsert_products_naive(session, products(3))  # the same values
    assert set((await versions_by_sku(sessions)).values()) == {2}


async def test_upsert_leaves_unchanged_rows_and_their_versions_alone(
    engine: AsyncEngine, sessions: Sessions
):
    await seed(sessions, 3)
    feed = [*products(2), ProductIn(sku="P-00002", name="Changed", stock=2)]
    async with sessions.begin() as session:
        result = await upsert_products(session, feed)
    assert result == Upserted([], updated=["P-00002"], unchanged=["P-00000", "P-00001"])
    assert await versions_by_sku(sessions) == {"P-00000": 1, "P-00001": 1, "P-00002": 2}


async def test_upsert_tells_inserted_from_updated_by_the_returned_version(
    sessions: Sessions,
):
    """Also for a row whose version is already high, and in any input order."""
    await seed(sessions, 2)
    for stock in (5, 6, 7):  # P-00001 reaches version 4
        async with sessions.begin() as session:
            await upsert_products(
                session, [ProductIn(sku="P-00001", name="x", stock=stock)]
            )
    feed = [
        ProductIn(sku="Z-NEW", name="z"),
        ProductIn(sku="P-00001", name="y"),
        ProductIn(sku="A-NEW", name="a"),
        ProductIn(sku="P-00000", name="Product 0", stock=0),  # unchanged
    ]
    async with sessions.begin() as session:
        result = await upsert_products(session, feed)
    assert result == Upserted(["Z-NEW", "A-NEW"], ["P-00001"], ["P-00000"])
    assert (await versions_by_sku(sessions))["P-00001"] == 5


async def test_postgres_xmax_tells_inserted_from_updated(postgres_url: str):
    engine = await ready_engine(postgres_url)
    sessions = create_session_factory(engine)
    await seed(sessions, 1)
    feed = [ProductIn(sku="P-00000", name="changed"), ProductIn(sku="NEW", name="n")]
    async with sessions.begin() as session:
        assert await upsert_products_inserted(session, feed) == {
            "P-00000": False,
            "NEW": True,
        }
    await engine.dispose()


async def test_naive_inequality_misses_a_change_from_null(sessions: Sessions):
    """`!=` is NULL, not true, when one side is NULL: the change is dropped."""
    async with sessions.begin() as session:
        session.add(Brand(code="ACME"))
    await seed(sessions, 1)  # brand NULL
    async with sessions.begin() as session:
        stmt = dialect_insert(session)
        naive = stmt.on_conflict_do_update(
            index_elements=[Product.sku],
            index_where=Product.deleted_at.is_(None),
            set_={"brand": stmt.excluded.brand},
            where=Product.brand != stmt.excluded.brand,
        )
        await session.execute(naive, [{"sku": "P-00000", "name": "x", "brand": "ACME"}])
    assert await rows_of(sessions, Product.brand) == [(None,)]


async def test_upsert_applies_changes_from_and_to_null(sessions: Sessions):
    async with sessions.begin() as session:
        session.add(Brand(code="ACME"))
    await seed(sessions, 1)
    for brand, version in (("ACME", 2), ("ACME", 2), (None, 3), (None, 3)):
        row = ProductIn(sku="P-00000", name="Product 0", brand=brand)
        async with sessions.begin() as session:
            await upsert_products(session, [row])
        assert await rows_of(sessions, Product.brand, Product.version) == [
            (brand, version)
        ]


async def test_upsert_leaves_a_deleted_product_with_the_same_sku_alone(
    sessions: Sessions,
):
    await seed(sessions, 1)
    await soft_delete(sessions, 1)
    async with sessions.begin() as session:
        result = await upsert_products(
            session, [ProductIn(sku="P-00000", name="Again")]
        )
    assert result.inserted == ["P-00000"]
    rows = await rows_of(sessions, Product.id, Product.name, Product.version)
    assert rows == [(1, "Product 0", 1), (2, "Again", 1)]


async def test_upsert_without_index_where_is_refused(
    engine: AsyncEngine, sessions: Sessions
):
    async with sessions() as session:
        stmt = dialect_insert(session)
        naive = stmt.on_conflict_do_update(
            index_elements=[Product.sku], set_={"name": stmt.excluded.name}
        )
        with pytest.raises(DBAPIError, match="ON CONFLICT"):
            await session.execute(naive, [{"sku": "A", "name": "a"}])


async def test_upsert_refuses_a_sku_given_twice_and_writes_nothing(
    sessions: Sessions,
):
    feed = [ProductIn(sku=sku, name="x") for sku in ("A", "B", "A", "C", "B")]
    with pytest.raises(DuplicateSkus) as caught:
        async with sessions.begin() as session:
            await upsert_products(session, feed)
    assert caught.value.skus == ["A", "B"]
    assert await total(sessions, Product) == 0


REPEATED = [
    {"sku": "A", "name": "first", "brand": None, "stock": 0},
    {"sku": "A", "name": "second", "brand": None, "stock": 0},
]


async def test_postgres_refuses_an_upsert_that_touches_a_row_twice(
    postgres_url: str,
):
    """Why upsert_products checks for repeated SKUs before sending anything."""
    engine = await ready_engine(postgres_url)
    async with create_session_factory(engine)() as session:
        upsert = upsert_statement(session).returning(Product.sku)
        conn = await session.connection()
        with pytest.raises(DBAPIError, match="cannot affect row a second time"):
            await conn.execute(upsert, REPEATED)  # one statement, two rows
    await engine.dispose()


async def test_sqlite_applies_both_rows_of_a_repeated_sku_silently(sqlite_url: str):
    """The other half of the reason: on SQLite the last row wins, unannounced."""
    engine = await ready_engine(sqlite_url)
    sessions = create_session_factory(engine)
    with statements_sent(engine) as sent:
        async with sessions.begin() as session:
            upsert = upsert_statement(session).returning(Product.sku)
            conn = await session.connection()
            await conn.execute(upsert, REPEATED)  # no error
    assert sent["INSERT"] == 1  # one statement, as on PostgreSQL
    assert await rows_of(sessions, Product.sku, Product.name, Product.version) == [
        ("A", "second", 2)
    ]
    await engine.dispose()


async def test_conflicting_rows_use_up_ids_on_postgres_only(
    engine: AsyncEngine, sessions: Sessions
):
    await seed(sessions, 3)
    feed = [
        *products(2),
        ProductIn(sku="P-00002", name="changed"),
        ProductIn(sku="NEW", name="New"),
    ]
    async with sessions.begin() as session:
        await upsert_products(session, feed)
    gap = {"sqlite": 0, "postgresql": 3}[engine.dialect.name]
    assert await rows_of(sessions, Product.id, Product.sku) == [
        (1, "P-00000"),
        (2, "P-00001"),
        (3, "P-00002"),
        (4 + gap, "NEW"),
    ]


async def test_concurrent_upserts_of_the_same_skus_keep_one_row_each(
    sessions: Sessions,
):
    feed = products(20)

    async def upsert_all() -> Upserted:
        async with sessions.begin() as session:
            return await upsert_products(session, feed)

    results = await asyncio.gather(*(upsert_all() for _ in range(5)))
    skus = [row.sku for row in feed]
    assert sorted(len(r.inserted) for r in results) == [0, 0, 0, 0, 20]
    assert all(r.unchanged == skus for r in results if not r.inserted)
    rows = await rows_of(sessions, Product.sku, Product.version)
    assert rows == [(sku, 1) for sku in skus]


# --- import ----------------------------------------------------------------------


async def test_import_keeps_the_good_rows_and_reports_each_bad_one(
    sessions: Sessions,
):
    await seed(sessions, 1)  # P-00000
    feed = [
        {"sku": "A", "name": "good"},
        {"sku": "B", "name": "bad", "stock": -1},
        {"sku": "P-00000", "name": "taken"},
        {"sku": "A", "name": "repeated"},
        {"sku": "C", "name": "good", "stock": 3},
    ]
    async with sessions.begin() as session:
        errors = await import_products(session, feed)
    assert errors == [
        RowError(2, "stock: Input should be greater than or equal to 0"),
        RowError(3, "P-00000 already exists"),
        RowError(4, "A repeats row 1"),
    ]
    assert await rows_of(sessions, Product.sku, Product.name, Product.stock) == [
        ("A", "good", 0),
        ("C", "good", 3),
        ("P-00000", "Product 0", 0),
    ]


def feed_with_one_conflict(n: int) -> list[dict]:
    """n rows, the one in the middle repeating the SKU the test seeded."""
    feed = [row.model_dump() for row in products(n, start=100_000)]
    feed[n // 2] = {"sku": "P-00000", "name": "taken"}
    return feed


async def test_naive_import_sends_a_savepoint_per_row_after_one_conflict(
    engine: AsyncEngine, sessions: Sessions
):
    await seed(sessions, 1)
    with statements_sent(engine) as sent:
        async with sessions.begin() as session:
            errors = await import_products_naive(session, feed_with_one_conflict(1_000))
    assert errors == [RowError(501, "P-00000 already exists")]
    assert (sent["INSERT"], sent["SAVEPOINT"]) == (1 + 1_000, 1 + 1_000)


async def test_import_with_one_conflict_in_20000_rows_sends_one_insert_per_chunk(
    engine: AsyncEngine, sessions: Sessions
):
    await seed(sessions, 1)
    with statements_sent(engine) as sent:
        async with sessions.begin() as session:
            errors = await import_products(session, feed_with_one_conflict(20_000))
    assert errors == [RowError(10_001, "P-00000 already exists")]
    assert sent["INSERT"] == 20_000 // bulk.ROWS_PER_INSERT
    assert (sent["SAVEPOINT"], sent["RELEASE"], sent["ROLLBACK"]) == (1, 1, 0)
    assert await total(sessions, Product) == 1 + 19_999


async def test_naive_import_calls_every_integrity_error_a_duplicate(
    sessions: Sessions,
):
    feed = [{"sku": "A", "name": "a", "brand": "NOPE"}]
    async with sessions.begin() as session:
        errors = await import_products_naive(session, feed)
    assert errors == [RowError(1, "A already exists")]  # it does not


async def test_import_reports_a_missing_brand_and_keeps_the_good_rows(
    engine: AsyncEngine, sessions: Sessions
):
    await seed(sessions, 1)
    async with sessions.begin() as session:
        session.add(Brand(code="ACME"))
    feed = [
        {"sku": "A", "name": "a", "brand": "ACME"},
        {"sku": "B", "name": "b", "brand": "NOPE"},
        {"sku": "P-00000", "name": "taken"},
        {"sku": "C", "name": "c"},
    ]
    with statements_sent(engine) as sent:
        async with sessions.begin() as session:
            errors = await import_products(session, feed)
    assert errors == [
        RowError(2, "brand NOPE does not exist"),
        RowError(3, "P-00000 already exists"),
    ]
    assert sent["SAVEPOINT"] == 1 + 4  # the failed chunk's, then one per row
    assert await rows_of(sessions, Product.sku, Product.brand) == [
        ("A", "ACME"),
        ("C", None),
        ("P-00000", None),
    ]


async def test_concurrent_imports_store_each_sku_once(sessions: Sessions):
    feeds = [
        [row.model_dump() for row in products(30, start=start)] for start in (0, 10, 20)
    ]

    async def run_import(feed: list[dict]) -> list[RowError]:
        async with sessions.begin() as session:
            return await import_products(session, feed)

    reports = await asyncio.gather(*(run_import(feed) for feed in feeds))
    skus = [sku for (sku,) in await rows_of(sessions, Product.sku)]
    assert skus == [f"P-{n:05}" for n in range(50)]
    assert sum(len(errors) for errors in reports) == 90 - 50


async def test_a_clean_import_sends_one_insert(engine: AsyncEngine, sessions: Sessions):
    feed = [row.model_dump() for row in products(200)]
    with statements_sent(engine) as sent:
        async with sessions.begin() as session:
            assert await import_products(session, feed) == []
    assert (sent["INSERT"], sent["SAVEPOINT"]) == (1, 1)
    assert await total(sessions, Product) == 200


async def test_import_reports_hostile_rows_and_stores_none_of_them(
    sessions: Sessions,
):
    feed: list[object] = [
        None,
        42,
        ["A", "name"],
        {"sku": "\ud800", "name": "lone surrogate"},
        {"sku": "A" * 41, "name": "too long"},
        {"sku": "a; DROP TABLE products", "name": "x"},
        {"sku": "A", "name": "x", "stock": 2**31},
        {"sku": "A", "name": "x", "stock": float("nan")},
        {"sku": "A", "name": "x", "stock": "1e400"},
        {"sku": "A", "name": "x" * 201},
        {"sku": "A", "name": "x", "id": 1},
        {"sku": "A", "name": {"nested": "dict"}},
        {"sku": "A", "name": "x", "brand": ""},
    ]
    async with sessions.begin() as session:
        errors = await import_products(session, feed)
    assert [error.row for error in errors] == list(range(1, len(feed) + 1))
    assert await total(sessions, Product) == 0


async def test_a_dry_run_import_keeps_nothing(sessions: Sessions):
    """A savepoint released inside a rolled-back transaction is rolled back
    too: on SQLite thanks to the foundation's BEGIN (see the Sessions page)."""
    async with sessions() as session:
        errors = await import_products(session, [r.model_dump() for r in products(5)])
        await session.rollback()
    assert errors == []
    assert await total(sessions, Product) == 0


# --- chunks and transactions ---------------------------------------------------


def test_chunked_yields_lists_of_at_most_size_from_a_generator():
    assert list(chunked((n for n in range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunked(range(6), 3)) == [[0, 1, 2], [3, 4, 5]]
    assert list(chunked([], 3)) == []


def conflicting_feed() -> list[ProductIn]:
    """25 new rows, then one whose SKU the test seeded already."""
    return [*products(25, start=100), ProductIn(sku="P-00000", name="taken")]


async def test_commit_per_chunk_keeps_the_chunks_before_a_failure(
    sessions: Sessions,
):
    await seed(sessions, 1)
    with pytest.raises(IntegrityError):
        await insert_commit_per_chunk(sessions, conflicting_feed(), size=10)
    assert await total(sessions, Product) == 1 + 20


async def test_one_transaction_keeps_nothing_when_a_chunk_fails(
    engine: AsyncEngine, sessions: Sessions
):
    await seed(sessions, 1)
    with statements_sent(engine) as sent, pytest.raises(IntegrityError):
        async with sessions.begin() as session:
            await insert_in_chunks(session, iter(conflicting_feed()), size=10)
    assert sent["INSERT"] == 3
    assert await total(sessions, Product) == 1

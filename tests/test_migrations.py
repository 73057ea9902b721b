"""The Migrations page: each naive schema change fails, each fix holds."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine

from snippets.migrations import (
    add_name_index_naive,
    add_sku,
    add_sku_naive,
    check_names,
    create_engine,
    create_products,
    create_unnamed,
    drop_named_check,
    drop_unnamed_check,
    migrate,
    migrate_outside_transaction,
    run_migrations_online_naive,
)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def products(engine: AsyncEngine) -> AsyncEngine:
    """The products table with one row, as a live database has."""
    await migrate(engine, create_products)
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO products (name, price) VALUES ('mug', 3)"))
    return engine


def table_names(conn: Connection) -> list[str]:
    return inspect(conn).get_table_names()


def index_names(conn: Connection) -> list[str]:
    return [str(i["name"]) for i in inspect(conn).get_indexes("products")]


def sku_nullable(conn: Connection) -> bool:
    columns = inspect(conn).get_columns("products")
    return bool(next(c for c in columns if c["name"] == "sku")["nullable"])


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")
async def test_naive_env_py_inside_the_running_loop_fails(database_url: str):
    with pytest.raises(RuntimeError, match="cannot be called from a running event"):
        run_migrations_online_naive(database_url)


async def test_run_sync_migrates_inside_the_running_loop(engine: AsyncEngine):
    await migrate(engine, create_products)
    async with engine.connect() as conn:
        assert await conn.run_sync(table_names) == ["products"]


async def test_naive_unnamed_check_cannot_be_dropped(engine: AsyncEngine):
    await migrate(engine, create_unnamed)
    async with engine.connect() as conn:
        names = await conn.run_sync(check_names, "legacy")
    # The database picks the name, or none: no revision can rely on it.
    expected = [None] if engine.dialect.name == "sqlite" else ["legacy_price_check"]
    assert names == expected
    with pytest.raises(InvalidRequestError, match="explicitly named"):
        await migrate(engine, drop_unnamed_check)
    async with engine.connect() as conn:
        assert await conn.run_sync(check_names, "legacy") == expected


async def test_a_named_check_drops_on_both_databases(engine: AsyncEngine):
    await migrate(engine, create_products)
    async with engine.connect() as conn:
        names = await conn.run_sync(check_names, "products")
        assert names == ["ck_products_price_positive"]
    await migrate(engine, drop_named_check)
    async with engine.connect() as conn:
        assert await conn.run_sync(check_names, "products") == []


async def test_naive_not_null_column_on_a_table_with_rows_fails(
    products: AsyncEngine,
):
    message = {
        "sqlite": "Cannot add a NOT NULL column with default value NULL",
        "postgresql": 'column "sku" of relation "products" contains null values',
    }[products.dialect.name]
    with pytest.raises(DBAPIError, match=message):
        await migrate(products, add_sku_naive)
    async with products.connect() as conn:  # rolled back: nothing half-done
        names = await conn.run_sync(
            lambda c: [col["name"] for col in inspect(c).get_columns("products")]
        )
    assert "sku" not in names


async def test_not_null_column_with_a_backfill_holds(products: AsyncEngine):
    await migrate(products, add_sku)
    async with products.connect() as conn:
        rows = await conn.execute(text("SELECT name, sku FROM products"))
        assert rows.all() == [("mug", "P-1")]
        assert await conn.run_sync(sku_nullable) is False
    with pytest.raises(IntegrityError):
        async with products.begin() as conn:
            await conn.execute(
                text("INSERT INTO products (name, price) VALUES ('cup', 1)")
            )


async def test_naive_create_index_concurrently_in_a_transaction_fails(
    postgres_url: str,
):
    """PostgreSQL only: SQLite has no CONCURRENTLY (it ignores the option)."""
    engine = create_engine(postgres_url)
    await migrate(engine, create_products)
    with pytest.raises(
        DBAPIError,
        match="CREATE INDEX CONCURRENTLY cannot run inside a transaction block",
    ):
        await migrate(engine, add_name_index_naive)
    async with engine.connect() as conn:
        assert await conn.run_sync(index_names) == []
    await engine.dispose()


async def test_create_index_concurrently_outside_a_transaction_holds(
    products: AsyncEngine,
):
    await migrate_outside_transaction(products, add_name_index_naive)
    async with products.connect() as conn:
        assert await conn.run_sync(index_names) == ["ix_products_name"]
        if products.dialect.name == "postgresql":  # built, and valid
            valid = await conn.scalar(
                text(
                    "SELECT indisvalid FROM pg_index"
                    " WHERE indexrelid = 'ix_products_name'::regclass"
                )
            )
            assert valid is True

"""Migrations: Alembic with an async engine, schema changes made safely.

Run it: python -m snippets.migrations
"""

# --8<-- [start:imports]
import asyncio
import gc
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    event,
    inspect,
    text,
)
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry

# --8<-- [end:imports]


# --8<-- [start:engine]
def create_engine(url: str, **options: Any) -> AsyncEngine:
    engine = create_async_engine(url, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", set_sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", begin_sqlite_transaction)
    return engine


def set_sqlite_pragmas(conn: DBAPIConnection, _: ConnectionPoolEntry) -> None:
    # The driver would send BEGIN late, or not at all: SQLAlchemy sends it.
    conn.isolation_level = None
    cursor = conn.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")  # off by default, per connection
    cursor.execute(
        "PRAGMA journal_mode = WAL"
    )  # readers never wait for writers
    cursor.close()


def begin_sqlite_transaction(conn: Connection) -> None:
    # IMMEDIATE takes the write lock at BEGIN: a transaction that reads and
    # then writes waits its turn instead of failing with "database is locked".
    mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    if mode is not None:  # None: no BEGIN, each statement commits on its own
        conn.exec_driver_sql(f"BEGIN {mode}")


# --8<-- [end:engine]


# --8<-- [start:models]
# Constraint names the error classifier and Alembic can rely on.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (CheckConstraint("price >= 0", name="price_positive"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    price: Mapped[int]


# --8<-- [end:models]


# --8<-- [start:run_revision]
Revision = Callable[[Operations], None]


def run_revision(conn: Connection, revision: Revision) -> None:
    """Run one revision's upgrade on a sync connection, as env.py does."""
    context = MigrationContext.configure(
        conn,
        opts={"target_metadata": Base.metadata, "render_as_batch": True},
    )
    revision(Operations(context))


def create_products(op: Operations) -> None:
    op.create_table(
        "products",
        Column("id", Integer, primary_key=True),
        Column("name", String(100), nullable=False),
        Column("price", Integer, nullable=False),
        CheckConstraint("price >= 0", name="price_positive"),
    )


async def migrate(engine: AsyncEngine, revision: Revision) -> None:
    # Alembic is synchronous: run_sync hands it the async connection's
    # sync face, inside the loop that is already running.
    async with engine.begin() as conn:  # one transaction: all or nothing
        await conn.run_sync(run_revision, revision)


# --8<-- [end:run_revision]


# --8<-- [start:naive_env]
async def run_async_migrations_from_url(url: str) -> None:
    engine = create_engine(url)
    await migrate(engine, create_products)
    await engine.dispose()


def run_migrations_online_naive(url: str) -> None:
    # The async template's env.py, as generated: fine from the command line,
    # where no loop runs yet; called from a running app, it cannot start one.
    return asyncio.run(run_async_migrations_from_url(url))


# --8<-- [end:naive_env]


# --8<-- [start:demo_env]
async def demo_env(url: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            run_migrations_online_naive(url)  # from inside the running loop
        except RuntimeError as exc:
            print("naive:", exc)
            #> naive: asyncio.run() cannot be called from a running event loop
        gc.collect()  # the coroutine it was handed dies here, unawaited
    for warning in caught:  # shown here, not on stderr far from its cause
        print("  warns:", warning.message)
        #>   warns: coroutine 'run_async_migrations_from_url' was never awaited
    engine = create_engine(url)
    await migrate(engine, create_products)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: inspect(c).get_table_names())
    print("fixed:", names)
    #> fixed: ['products']
    await engine.dispose()


# --8<-- [end:demo_env]


# --8<-- [start:naming]
def check_names(conn: Connection, table: str) -> list[str | None]:
    return [c["name"] for c in inspect(conn).get_check_constraints(table)]


def create_unnamed(op: Operations) -> None:
    # A MetaData without a convention: the CHECK gets no name from us.
    Table(
        "legacy",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("price", Integer, CheckConstraint("price >= 0")),
    ).create(op.get_bind())


def drop_unnamed_check(op: Operations) -> None:
    with op.batch_alter_table("legacy") as batch:
        batch.drop_constraint(None, type_="check")  # type: ignore[arg-type]


def drop_named_check(op: Operations) -> None:
    with op.batch_alter_table("products") as batch:
        batch.drop_constraint(op.f("ck_products_price_positive"), type_="check")


# --8<-- [end:naming]


# --8<-- [start:not_null_naive]
def add_sku_naive(op: Operations) -> None:
    op.add_column("products", Column("sku", String(20), nullable=False))


# --8<-- [end:not_null_naive]


# --8<-- [start:not_null]
def add_sku(op: Operations) -> None:
    # 1. nullable first: existing rows get NULL, no table rewrite.
    op.add_column("products", Column("sku", String(20), nullable=True))
    # 2. backfill every existing row.
    op.execute(text("UPDATE products SET sku = 'P-' || id WHERE sku IS NULL"))
    # 3. now NOT NULL holds: SQLite needs batch mode (a copy of the table),
    #    PostgreSQL gets ALTER COLUMN ... SET NOT NULL.
    with op.batch_alter_table("products") as batch:
        batch.alter_column("sku", existing_type=String(20), nullable=False)


# --8<-- [end:not_null]


# --8<-- [start:index_naive]
def add_name_index_naive(op: Operations) -> None:
    op.create_index(
        "ix_products_name", "products", ["name"], postgresql_concurrently=True
    )


def drop_name_index(op: Operations) -> None:
    op.drop_index("ix_products_name", if_exists=True)


# --8<-- [end:index_naive]


# --8<-- [start:index]
async def migrate_outside_transaction(
    engine: AsyncEngine, revision: Revision
) -> None:
    # CONCURRENTLY builds the index without blocking writes, but never
    # inside a transaction block: run this revision on an AUTOCOMMIT
    # connection (in a revision file: op.get_context().autocommit_block()).
    if engine.dialect.name != "postgresql":
        # SQLite has no CONCURRENTLY; and under AUTOCOMMIT the foundation's
        # BEGIN would never be committed. An ordinary transaction it is.
        return await migrate(engine, revision)
    async with engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.run_sync(run_revision, revision)


# --8<-- [end:index]


# --8<-- [start:demo_naming]
def first_line(exc: DBAPIError) -> str:
    return str(exc.orig).splitlines()[0]


async def demo_naming(engine: AsyncEngine) -> None:
    await migrate(engine, create_unnamed)
    async with engine.connect() as conn:
        print("unnamed:", await conn.run_sync(check_names, "legacy"))
        #> unnamed: [None]
        print("named:", await conn.run_sync(check_names, "products"))
        #> named: ['ck_products_price_positive']
    try:
        await migrate(engine, drop_unnamed_check)
    except InvalidRequestError as exc:
        head, _, tail = str(exc).partition(" requires ")
        print("naive:", head)
        #> naive: Naming convention including %(constraint_name)s token
        print("  requires", tail)
        #>   requires that constraint is explicitly named.
    await migrate(engine, drop_named_check)
    async with engine.connect() as conn:
        print("dropped:", await conn.run_sync(check_names, "products"))
        #> dropped: []


# --8<-- [end:demo_naming]


# --8<-- [start:demo_not_null]
async def demo_not_null(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO products (name, price) VALUES ('mug', 3)")
        )
    try:
        await migrate(engine, add_sku_naive)
    except DBAPIError as exc:
        print("naive:", first_line(exc))
        #> naive: Cannot add a NOT NULL column with default value NULL
    await migrate(engine, add_sku)
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT name, sku FROM products"))
        print("fixed:", rows.all())
        #> fixed: [('mug', 'P-1')]


# --8<-- [end:demo_not_null]


# --8<-- [start:demo_index]
async def demo_index(engine: AsyncEngine) -> None:
    try:
        await migrate(engine, add_name_index_naive)
        print("naive: created (SQLite ignores CONCURRENTLY)")
        #> naive: created (SQLite ignores CONCURRENTLY)
    except DBAPIError as exc:  # PostgreSQL
        print("naive:", first_line(exc))
    await migrate(engine, drop_name_index)
    await migrate_outside_transaction(engine, add_name_index_naive)
    async with engine.connect() as conn:
        indexes = await conn.run_sync(
            lambda c: [i["name"] for i in inspect(c).get_indexes("products")]
        )
    print("indexes:", indexes)
    #> indexes: ['ix_products_name']


# --8<-- [end:demo_index]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'shop.db'}"
        await demo_env(url)
        engine = create_engine(url)
        await demo_naming(engine)
        await demo_not_null(engine)
        await demo_index(engine)
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

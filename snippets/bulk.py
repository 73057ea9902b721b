"""Bulk operations: load, update and upsert many rows, and report the bad ones.

Run it: python -m snippets.bulk
"""

# --8<-- [start:imports]
import asyncio
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple, Protocol, Self, TypedDict, TypeVar, cast

import aiosqlite
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    any_,
    bindparam,
    event,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import DBAPIConnection, DBAPICursor
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.schema import ColumnCollectionConstraint

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


Sessions = async_sessionmaker[AsyncSession]


def create_session_factory(engine: AsyncEngine) -> Sessions:
    # expire_on_commit=False: objects stay readable after a commit instead of
    # reloading on attribute access, which async code cannot do implicitly.
    return async_sessionmaker(engine, expire_on_commit=False)


# --8<-- [end:engine]


# --8<-- [start:base]
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# --8<-- [end:base]


# --8<-- [start:models]
class Brand(Base):
    __tablename__ = "brands"

    code: Mapped[str] = mapped_column(String(20), primary_key=True)


class Move(Base):
    """A stock movement: append-only rows, no natural key."""

    __tablename__ = "moves"

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(40))
    quantity: Mapped[int]


class MoveRow(TypedDict):
    sku: str
    quantity: int


# --8<-- [end:models]


# --8<-- [start:product]
class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The natural key. insert_sentinel: its unique values tell SQLAlchemy
    # which returned id belongs to which input row (see RETURNING below).
    sku: Mapped[str] = mapped_column(String(40), insert_sentinel=True)
    name: Mapped[str] = mapped_column(String(200))
    stock: Mapped[int] = mapped_column(default=0)
    brand: Mapped[str | None] = mapped_column(ForeignKey("brands.code"))
    version: Mapped[int] = mapped_column(default=1)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # A SKU is unique among live products only: a partial unique index.
        Index(
            "uq_products_live_sku",
            "sku",
            unique=True,
            sqlite_where=deleted_at.is_(None),
            postgresql_where=deleted_at.is_(None),
        ),
    )


# --8<-- [end:product]


# --8<-- [start:schemas]
class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=40, pattern=r"^[A-Z0-9-]+$")
    name: str = Field(min_length=1, max_length=200)
    stock: int = Field(default=0, ge=0, le=2**31 - 1)
    brand: str | None = Field(default=None, min_length=1, max_length=20)


class ProductChanges(BaseModel):
    """The fields a bulk update may set; unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    stock: int | None = Field(default=None, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def set_something_not_null(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("no field to change")
        for field in self.model_fields_set:
            if getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        return self

    def values(self) -> dict[str, object]:
        return self.model_dump(exclude_unset=True)


# --8<-- [end:schemas]


# --8<-- [start:helpers]
def driver_message(exc: Exception) -> str:
    """The driver's message: no exception class, no SQL, no doc link."""
    first_line = str(exc).splitlines()[0].split(" (Background on")[0]
    return first_line.split(") ", 1)[-1]


async def count_rows(sessions: Sessions, model: type) -> int:
    async with sessions() as session:
        total = await session.scalar(select(func.count()).select_from(model))
        return int(total or 0)


async def create_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)


def moves(n: int) -> list[MoveRow]:
    return [
        {"sku": f"SKU-{i % 50:03}", "quantity": i % 7 + 1} for i in range(n)
    ]


def products(n: int, start: int = 0) -> list[ProductIn]:
    return [
        ProductIn(sku=f"P-{i:05}", name=f"Product {i}", stock=i % 10)
        for i in range(start, start + n)
    ]


# --8<-- [end:helpers]


# --8<-- [start:count_statements]
@contextmanager
def statements_sent(engine: AsyncEngine) -> Iterator[Counter[str]]:
    """Count the statements SQLAlchemy sends, by verb (INSERT, UPDATE, ...)."""
    sent: Counter[str] = Counter()

    def record(
        conn: Connection, cursor: DBAPICursor, statement: str, *_: object
    ) -> None:
        sent[statement.split(maxsplit=1)[0]] += 1

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


# --8<-- [end:count_statements]


# --8<-- [start:naive_insert]
async def add_moves(session: AsyncSession, rows: Sequence[MoveRow]) -> None:
    session.add_all([Move(**row) for row in rows])
    await session.flush()


# --8<-- [end:naive_insert]


# --8<-- [start:bulk_insert]
async def insert_moves(session: AsyncSession, rows: Sequence[MoveRow]) -> None:
    # --8<-- [start:empty_guard]
    if rows:  # an empty list would send one INSERT of default values
        # --8<-- [end:empty_guard]
        await session.execute(insert(Move), rows)  # ORM bulk INSERT


async def insert_moves_core(
    session: AsyncSession, rows: Sequence[MoveRow]
) -> None:
    if rows:
        conn = await session.connection()
        await conn.execute(insert(Move), rows)  # Core: on the connection


# --8<-- [end:bulk_insert]


# --8<-- [start:naive_empty]
async def insert_moves_unguarded(
    session: AsyncSession, rows: Sequence[MoveRow]
) -> None:
    await session.execute(insert(Move), rows)  # [] is not "nothing"


# --8<-- [end:naive_empty]


# --8<-- [start:demo_empty]
async def demo_empty(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    for load in (insert_moves_unguarded, insert_moves):
        outcome = "nothing stored"
        with statements_sent(engine) as sent:
            try:
                async with sessions.begin() as session:
                    await load(session, [])
            except IntegrityError:  # moves.sku has no default
                outcome = "IntegrityError"
        print(f"{load.__name__}([]): {sent['INSERT']} INSERT, {outcome}")
        #> insert_moves_unguarded([]): 1 INSERT, IntegrityError
        #> insert_moves([]): 0 INSERT, nothing stored


# --8<-- [end:demo_empty]


# --8<-- [start:fast_path]
async def load_moves(session: AsyncSession, rows: Sequence[MoveRow]) -> None:
    """The fastest load: hand the rows to the database driver itself."""
    records = [(row["sku"], row["quantity"]) for row in rows]
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        await copy_moves(conn, records)
    else:
        await executemany_moves(conn, records)


async def executemany_moves(
    conn: AsyncConnection, records: list[tuple[str, int]]
) -> None:
    raw = (await conn.get_raw_connection()).driver_connection
    assert isinstance(raw, aiosqlite.Connection)
    sql = "INSERT INTO moves (sku, quantity) VALUES (?, ?)"
    await raw.executemany(sql, records)


# --8<-- [end:fast_path]


# --8<-- [start:copy]
class CopyConnection(Protocol):
    """The part of asyncpg.Connection used here (asyncpg has no type hints)."""

    async def copy_records_to_table(
        self,
        table_name: str,
        *,
        records: Iterable[tuple[object, ...]],
        columns: Sequence[str],
    ) -> str: ...


async def copy_moves(
    conn: AsyncConnection, records: Iterable[tuple[str, int]]
) -> None:
    # SQLAlchemy's asyncpg adapter sends BEGIN with the first statement it
    # runs. COPY bypasses it: run a statement first, or COPY commits alone.
    # --8<-- [start:copy_begin]
    await conn.exec_driver_sql("SELECT 1")
    # --8<-- [end:copy_begin]
    raw = cast(
        CopyConnection, (await conn.get_raw_connection()).driver_connection
    )
    await raw.copy_records_to_table(
        "moves", records=records, columns=["sku", "quantity"]
    )


# --8<-- [end:copy]


# --8<-- [start:naive_copy]
async def copy_moves_naive(
    conn: AsyncConnection, records: Iterable[tuple[str, int]]
) -> None:
    raw = cast(
        CopyConnection, (await conn.get_raw_connection()).driver_connection
    )
    # The first thing on this connection: COPY runs, and commits, on its own.
    await raw.copy_records_to_table(
        "moves", records=records, columns=["sku", "quantity"]
    )


# --8<-- [end:naive_copy]


# --8<-- [start:demo_insert]
async def demo_insert(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    rows = moves(1_000)
    for load in (add_moves, insert_moves, insert_moves_core, load_moves):
        with statements_sent(engine) as sent:
            async with sessions.begin() as session:
                await load(session, rows)
        print(f"{load.__name__:<17} INSERT statements: {sent['INSERT']}")
        #> add_moves         INSERT statements: 1000
        #> insert_moves      INSERT statements: 1
        #> insert_moves_core INSERT statements: 1
        #> load_moves        INSERT statements: 0
    print("moves stored:", await count_rows(sessions, Move))
    #> moves stored: 4000


# --8<-- [end:demo_insert]


# --8<-- [start:returning]
async def insert_products(
    session: AsyncSession, rows: Sequence[ProductIn]
) -> list[int]:
    """Insert products; return their new ids in the order of `rows`."""
    if not rows:
        return []
    stmt = insert(Product).returning(Product.id, sort_by_parameter_order=True)
    result = await session.execute(stmt, [row.model_dump() for row in rows])
    return list(result.scalars())


# --8<-- [end:returning]


# --8<-- [start:demo_returning]
async def demo_returning(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    rows = products(1_000)[::-1]  # any order: the ids follow it
    with statements_sent(engine) as sent:
        async with sessions.begin() as session:
            ids = await insert_products(session, rows)
    async with sessions() as session:
        result = await session.execute(select(Product.id, Product.sku))
        sku_of = dict(result.all())
    print(
        "ids in input order:", [sku_of[i] for i in ids] == [r.sku for r in rows]
    )
    #> ids in input order: True
    print("INSERT statements for", len(ids), "products:", sent["INSERT"])
    #> INSERT statements for 1000 products: 1

    # The same on Move, which has no sentinel column: one INSERT per row.
    stmt = insert(Move).returning(Move.id, sort_by_parameter_order=True)
    with statements_sent(engine) as sent:
        async with sessions.begin() as session:
            await session.execute(stmt, moves(100))
    print("INSERT statements for 100 moves:", sent["INSERT"])
    #> INSERT statements for 100 moves: 100


# --8<-- [end:demo_returning]


# --8<-- [start:naive_update]
async def update_stock_naive(
    session: AsyncSession, ids: Sequence[int], stock: int
) -> None:
    await session.execute(
        update(Product).where(Product.id.in_(ids)).values(stock=stock)
    )


# --8<-- [end:naive_update]


# --8<-- [start:chunked]
T = TypeVar("T")

# asyncpg refuses a statement with more than 32,767 parameters; an IN list
# spends one parameter per id.
IDS_PER_STATEMENT = 10_000


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of at most `size` items; works on generators too."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def ids_in(session: AsyncSession, ids: list[int]) -> Iterator[Any]:
    """Conditions that together match `ids`, one per statement to send."""
    if session.get_bind().dialect.name == "postgresql":
        # --8<-- [start:any_ids]
        # One array parameter, however many ids: no chunks needed.
        array = bindparam("ids", ids, type_=postgresql.ARRAY(Integer))
        yield Product.id == any_(array)
        # --8<-- [end:any_ids]
    else:
        for chunk in chunked(ids, IDS_PER_STATEMENT):
            yield Product.id.in_(chunk)


# --8<-- [end:chunked]


# --8<-- [start:bulk_update]
class ProductsNotFound(LookupError):
    def __init__(self, ids: Iterable[int]) -> None:
        self.ids = sorted(ids)
        super().__init__(f"no live products with ids {self.ids}")


async def update_products(
    session: AsyncSession, ids: Iterable[int], changes: ProductChanges
) -> None:
    """Apply `changes` to every id, or raise ProductsNotFound naming the
    missing ones (the caller's rollback then undoes the whole batch)."""
    await update_live_ids(session, ids, changes.values())


async def update_live_ids(
    session: AsyncSession, ids: Iterable[int], values: Mapping[str, object]
) -> None:
    wanted = sorted(set(ids))
    found: set[int] = set()
    for condition in ids_in(session, wanted):
        stmt = (
            update(Product)
            .where(condition, Product.deleted_at.is_(None))
            .values({**values, "version": Product.version + 1})
            .returning(Product.id)  # the ids this statement really updated
        )
        found.update((await session.execute(stmt)).scalars())
    if missing := set(wanted) - found:
        raise ProductsNotFound(missing)


# --8<-- [end:bulk_update]


# --8<-- [start:update_where]
async def update_products_where(
    session: AsyncSession,
    condition: ColumnElement[bool],
    changes: ProductChanges,
) -> list[int]:
    """Apply `changes` to every live product matching `condition`; return
    the ids updated."""
    stmt = (
        update(Product)
        .where(condition, Product.deleted_at.is_(None))
        .values({**changes.values(), "version": Product.version + 1})
        .returning(Product.id)
    )
    return sorted((await session.execute(stmt)).scalars())


# --8<-- [end:update_where]


# --8<-- [start:update_each]
async def set_stock(
    session: AsyncSession, stock_by_id: Mapping[int, int]
) -> None:
    """A different stock for each product, or ProductsNotFound."""
    # Bump the versions first: it locks the rows and finds the missing ids.
    await update_live_ids(session, stock_by_id, {})
    rows = [{"id": id_, "stock": stock} for id_, stock in stock_by_id.items()]
    if rows:
        await session.execute(update(Product), rows)  # ORM bulk UPDATE by id


# --8<-- [end:update_each]


# --8<-- [start:demo_update]
async def demo_update(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)

    async def stock_and_version(*ids: int) -> list[tuple[int, int]]:
        async with sessions() as session:
            query = select(Product.stock, Product.version).where(
                Product.id.in_(ids)
            )
            result = await session.execute(query.order_by(Product.id))
            return [(stock, version) for stock, version in result]

    async with sessions.begin() as session:
        await update_stock_naive(session, [1, 2, 999_999], stock=50)
    print("naive:", await stock_and_version(1, 2))
    #> naive: [(50, 1), (50, 1)]

    try:
        async with sessions.begin() as session:
            await update_products(
                session, [1, 2, 999_999], ProductChanges(stock=7)
            )
    except ProductsNotFound as exc:
        print(exc, "- changed:", await stock_and_version(1, 2))
        #> no live products with ids [999999] - changed: [(50, 1), (50, 1)]

    async with sessions.begin() as session:
        await update_products(session, [1, 2], ProductChanges(stock=7))
    print("by ids:", await stock_and_version(1, 2))
    #> by ids: [(7, 2), (7, 2)]

    async with sessions.begin() as session:
        low = Product.stock < 1
        ids = await update_products_where(
            session, low, ProductChanges(stock=10)
        )
    print("restocked:", len(ids), "first:", ids[:3])
    #> restocked: 100 first: [10, 20, 30]

    async with sessions.begin() as session:
        await set_stock(session, {1: 11, 2: 22})
    print("each:", await stock_and_version(1, 2))
    #> each: [(11, 3), (22, 3)]


# --8<-- [end:demo_update]


# --8<-- [start:naive_upsert]
async def upsert_products_naive(
    session: AsyncSession, rows: Sequence[ProductIn]
) -> None:
    stmt = dialect_insert(session)
    upsert = stmt.on_conflict_do_update(
        index_elements=[Product.sku],
        index_where=Product.deleted_at.is_(None),
        set_={
            "name": stmt.excluded.name,
            "stock": stmt.excluded.stock,
            "brand": stmt.excluded.brand,
            "version": Product.version + 1,  # on every row of the feed
        },
    )
    await session.execute(upsert, [row.model_dump() for row in rows])


def dialect_insert(session: AsyncSession) -> postgresql.Insert | sqlite.Insert:
    """ON CONFLICT lives in each dialect's own insert()."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(Product)
    return sqlite.insert(Product)


# --8<-- [end:naive_upsert]


# --8<-- [start:upsert]
class DuplicateSkus(ValueError):
    def __init__(self, skus: Iterable[str]) -> None:
        self.skus = sorted(skus)
        super().__init__(f"SKUs given more than once: {self.skus}")


class Upserted(NamedTuple):
    inserted: list[str]
    updated: list[str]
    unchanged: list[str]


async def upsert_products(
    session: AsyncSession, rows: Sequence[ProductIn]
) -> Upserted:
    """Insert new SKUs, update live ones that differ; leave the rest alone."""
    counts = Counter(row.sku for row in rows)
    if twice := [sku for sku, n in counts.items() if n > 1]:
        raise DuplicateSkus(twice)  # see "A row twice in one statement"
    if not rows:
        return Upserted([], [], [])
    upsert = upsert_statement(session).returning(Product.sku, Product.version)
    conn = await session.connection()  # Core: one statement per 1,000 rows
    result = await conn.execute(upsert, [row.model_dump() for row in rows])
    # An inserted row starts at version 1; an update leaves it at 2 or more.
    version_of: dict[str, int] = dict(result.all())
    return Upserted(
        inserted=[row.sku for row in rows if version_of.get(row.sku) == 1],
        updated=[row.sku for row in rows if version_of.get(row.sku, 1) > 1],
        unchanged=[row.sku for row in rows if row.sku not in version_of],
    )


# --8<-- [end:upsert]


# --8<-- [start:upsert_statement]
def upsert_statement(
    session: AsyncSession,
) -> postgresql.Insert | sqlite.Insert:
    stmt = dialect_insert(session)
    new = stmt.excluded  # the row the feed proposed
    return stmt.on_conflict_do_update(
        index_elements=[Product.sku],
        index_where=Product.deleted_at.is_(None),  # the index's own WHERE
        set_={
            "name": new.name,
            "stock": new.stock,
            "brand": new.brand,
            "version": Product.version + 1,
        },
        # --8<-- [start:upsert_where]
        # Only rows that differ: NULL-safe (IS DISTINCT FROM on PostgreSQL,
        # IS NOT on SQLite), so a change from or to NULL counts too.
        where=or_(
            Product.name.is_distinct_from(new.name),
            Product.stock.is_distinct_from(new.stock),
            Product.brand.is_distinct_from(new.brand),
        ),
        # --8<-- [end:upsert_where]
    )


# --8<-- [end:upsert_statement]


# --8<-- [start:upsert_postgres]
async def upsert_products_inserted(
    session: AsyncSession, rows: Sequence[ProductIn]
) -> dict[str, bool]:
    """PostgreSQL only: SKU -> True if inserted, False if updated."""
    # xmax: 0 in a row this statement inserted, not in one it updated (a
    # PostgreSQL implementation detail, checked by the tests).
    inserted = literal_column("xmax = 0", Boolean)
    upsert = upsert_statement(session).returning(Product.sku, inserted)
    conn = await session.connection()
    result = await conn.execute(upsert, [row.model_dump() for row in rows])
    return dict(result.all())


# --8<-- [end:upsert_postgres]


# --8<-- [start:demo_upsert]
async def demo_upsert(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    feed = [
        ProductIn(sku="P-00001", name="Renamed", stock=5),  # exists: update
        ProductIn(sku="NEW-1", name="Brand new", stock=3),  # new: insert
    ]
    async with sessions() as session:
        naive = dialect_insert(session)
        naive = naive.on_conflict_do_update(  # no index_where
            index_elements=[Product.sku], set_={"name": naive.excluded.name}
        )
        try:
            await session.execute(naive, [row.model_dump() for row in feed])
        except SQLAlchemyError as exc:
            error = driver_message(exc)
    print(error)
    #> ON CONFLICT clause does not match any PRIMARY KEY or UNIQUE constraint

    async def versions() -> list[int]:
        async with sessions() as session:
            skus = [row.sku for row in feed]
            query = select(Product.version).where(Product.sku.in_(skus))
            return list(await session.scalars(query.order_by(Product.sku)))

    for night in (1, 2):  # the same feed, two nights running
        async with sessions.begin() as session:
            result = await upsert_products(session, feed)
        changed = result._asdict().items()
        outcome = " ".join(f"{kind} {skus}" for kind, skus in changed if skus)
        print(f"night {night}: {outcome}, versions {await versions()}")
        #> night 1: inserted ['NEW-1'] updated ['P-00001'], versions [1, 2]
        #> night 2: unchanged ['P-00001', 'NEW-1'], versions [1, 2]

    async with sessions.begin() as session:
        await upsert_products_naive(session, feed)
    print("naive upsert of the same feed: versions", await versions())
    #> naive upsert of the same feed: versions [2, 3]


# --8<-- [end:demo_upsert]


# --8<-- [start:database_errors]
class Problem(StrEnum):
    UNIQUE = "unique"
    FOREIGN_KEY = "foreign key"
    CHECK = "check"
    NOT_NULL = "not null"
    BUSY = "busy"  # worth a retry: locked, serialization failure, deadlock
    UNAVAILABLE = "unavailable"  # the connection was lost
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class DatabaseProblem:
    kind: Problem
    constraint: str = ""  # the constraint's name, where the database says it
    columns: tuple[str, ...] = ()


SQLSTATES = {
    "23505": Problem.UNIQUE,
    "23503": Problem.FOREIGN_KEY,
    "23514": Problem.CHECK,
    "23502": Problem.NOT_NULL,
    "40001": Problem.BUSY,  # serialization_failure
    "40P01": Problem.BUSY,  # deadlock_detected
    "55P03": Problem.BUSY,  # lock_not_available
}
SQLITE_ERRORS = {
    "SQLITE_CONSTRAINT_UNIQUE": Problem.UNIQUE,
    "SQLITE_CONSTRAINT_PRIMARYKEY": Problem.UNIQUE,
    "SQLITE_CONSTRAINT_FOREIGNKEY": Problem.FOREIGN_KEY,
    "SQLITE_CONSTRAINT_CHECK": Problem.CHECK,
    "SQLITE_CONSTRAINT_NOTNULL": Problem.NOT_NULL,
    "SQLITE_BUSY": Problem.BUSY,
    "SQLITE_BUSY_SNAPSHOT": Problem.BUSY,
    "SQLITE_LOCKED": Problem.BUSY,
}


def classify(exc: DBAPIError, metadata: MetaData) -> DatabaseProblem:
    """What went wrong, by SQLSTATE on PostgreSQL, by error code on SQLite."""
    if exc.connection_invalidated:
        return DatabaseProblem(Problem.UNAVAILABLE)
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is not None:  # PostgreSQL, through asyncpg
        cause = exc.orig.__cause__ if exc.orig else None
        return postgres_problem(sqlstate, cause, metadata)
    errorname = getattr(exc.orig, "sqlite_errorname", "")
    kind = SQLITE_ERRORS.get(errorname, Problem.UNKNOWN)
    detail = str(exc.orig).partition(" constraint failed: ")[2]
    if kind is Problem.CHECK:  # SQLite names a CHECK constraint
        return DatabaseProblem(kind, detail)
    if kind in (Problem.UNIQUE, Problem.NOT_NULL):  # "items.name, items.x"
        table = detail.split(".")[0]
        columns = tuple(part.split(".")[-1] for part in detail.split(", "))
        name = constraint_named_by(metadata, table, columns)
        return DatabaseProblem(
            kind, name if kind is Problem.UNIQUE else "", columns
        )
    return DatabaseProblem(kind)


def postgres_problem(
    sqlstate: str, cause: BaseException | None, metadata: MetaData
) -> DatabaseProblem:
    kind = SQLSTATES.get(sqlstate, Problem.UNKNOWN)
    if kind is Problem.NOT_NULL:
        return DatabaseProblem(kind, "", (getattr(cause, "column_name", ""),))
    name = getattr(cause, "constraint_name", None) or ""
    return DatabaseProblem(kind, name, constraint_columns(metadata, name))


def constraint_columns(metadata: MetaData, name: str) -> tuple[str, ...]:
    found = (cols for _, n, cols in unique_column_sets(metadata) if n == name)
    return next(found, ())


def constraint_named_by(
    metadata: MetaData, table: str, columns: tuple[str, ...]
) -> str:
    sets = unique_column_sets(metadata)
    found = (n for t, n, cols in sets if t == table and cols == columns)
    return next(found, "")


def unique_column_sets(
    metadata: MetaData,
) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(table, name, columns) of each constraint and unique index."""
    for table in metadata.tables.values():
        unique = [*table.constraints, *(i for i in table.indexes if i.unique)]
        for item in unique:
            if isinstance(item, ColumnCollectionConstraint | Index):
                columns = tuple(column.name for column in item.columns)
                yield table.name, str(item.name), columns


# --8<-- [end:database_errors]


# --8<-- [start:naive_import]
class RowError(NamedTuple):
    row: int  # position in the input, from 1
    error: str


async def import_products_naive(
    session: AsyncSession, rows: Sequence[object]
) -> list[RowError]:
    """After one conflict, every row again, each in a savepoint."""
    errors, valid = validate_rows(rows)
    try:
        async with session.begin_nested():
            await session.execute(
                insert(Product), [p.model_dump() for _, p in valid]
            )
    except IntegrityError:  # any error at all is called a duplicate
        for number, product in valid:
            try:
                async with session.begin_nested():
                    await session.execute(
                        insert(Product), [product.model_dump()]
                    )
            except IntegrityError:
                errors.append(RowError(number, f"{product.sku} already exists"))
    return sorted(errors)


# --8<-- [end:naive_import]


# --8<-- [start:validate]
def validate_rows(
    rows: Sequence[object],
) -> tuple[list[RowError], list[tuple[int, ProductIn]]]:
    """Pydantic first: bad rows never reach the database. A SKU given twice
    is stored from its first row and reported on the others."""
    errors: list[RowError] = []
    valid: list[tuple[int, ProductIn]] = []
    first_row: dict[str, int] = {}
    for number, row in enumerate(rows, 1):
        try:
            product = ProductIn.model_validate(row)
        except ValidationError as exc:
            errors.append(RowError(number, first_error(exc)))
            continue
        first = first_row.setdefault(product.sku, number)
        if first != number:
            error = f"{product.sku} repeats row {first}"
            errors.append(RowError(number, error))
        else:
            valid.append((number, product))
    return errors, valid


def first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


# --8<-- [end:validate]


# --8<-- [start:import]
ROWS_PER_INSERT = 1_000  # SQLAlchemy's own batch: one statement per chunk


async def import_products(
    session: AsyncSession, rows: Sequence[object]
) -> list[RowError]:
    """Store every valid row whose SKU is free and report the others.
    Never commits."""
    errors, valid = validate_rows(rows)
    try:
        async with session.begin_nested():  # one savepoint for all chunks
            errors += await insert_new_skus(session, valid)
    except IntegrityError:  # a row broke a rule other than the SKU's
        errors += await insert_each(session, valid)
    return sorted(errors)


# --8<-- [end:import]


# --8<-- [start:insert_new_skus]
async def insert_new_skus(
    session: AsyncSession, valid: Sequence[tuple[int, ProductIn]]
) -> list[RowError]:
    """One INSERT per chunk; a taken SKU is skipped, not an error."""
    stmt = (
        dialect_insert(session)
        .on_conflict_do_nothing(
            index_elements=[Product.sku],
            index_where=Product.deleted_at.is_(None),
        )
        .returning(Product.sku)  # only the rows really inserted
    )
    # Core, on the session's connection: the ORM would split a chunk by
    # which columns are None.
    conn = await session.connection()
    errors: list[RowError] = []
    for chunk in chunked(valid, ROWS_PER_INSERT):
        params = [product.model_dump() for _, product in chunk]
        stored = set(await conn.scalars(stmt, params))
        errors += [
            RowError(number, f"{product.sku} already exists")
            for number, product in chunk
            if product.sku not in stored
        ]
    return errors


# --8<-- [end:insert_new_skus]


# --8<-- [start:import_each]
async def insert_each(
    session: AsyncSession, valid: Sequence[tuple[int, ProductIn]]
) -> list[RowError]:
    """A savepoint per row: slow, but each row reports its own error."""
    errors: list[RowError] = []
    for number, product in valid:
        try:
            async with session.begin_nested():
                await session.execute(insert(Product), [product.model_dump()])
        except IntegrityError as exc:
            errors.append(RowError(number, row_problem(exc, product)))
    return errors


def row_problem(exc: IntegrityError, product: ProductIn) -> str:
    problem = classify(exc, Base.metadata)
    match problem.kind:
        case Problem.UNIQUE:
            return f"{product.sku} already exists"
        case Problem.FOREIGN_KEY:  # brands is the only reference
            return f"brand {product.brand} does not exist"
        case Problem.CHECK | Problem.NOT_NULL:
            return f"breaks a {problem.kind} constraint"
        case _:  # not the row's fault: let the whole import fail
            raise exc


# --8<-- [end:import_each]


# --8<-- [start:demo_import]
async def demo_import(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    async with sessions.begin() as session:
        session.add(Brand(code="ACME"))
    feed: list[object] = [
        {"sku": "IMP-1", "name": "Good", "stock": 1},
        {"sku": "IMP-2", "name": "Negative stock", "stock": -1},
        {"sku": "P-00001", "name": "SKU taken"},
        {"sku": "IMP-3"},
        "not an object",
        {"sku": "IMP-1", "name": "Twice in the file"},
        {"sku": "IMP-4", "name": "Good too", "stock": 2, "price": 3},
        {"sku": "IMP-5", "name": "Good as well", "brand": "ACME"},
    ]
    with statements_sent(engine) as sent:
        async with sessions.begin() as session:
            errors = await import_products(session, feed)
    async with sessions() as session:
        query = select(Product.sku).where(Product.sku.like("IMP-%"))
        stored = (await session.scalars(query.order_by(Product.sku))).all()
    print("stored:", stored, "INSERT statements:", sent["INSERT"])
    #> stored: ['IMP-1', 'IMP-5'] INSERT statements: 1
    for error in errors:
        print(f"row {error.row}: {error.error}")
        #> row 2: stock: Input should be greater than or equal to 0
        #> row 3: P-00001 already exists
        #> row 4: name: Field required
        #> row 5: Input should be a valid dictionary or instance of ProductIn
        #> row 6: IMP-1 repeats row 1
        #> row 7: price: Extra inputs are not permitted


# --8<-- [end:demo_import]


# --8<-- [start:demo_import_fallback]
async def demo_import_fallback(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    # A row that breaks another rule: the savepoint-per-row fallback.
    feed: list[object] = [
        {"sku": "IMP-6", "name": "Unknown brand", "brand": "NOPE"},
        {"sku": "P-00002", "name": "SKU taken"},
        {"sku": "IMP-7", "name": "Good"},
    ]
    async with sessions.begin() as session:
        for error in await import_products(session, feed):
            print(f"row {error.row}: {error.error}")
            #> row 1: brand NOPE does not exist
            #> row 2: P-00002 already exists


# --8<-- [end:demo_import_fallback]


# --8<-- [start:demo_import_cost]
async def demo_import_cost(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    # 2,000 new rows; the last one repeats a SKU the table already has.
    feed = [p.model_dump() for p in products(1_999, start=20_000)]
    feed.append({"sku": "P-00003", "name": "SKU taken"})
    for load in (import_products_naive, import_products):
        with statements_sent(engine) as sent:
            async with sessions() as session:  # rolled back: same start
                errors = await load(session, feed)
        print(
            f"{load.__name__:<21} {len(errors)} error:",
            f"INSERT {sent['INSERT']}, SAVEPOINT {sent['SAVEPOINT']}",
        )
        #> import_products_naive 1 error: INSERT 2001, SAVEPOINT 2001
        #> import_products       1 error: INSERT 2, SAVEPOINT 1


# --8<-- [end:demo_import_cost]


# --8<-- [start:one_transaction]
async def insert_in_chunks(
    session: AsyncSession, rows: Iterable[ProductIn], size: int = 1_000
) -> None:
    """Insert a stream of rows, `size` at a time, in the open transaction."""
    for chunk in chunked(rows, size):
        await session.execute(
            insert(Product), [row.model_dump() for row in chunk]
        )


# --8<-- [end:one_transaction]


# --8<-- [start:naive_chunks]
async def insert_commit_per_chunk(
    sessions: Sessions,
    rows: Iterable[ProductIn],
    size: int = 1_000,
) -> None:
    for chunk in chunked(rows, size):
        async with sessions.begin() as session:  # a commit per chunk
            await session.execute(
                insert(Product), [r.model_dump() for r in chunk]
            )


# --8<-- [end:naive_chunks]


# --8<-- [start:demo_chunks]
async def demo_chunks(engine: AsyncEngine) -> None:
    print([len(chunk) for chunk in chunked(range(25_000), IDS_PER_STATEMENT)])
    #> [10000, 10000, 5000]

    sessions = create_session_factory(engine)
    # 3,000 new rows, and the last one repeats an existing SKU.
    feed = [*products(2_999, start=50_000), ProductIn(sku="P-00001", name="x")]
    for load in ("commit per chunk", "one transaction"):
        before = await count_rows(sessions, Product)
        try:
            if load == "commit per chunk":
                await insert_commit_per_chunk(sessions, feed)
            else:
                async with sessions.begin() as session:
                    await insert_in_chunks(session, feed)
        except IntegrityError:
            kept = await count_rows(sessions, Product) - before
            print(f"{load}: failed, {kept} of {len(feed)} rows kept")
            #> commit per chunk: failed, 2000 of 3000 rows kept
            #> one transaction: failed, 0 of 3000 rows kept


# --8<-- [end:demo_chunks]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'bulk.db'}")
        await create_tables(engine)
        await demo_empty(engine)
        await demo_insert(engine)
        await demo_returning(engine)
        await demo_update(engine)
        await demo_upsert(engine)
        await demo_import(engine)
        await demo_import_fallback(engine)
        await demo_import_cost(engine)
        await demo_chunks(engine)
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

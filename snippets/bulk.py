"""Bulk operations: load, update and upsert many rows, and report the bad ones.

Run it: python -m snippets.bulk
"""

# --8<-- [start:imports]
import asyncio
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import NamedTuple, Protocol, Self, TypedDict, TypeVar, cast

import aiosqlite
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from sqlalchemy import (
    ColumnElement,
    DateTime,
    Index,
    String,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry

# --8<-- [end:imports]


# --8<-- [start:models]
class Base(DeclarativeBase):
    pass


class Move(Base):
    """A stock movement: append-only rows, no natural key."""

    __tablename__ = "moves"

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(40))
    quantity: Mapped[int]


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The natural key. insert_sentinel: its unique values tell SQLAlchemy
    # which returned id belongs to which input row (see RETURNING below).
    sku: Mapped[str] = mapped_column(String(40), insert_sentinel=True)
    name: Mapped[str] = mapped_column(String(200))
    stock: Mapped[int] = mapped_column(default=0)
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


class MoveRow(TypedDict):
    sku: str
    quantity: int


# --8<-- [end:models]


# --8<-- [start:schemas]
class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=40, pattern=r"^[A-Z0-9-]+$")
    name: str = Field(min_length=1, max_length=200)
    stock: int = Field(default=0, ge=0, le=2**31 - 1)


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
def short(exc: Exception) -> str:
    """The driver's message: no exception class, no SQL, no doc link."""
    first_line = str(exc).splitlines()[0].split(" (Background on")[0]
    return first_line.split(") ", 1)[-1]


async def count(sessions: async_sessionmaker[AsyncSession], model: type) -> int:
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
    if rows:  # an empty list would send one INSERT of default values
        await session.execute(insert(Move), rows)  # ORM bulk INSERT


async def insert_moves_core(
    session: AsyncSession, rows: Sequence[MoveRow]
) -> None:
    if rows:
        conn = await session.connection()
        await conn.execute(insert(Move), rows)  # Core: on the connection


# --8<-- [end:bulk_insert]


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
    await conn.exec_driver_sql("SELECT 1")
    raw = cast(
        CopyConnection, (await conn.get_raw_connection()).driver_connection
    )
    await raw.copy_records_to_table(
        "moves", records=records, columns=["sku", "quantity"]
    )


# --8<-- [end:fast_path]


# --8<-- [start:demo_insert]
async def demo_insert(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
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
    print("moves stored:", await count(sessions, Move))
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
    sessions = async_sessionmaker(engine, expire_on_commit=False)
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
    for chunk in chunked(wanted, IDS_PER_STATEMENT):
        stmt = (
            update(Product)
            .where(Product.id.in_(chunk), Product.deleted_at.is_(None))
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
    sessions = async_sessionmaker(engine, expire_on_commit=False)

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


# --8<-- [start:upsert]
class DuplicateSkus(ValueError):
    def __init__(self, skus: Iterable[str]) -> None:
        self.skus = sorted(skus)
        super().__init__(f"SKUs given more than once: {self.skus}")


async def upsert_products(
    session: AsyncSession, rows: Sequence[ProductIn]
) -> list[int]:
    """Insert new SKUs, update live ones; return ids in input order."""
    counts = Counter(row.sku for row in rows)
    if twice := [sku for sku, n in counts.items() if n > 1]:
        raise DuplicateSkus(twice)  # one statement cannot touch a row twice
    if not rows:
        return []
    stmt = dialect_insert(session)
    upsert = stmt.on_conflict_do_update(
        index_elements=[Product.sku],
        index_where=Product.deleted_at.is_(None),  # the index's own WHERE
        set_={
            "name": stmt.excluded.name,
            "stock": stmt.excluded.stock,
            "version": Product.version + 1,
        },
    ).returning(Product.id, sort_by_parameter_order=True)
    result = await session.execute(upsert, [row.model_dump() for row in rows])
    return list(result.scalars())


def dialect_insert(session: AsyncSession) -> postgresql.Insert | sqlite.Insert:
    """ON CONFLICT lives in each dialect's own insert()."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(Product)
    return sqlite.insert(Product)


# --8<-- [end:upsert]


# --8<-- [start:demo_upsert]
async def demo_upsert(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    feed = [
        ProductIn(sku="P-00001", name="Renamed", stock=5),  # exists: update
        ProductIn(sku="NEW-1", name="Brand new", stock=3),  # new: insert
    ]
    naive = sqlite.insert(Product)
    naive = naive.on_conflict_do_update(  # no index_where
        index_elements=[Product.sku], set_={"name": naive.excluded.name}
    )
    async with sessions() as session:
        try:
            await session.execute(naive, [row.model_dump() for row in feed])
        except SQLAlchemyError as exc:
            error = short(exc)
    print(error)
    #> ON CONFLICT clause does not match any PRIMARY KEY or UNIQUE constraint

    async with sessions.begin() as session:
        ids = await upsert_products(session, feed)
    async with sessions() as session:
        query = select(Product.sku, Product.name, Product.version)
        for id_ in ids:
            print((await session.execute(query.where(Product.id == id_))).one())
            #> ('P-00001', 'Renamed', 2)
            #> ('NEW-1', 'Brand new', 1)


# --8<-- [end:demo_upsert]


# --8<-- [start:import]
class RowError(NamedTuple):
    row: int  # position in the input, from 1
    error: str


async def import_products(
    session: AsyncSession, rows: Sequence[object]
) -> list[RowError]:
    """Store every valid row and report the others. Never commits."""
    errors: list[RowError] = []
    valid: list[tuple[int, ProductIn]] = []
    for number, row in enumerate(rows, 1):
        try:
            valid.append((number, ProductIn.model_validate(row)))
        except ValidationError as exc:
            errors.append(RowError(number, first_error(exc)))
    if not valid:
        return errors
    try:  # the common case first: every valid row in one statement
        async with session.begin_nested():
            await session.execute(
                insert(Product), [p.model_dump() for _, p in valid]
            )
    except IntegrityError:  # some row conflicts: one savepoint per row
        for number, product in valid:
            try:
                async with session.begin_nested():
                    await session.execute(
                        insert(Product), [product.model_dump()]
                    )
            except IntegrityError:
                errors.append(RowError(number, f"{product.sku} already exists"))
    return sorted(errors)


def first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


# --8<-- [end:import]


# --8<-- [start:demo_import]
async def demo_import(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    feed: list[object] = [
        {"sku": "IMP-1", "name": "Good", "stock": 1},
        {"sku": "IMP-2", "name": "Negative stock", "stock": -1},
        {"sku": "P-00001", "name": "SKU taken"},
        {"sku": "IMP-3"},
        "not an object",
        {"sku": "IMP-1", "name": "Twice in the file"},
        {"sku": "IMP-4", "name": "Good too", "stock": 2, "price": 3},
        {"sku": "IMP-5", "name": "Good as well"},
    ]
    async with sessions.begin() as session:
        errors = await import_products(session, feed)
    async with sessions() as session:
        query = select(Product.sku).where(Product.sku.like("IMP-%"))
        stored = (await session.scalars(query.order_by(Product.sku))).all()
    print("stored:", stored)
    #> stored: ['IMP-1', 'IMP-5']
    for error in errors:
        print(f"row {error.row}: {error.error}")
        #> row 2: stock: Input should be greater than or equal to 0
        #> row 3: P-00001 already exists
        #> row 4: name: Field required
        #> row 5: Input should be a valid dictionary or instance of ProductIn
        #> row 6: IMP-1 already exists
        #> row 7: price: Extra inputs are not permitted


# --8<-- [end:demo_import]


# --8<-- [start:engine]
class SQLiteDriverConnection(Protocol):
    isolation_level: str | None


def create_engine(url: str) -> AsyncEngine:
    engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        # Let SQLAlchemy, not the sqlite3 module, decide when a transaction
        # begins, so that SAVEPOINTs nest inside a real transaction.
        event.listen(engine.sync_engine, "connect", stop_driver_begin)
        event.listen(engine.sync_engine, "begin", send_begin)
    return engine


def stop_driver_begin(
    conn: SQLiteDriverConnection, _: ConnectionPoolEntry
) -> None:
    conn.isolation_level = None  # sqlite3 no longer sends BEGIN by itself


def send_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")  # sent when SQLAlchemy begins a transaction


# --8<-- [end:engine]


# --8<-- [start:demo_dry_run]
async def demo_dry_run(url: str) -> None:
    naive_engine = create_async_engine(url)  # without the SQLite fix
    for engine, start in ((naive_engine, 5_000), (create_engine(url), 6_000)):
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        before = await count(sessions, Product)
        async with sessions() as session:
            await import_products(session, products(3, start))
            await session.rollback()  # a dry run: check the feed, keep nothing
        kept = await count(sessions, Product) - before
        name = "naive" if engine is naive_engine else "fixed"
        print(name, "dry run kept", kept)
        #> naive dry run kept 3
        #> fixed dry run kept 0
        await engine.dispose()


# --8<-- [end:demo_dry_run]


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
    sessions: async_sessionmaker[AsyncSession],
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

    sessions = async_sessionmaker(engine, expire_on_commit=False)
    # 3,000 new rows, and the last one repeats an existing SKU.
    feed = [*products(2_999, start=50_000), ProductIn(sku="P-00001", name="x")]
    for load in ("commit per chunk", "one transaction"):
        before = await count(sessions, Product)
        try:
            if load == "commit per chunk":
                await insert_commit_per_chunk(sessions, feed)
            else:
                async with sessions.begin() as session:
                    await insert_in_chunks(session, feed)
        except IntegrityError:
            kept = await count(sessions, Product) - before
            print(f"{load}: failed, {kept} of {len(feed)} rows kept")
            #> commit per chunk: failed, 2000 of 3000 rows kept
            #> one transaction: failed, 0 of 3000 rows kept


# --8<-- [end:demo_chunks]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bulk.db'}"
        engine = create_engine(url)
        await create_tables(engine)
        await demo_insert(engine)
        await demo_returning(engine)
        await demo_update(engine)
        await demo_upsert(engine)
        await demo_import(engine)
        await demo_dry_run(url)
        await demo_chunks(engine)
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

"""Transactions: an order, its lines and the stock, all or nothing.

Run it: python -m snippets.transactions
"""

# --8<-- [start:imports]
import asyncio
import logging
import tempfile
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError
from sqlalchemy import (
    CheckConstraint,
    Connection,
    ForeignKey,
    Index,
    MetaData,
    Numeric,
    String,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine.interfaces import DBAPIConnection, DBAPICursor
from sqlalchemy.exc import DBAPIError, IntegrityError, InvalidRequestError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    mapped_column,
    relationship,
    selectinload,
)
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.schema import ColumnCollectionConstraint

# --8<-- [end:imports]


# --8<-- [start:models]
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (CheckConstraint("stock >= 0", name="stock_not_negative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    stock: Mapped[int]


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str] = mapped_column(String(200))
    lines: Mapped[list["OrderLine"]] = relationship(
        lazy="raise", order_by="OrderLine.id"
    )


class OrderLine(Base):
    __tablename__ = "order_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    quantity: Mapped[int]
    unit_price: Mapped[Decimal] = mapped_column(Numeric(10, 2))


class Redemption(Base):
    """A single-use coupon: its code is the primary key, so one order."""

    __tablename__ = "redemptions"

    code: Mapped[str] = mapped_column(String(50), primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))


# --8<-- [end:models]


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


def create_read_session_factory(engine: AsyncEngine) -> Sessions:
    # A deferred BEGIN on SQLite: reads take no write lock (no-op elsewhere).
    return create_session_factory(
        engine.execution_options(sqlite_begin="DEFERRED")
    )


# --8<-- [end:engine]


# --8<-- [start:schemas]
def no_nul(text: str) -> str:
    if "\x00" in text:  # PostgreSQL refuses NUL in text: reject it here
        raise PydanticCustomError("nul_character", "NUL is not allowed")
    return text


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: int = Field(ge=1, le=2**31 - 1)  # fits an INTEGER column
    quantity: int = Field(ge=1, le=1_000_000)


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: Annotated[str, AfterValidator(no_nul)] = Field(
        min_length=1, max_length=200
    )
    lines: list[LineIn] = Field(min_length=1, max_length=50)


class LineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    item_id: int
    quantity: int
    unit_price: Decimal


class OrderOut(BaseModel):
    id: int
    customer: str
    lines: list[LineOut]
    total: Decimal


# --8<-- [end:schemas]


# --8<-- [start:errors]
class OrderError(Exception):
    """The order cannot be placed: the caller must roll back."""


class UnknownItemError(OrderError):
    def __init__(self, item_id: int) -> None:
        super().__init__(f"item {item_id} does not exist")


class OutOfStockError(OrderError):
    def __init__(self, item_id: int) -> None:
        super().__init__(f"not enough stock for item {item_id}")


# --8<-- [end:errors]


# --8<-- [start:default_engine]
def create_default_engine(url: str, **options: Any) -> AsyncEngine:
    # What most tutorials write: the driver decides when a transaction begins.
    return create_async_engine(url, **options)


# --8<-- [end:default_engine]


# --8<-- [start:naive_order]
async def place_order_naive(
    session: AsyncSession, customer: str, lines: list[LineIn]
) -> Order:
    """Read the stock, check it, write the new value: read-check-write."""
    order = Order(customer=customer, lines=[])
    for line in lines:
        item = await session.get(Item, line.item_id)
        if item is None:
            raise UnknownItemError(line.item_id)
        if item.stock < line.quantity:
            raise OutOfStockError(line.item_id)
        item.stock -= line.quantity  # sent at commit: SET stock = <a number>
        order.lines.append(
            OrderLine(
                item_id=item.id, quantity=line.quantity, unit_price=item.price
            )
        )
    session.add(order)
    return order


# --8<-- [end:naive_order]


# --8<-- [start:helpers]
def short(exc: Exception) -> str:
    """The first line of an error message, without SQLAlchemy's doc link."""
    return str(exc).splitlines()[0].split(" (Background on")[0]


def outcome(result: object) -> str:
    return "placed" if result is None else type(result).__name__


async def add_item(
    sessions: Sessions, name: str, price: str, stock: int
) -> int:
    async with sessions.begin() as session:
        item = Item(name=name, price=Decimal(price), stock=stock)
        session.add(item)
    return item.id


async def stock_of(sessions: Sessions, item_id: int) -> int:
    async with sessions() as session:
        return (await session.get_one(Item, item_id)).stock


async def count(sessions: async_sessionmaker[AsyncSession], model: type) -> int:
    async with sessions() as session:
        total = await session.scalar(select(func.count()).select_from(model))
        return int(total or 0)


# --8<-- [end:helpers]


# --8<-- [start:demo_naive_oversell]
async def demo_naive_oversell(url: str) -> None:
    engine = create_default_engine(url, pool_size=20)  # one per order
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    lamp = await add_item(sessions, "Lamp", "30.00", stock=5)
    everyone_has_read = asyncio.Barrier(20)
    # The database lets one writer at a time through anyway; taking turns
    # here only spares SQLite's busy handler its sleeps.
    one_writer = asyncio.Lock()

    async def buy_one_lamp() -> None:
        async with sessions() as session:
            one_lamp = [LineIn(item_id=lamp, quantity=1)]
            await place_order_naive(session, "Ann", one_lamp)
            await everyone_has_read.wait()  # all twenty saw stock = 5
            async with one_writer:
                await session.commit()

    results = await asyncio.gather(
        *(buy_one_lamp() for _ in range(20)), return_exceptions=True
    )
    print(Counter(map(outcome, results)))
    #> Counter({'placed': 20})
    print("lamps sold:", await count(sessions, OrderLine), "of 5")
    #> lamps sold: 20 of 5
    print("stock left:", await stock_of(sessions, lamp))
    #> stock left: 4
    await engine.dispose()


# --8<-- [end:demo_naive_oversell]


# --8<-- [start:place_order]
async def place_order(
    session: AsyncSession, customer: str, lines: list[LineIn]
) -> Order:
    """Take the stock, then write the order; the caller commits."""
    prices = {}
    for item_id, quantity in total_per_item(lines).items():  # ascending ids
        prices[item_id] = await take_stock(session, item_id, quantity)
    order = Order(customer=customer)
    order.lines = [
        OrderLine(
            item_id=line.item_id,
            quantity=line.quantity,
            unit_price=prices[line.item_id],  # the price at order time
        )
        for line in lines
    ]
    session.add(order)
    await session.flush()  # INSERT the order, then its lines
    return order


def total_per_item(lines: Iterable[LineIn]) -> dict[int, int]:
    """Quantity per item, summed over repeated lines, by ascending id."""
    totals: Counter[int] = Counter()
    for line in lines:
        totals[line.item_id] += line.quantity
    return dict(sorted(totals.items()))


async def take_stock(
    session: AsyncSession, item_id: int, quantity: int
) -> Decimal:
    """Check and decrement in one statement; return the item's price."""
    taken = await session.execute(
        # --8<-- [start:check_and_take]
        update(Item)
        .where(Item.id == item_id, Item.stock >= quantity)
        .values(stock=Item.stock - quantity)
        .returning(Item.price)  # one row if the WHERE matched, else none
        # --8<-- [end:check_and_take]
    )
    price = taken.scalar_one_or_none()
    if price is not None:
        return price
    exists = await session.scalar(select(Item.id).where(Item.id == item_id))
    if exists is None:
        raise UnknownItemError(item_id)
    raise OutOfStockError(item_id)


# --8<-- [end:place_order]


# --8<-- [start:row_locks]
async def place_order_with_row_locks(
    session: AsyncSession, customer: str, lines: list[LineIn]
) -> Order:
    """Lock the rows (FOR UPDATE), then read, check and write at leisure."""
    wanted = total_per_item(lines)
    query = (
        select(Item)
        .where(Item.id.in_(list(wanted)))
        .order_by(Item.id)  # lock in a stable order
        .with_for_update()  # dropped on SQLite: see Locking
    )
    items = {item.id: item for item in await session.scalars(query)}
    for item_id, quantity in wanted.items():
        if item_id not in items:
            raise UnknownItemError(item_id)
        if items[item_id].stock < quantity:
            raise OutOfStockError(item_id)
        items[item_id].stock -= quantity  # nobody else can change it now
    order = Order(customer=customer)
    order.lines = [
        OrderLine(
            item_id=line.item_id,
            quantity=line.quantity,
            unit_price=items[line.item_id].price,
        )
        for line in lines
    ]
    session.add(order)
    await session.flush()
    return order


# --8<-- [end:row_locks]


# --8<-- [start:demo_no_oversell]
async def demo_no_oversell(sessions: Sessions, read_sessions: Sessions) -> None:
    desk = await add_item(sessions, "Desk", "120.00", stock=5)
    start = asyncio.Barrier(20)

    async def buy_one_desk() -> None:
        await start.wait()  # all twenty at once
        async with sessions.begin() as session:
            await place_order(
                session, "Ann", [LineIn(item_id=desk, quantity=1)]
            )

    results = await asyncio.gather(
        *(buy_one_desk() for _ in range(20)), return_exceptions=True
    )
    print(Counter(map(outcome, results)))
    #> Counter({'OutOfStockError': 15, 'placed': 5})
    print("desks sold:", await count(read_sessions, OrderLine), "of 5")
    #> desks sold: 5 of 5
    print("stock left:", await stock_of(read_sessions, desk))
    #> stock left: 0


# --8<-- [end:demo_no_oversell]


# --8<-- [start:data_layer_begin]
async def place_order_and_commit(
    session: AsyncSession, customer: str, lines: list[LineIn]
) -> Order:
    async with session.begin():  # the data layer begins and commits
        return await place_order(session, customer, lines)


# --8<-- [end:data_layer_begin]


# --8<-- [start:demo_begin]
async def demo_begin(sessions: Sessions, read_sessions: Sessions) -> None:
    chair = await add_item(sessions, "Chair", "45.00", stock=3)
    lines = [LineIn(item_id=chair, quantity=1)]
    async with sessions() as session:
        await session.get(Item, chair)  # any query first: the session begins
        try:
            await place_order_and_commit(session, "Bob", lines)
        except InvalidRequestError as exc:
            print(short(exc))
            #> A transaction is already begun on this Session.

    async with sessions.begin() as session:  # the caller owns the transaction
        await session.get(Item, chair)
        order = await place_order(session, "Bob", lines)
    left = await stock_of(read_sessions, chair)
    print("order", order.id, "chairs left:", left)
    #> order 6 chairs left: 2


# --8<-- [end:demo_begin]


# --8<-- [start:demo_all_or_nothing]
async def demo_all_or_nothing(
    sessions: Sessions, read_sessions: Sessions
) -> None:
    pen = await add_item(sessions, "Pen", "1.50", stock=10)
    ink = await add_item(sessions, "Ink", "4.00", stock=1)
    orders_before = await count(read_sessions, Order)
    try:
        async with sessions.begin() as session:
            lines = [
                LineIn(item_id=pen, quantity=2),
                LineIn(item_id=ink, quantity=3),
            ]
            await place_order(
                session, "Cy", lines
            )  # pens taken, then ink fails
    except OutOfStockError as exc:
        print(exc)
        #> not enough stock for item 4
    print(
        "pens:",
        await stock_of(read_sessions, pen),
        "ink:",
        await stock_of(read_sessions, ink),
    )
    #> pens: 10 ink: 1
    print("new orders:", await count(read_sessions, Order) - orders_before)
    #> new orders: 0

    try:
        async with sessions.begin() as session:
            one_ink_twice = [LineIn(item_id=ink, quantity=1)] * 2
            await place_order(session, "Cy", one_ink_twice)  # 2 wanted, 1 left
    except OutOfStockError as exc:
        print(exc)
        #> not enough stock for item 4


# --8<-- [end:demo_all_or_nothing]


# --8<-- [start:demo_price]
async def demo_price(sessions: Sessions, read_sessions: Sessions) -> None:
    cup = await add_item(sessions, "Cup", "6.50", stock=10)
    async with sessions.begin() as session:
        order = await place_order(
            session, "Dee", [LineIn(item_id=cup, quantity=2)]
        )
    async with sessions.begin() as session:
        await session.execute(
            update(Item).where(Item.id == cup).values(price=Decimal("7.00"))
        )
    async with read_sessions() as session:
        query = select(Order).options(selectinload(Order.lines))
        stored = (
            await session.scalars(query.where(Order.id == order.id))
        ).one()
    print([(line.quantity, line.unit_price) for line in stored.lines])
    #> [(2, Decimal('6.50'))]


# --8<-- [end:demo_price]


# --8<-- [start:savepoint]
async def redeem_coupon(session: AsyncSession, order: Order, code: str) -> bool:
    """An optional step: a coupon already used must not cancel the order."""
    try:
        async with session.begin_nested():  # SAVEPOINT
            session.add(Redemption(code=code, order_id=order.id))
    except IntegrityError:  # ROLLBACK TO SAVEPOINT: the order is untouched
        return False
    return True


# --8<-- [end:savepoint]


# --8<-- [start:demo_savepoint]
async def demo_savepoint(sessions: Sessions, read_sessions: Sessions) -> None:
    pad = await add_item(sessions, "Pad", "3.00", stock=5)
    for customer in ("Eve", "Fay"):
        async with sessions.begin() as session:
            lines = [LineIn(item_id=pad, quantity=1)]
            order = await place_order(session, customer, lines)
            redeemed = await redeem_coupon(session, order, "WELCOME")
        print(customer, "order", order.id, "coupon redeemed:", redeemed)
        #> Eve order 8 coupon redeemed: True
        #> Fay order 9 coupon redeemed: False
    print("pads left:", await stock_of(read_sessions, pad))
    #> pads left: 3


# --8<-- [end:demo_savepoint]


# --8<-- [start:no_savepoint]
async def redeem_coupon_without_savepoint(
    session: AsyncSession, order: Order, code: str
) -> bool:
    try:
        session.add(Redemption(code=code, order_id=order.id))
        await session.flush()
    except IntegrityError:  # too late: the whole transaction is rolled back
        return False
    return True


# --8<-- [end:no_savepoint]


# --8<-- [start:demo_no_savepoint]
async def demo_no_savepoint(
    sessions: Sessions, read_sessions: Sessions
) -> None:
    mat = await add_item(sessions, "Mat", "9.00", stock=5)
    orders_before = await count(read_sessions, Order)
    async with sessions.begin() as session:  # exits without an error...
        order = await place_order(
            session, "Gus", [LineIn(item_id=mat, quantity=1)]
        )
        redeemed = await redeem_coupon_without_savepoint(
            session, order, "WELCOME"
        )
    print("order", order.id, "coupon redeemed:", redeemed)
    #> order 10 coupon redeemed: False
    print("new orders:", await count(read_sessions, Order) - orders_before)
    #> new orders: 0
    print("mats left:", await stock_of(read_sessions, mat))
    #> mats left: 5


# --8<-- [end:demo_no_savepoint]


# --8<-- [start:record_statements]
def record_statements(engine: AsyncEngine) -> list[str]:
    """The first word of each statement SQLAlchemy sends, in order."""
    sent: list[str] = []

    def record(
        conn: Connection, cursor: DBAPICursor, statement: str, *_: object
    ) -> None:
        sent.append(statement.split(maxsplit=1)[0])

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    return sent


# --8<-- [end:record_statements]


# --8<-- [start:demo_sqlite_quirk]
async def demo_sqlite_quirk(url: str) -> None:
    for make_engine in (create_default_engine, create_engine):
        name = make_engine.__name__
        engine = make_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        sessions = create_session_factory(engine)
        sent = record_statements(engine)
        async with sessions() as session:
            async with session.begin_nested():
                session.add(Item(name=name, price=Decimal(0), stock=0))
            await session.rollback()  # roll back everything, the savepoint too
        shown = list(sent)
        async with sessions() as session:
            kept = await session.scalar(
                select(Item.id).where(Item.name == name)
            )
        print(name, "sent", *shown, "| row kept:", kept is not None)
        #> create_default_engine sent SAVEPOINT INSERT RELEASE | row kept: True
        #> create_engine sent BEGIN SAVEPOINT INSERT RELEASE | row kept: False
        await engine.dispose()


# --8<-- [end:demo_sqlite_quirk]


# --8<-- [start:lifespan]
@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_engine(app.state.database_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)  # demo: see Migrations
    app.state.sessions = create_session_factory(engine)
    app.state.read_sessions = create_read_session_factory(engine)
    yield
    await engine.dispose()  # close pooled connections on shutdown


# --8<-- [end:lifespan]


# --8<-- [start:dependency]
async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: Sessions = request.app.state.sessions
    async with sessions.begin() as session:  # commit, or roll back on error
        yield session


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: Sessions = request.app.state.read_sessions
    async with sessions() as session:  # never commits: closing rolls back
        yield session


# scope="function": the commit runs as soon as the endpoint returns,
# so a failed commit becomes the response instead of happening after it.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]
# --8<-- [end:dependency]


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


logger = logging.getLogger(__name__)
RETRY_AFTER = {"Retry-After": "1"}


def database_error_response(problem: DatabaseProblem) -> JSONResponse:
    fields = ", ".join(problem.columns) or problem.constraint
    match problem.kind:
        case Problem.UNIQUE:
            code, detail = 409, f"{fields} already exists"
        case Problem.FOREIGN_KEY:
            missing = "references a row that does not exist"
            code, detail = 409, f"{fields}: {missing}" if fields else missing
        case Problem.CHECK | Problem.NOT_NULL:
            code, detail = 422, f"{fields}: breaks a {problem.kind} constraint"
        case Problem.BUSY | Problem.UNAVAILABLE:
            return JSONResponse(
                {"detail": "database busy: retry shortly"},
                status_code=503,
                headers=RETRY_AFTER,
            )
        case _:
            logger.error("unclassified database error %s", problem.constraint)
            code, detail = 500, "Internal Server Error"
    return JSONResponse({"detail": detail}, status_code=code)


async def database_error(_: Request, exc: Exception) -> JSONResponse:
    """Registered once, in create_app, for DBAPIError."""
    if not isinstance(exc, DBAPIError):
        raise exc
    return database_error_response(classify(exc, Base.metadata))


# --8<-- [end:database_errors]


# --8<-- [start:app]
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "An item does not exist"},
    409: {"description": "Not enough stock"},
}
router = APIRouter()


# --8<-- [start:create_order]
@router.post("/orders", status_code=status.HTTP_201_CREATED, responses=ERRORS)
async def create_order_route(body: OrderIn, session: SessionDep) -> OrderOut:
    order = await place_order(session, body.customer, body.lines)  # raises
    return order_out(order)


# --8<-- [end:create_order]


def order_out(order: Order) -> OrderOut:
    return OrderOut(
        id=order.id,
        customer=order.customer,
        lines=[LineOut.model_validate(line) for line in order.lines],
        total=sum(
            (line.unit_price * line.quantity for line in order.lines),
            Decimal(0),
        ),
    )


def create_app(database_url: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.state.database_url = database_url
    app.include_router(router)
    app.include_router(naive_router)
    not_found, conflict = reply_with(404), reply_with(409)
    app.add_exception_handler(UnknownItemError, not_found)
    app.add_exception_handler(OutOfStockError, conflict)
    app.add_exception_handler(DBAPIError, database_error)
    app.add_exception_handler(RequestValidationError, reply_422_without_input)
    return app


def reply_with(
    status_code: int,
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            status_code=status_code, content={"detail": str(exc)}
        )

    return handler


async def reply_422_without_input(_: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own handler echoes the input, and NaN or a lone surrogate
    # cannot be written as JSON: that 422 would become a 500.
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {"type": e["type"], "loc": e["loc"], "msg": e["msg"]} for e in errors
    ]
    return JSONResponse(status_code=422, content={"detail": detail})


# --8<-- [end:app]


# --8<-- [start:returned_error]
naive_router = APIRouter(prefix="/naive")


@naive_router.post(
    "/orders", status_code=201, response_model=OrderOut, responses=ERRORS
)
async def create_order_returning_errors(
    body: OrderIn, session: SessionDep
) -> OrderOut | JSONResponse:
    try:
        order = await place_order(session, body.customer, body.lines)
    except OutOfStockError as exc:  # answered, not raised: nothing rolls back
        return JSONResponse({"detail": str(exc)}, status.HTTP_409_CONFLICT)
    return order_out(order)


# --8<-- [end:returned_error]


# --8<-- [start:demo_returned_error]
async def demo_returned_error(app: FastAPI) -> None:
    sessions, read_sessions = app.state.sessions, app.state.read_sessions
    nib = await add_item(sessions, "Nib", "2.00", stock=10)
    ink = await add_item(sessions, "Inkpot", "9.00", stock=1)
    lines = [{"item_id": nib, "quantity": 2}, {"item_id": ink, "quantity": 3}]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for url in ("/naive/orders", "/orders"):
            before = await stock_of(read_sessions, nib)
            reply = await c.post(url, json={"customer": "Ivy", "lines": lines})
            taken = before - await stock_of(read_sessions, nib)
            print(url, reply.status_code, "| nibs taken:", taken)
            #> /naive/orders 409 | nibs taken: 2
            #> /orders 409 | nibs taken: 0


# --8<-- [end:demo_returned_error]


# --8<-- [start:demo_http]
def describe(body: dict[str, Any]) -> object:
    if "detail" not in body:
        return {"lines": len(body["lines"]), "total": body["total"]}
    detail = body["detail"]
    return detail if isinstance(detail, str) else detail[0]["msg"]


async def demo_http(app: FastAPI) -> None:
    mug = await add_item(app.state.sessions, "Mug", "8.00", stock=2)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for lines in (
            [{"item_id": mug, "quantity": 1}, {"item_id": mug, "quantity": 1}],
            [{"item_id": 999, "quantity": 1}],
            [{"item_id": mug, "quantity": 1}],
            [{"item_id": mug, "quantity": 0}],
        ):
            body = {"customer": "Hal", "lines": lines}
            reply = await c.post("/orders", json=body)
            print(reply.status_code, describe(reply.json()))
            #> 201 {'lines': 2, 'total': '16.00'}
            #> 404 item 999 does not exist
            #> 409 not enough stock for item 10
            #> 422 Input should be greater than or equal to 1


# --8<-- [end:demo_http]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await demo_naive_oversell(f"sqlite+aiosqlite:///{tmp}/naive.db")

        app = create_app(f"sqlite+aiosqlite:///{tmp}/shop.db")
        async with lifespan(app):
            shop = app.state.sessions, app.state.read_sessions
            await demo_no_oversell(*shop)
            await demo_begin(*shop)
            await demo_all_or_nothing(*shop)
            await demo_price(*shop)
            await demo_savepoint(*shop)
            await demo_no_savepoint(*shop)
            await demo_sqlite_quirk(f"sqlite+aiosqlite:///{tmp}/quirk.db")
            await demo_returned_error(app)
            await demo_http(app)


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

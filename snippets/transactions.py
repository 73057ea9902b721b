"""Transactions: an order, its lines and the stock, all or nothing.

Run it: python -m snippets.transactions
"""

# --8<-- [start:imports]
import asyncio
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Numeric,
    String,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import DBAPIConnection, DBAPICursor
from sqlalchemy.exc import IntegrityError, InvalidRequestError
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

# --8<-- [end:imports]


# --8<-- [start:models]
class Base(DeclarativeBase):
    pass


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


# --8<-- [start:schemas]
def no_nul(text: str) -> str:
    if "\x00" in text:  # PostgreSQL cannot store it in text: a 422, not a 500
        raise ValueError("NUL characters are not allowed")
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


class UnknownItem(OrderError):
    def __init__(self, item_id: int) -> None:
        super().__init__(f"item {item_id} does not exist")


class OutOfStock(OrderError):
    def __init__(self, item_id: int) -> None:
        super().__init__(f"not enough stock for item {item_id}")


# --8<-- [end:errors]


# --8<-- [start:naive_engine]
def create_default_engine(url: str) -> AsyncEngine:
    # What most tutorials write (pool_size: one connection per order below).
    return create_async_engine(url, pool_size=20)


# --8<-- [end:naive_engine]


# --8<-- [start:naive_order]
async def place_order_naive(
    session: AsyncSession, customer: str, lines: list[LineIn]
) -> Order:
    """Read the stock, check it, write the new value: read-check-write."""
    order = Order(customer=customer, lines=[])
    for line in lines:
        item = await session.get(Item, line.item_id)
        if item is None:
            raise UnknownItem(line.item_id)
        if item.stock < line.quantity:
            raise OutOfStock(line.item_id)
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
Sessions = async_sessionmaker[AsyncSession]


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


async def count(sessions: Sessions, model: type[Base]) -> int:
    async with sessions() as session:
        total = await session.scalar(select(func.count()).select_from(model))
        return int(total or 0)


# --8<-- [end:helpers]


# --8<-- [start:demo_naive_oversell]
async def demo_naive_oversell(engine: AsyncEngine) -> None:
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


# --8<-- [end:demo_naive_oversell]


# --8<-- [start:engine]
def create_engine(url: str) -> AsyncEngine:
    if not url.startswith("sqlite"):
        return create_async_engine(url)
    # One writer at a time: a small pool queues the others in asyncio, which
    # wakes them at once, rather than in SQLite's busy handler, which sleeps.
    engine = create_async_engine(url, pool_size=5, max_overflow=0)
    event.listen(engine.sync_engine, "connect", on_sqlite_connect)
    event.listen(engine.sync_engine, "begin", begin_immediate)
    return engine


def on_sqlite_connect(conn: DBAPIConnection, _: ConnectionPoolEntry) -> None:
    # Stop the driver from sending BEGIN itself (it would do it late, and
    # never before a SAVEPOINT): SQLAlchemy's "begin" event does it instead.
    conn.isolation_level = None
    cursor = conn.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA busy_timeout = 5000")  # wait up to 5 s for a lock
    cursor.close()


def begin_immediate(conn: Connection) -> None:
    # Take the write lock when the transaction starts, so a transaction that
    # reads, then writes, waits for its turn instead of failing.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_session_factory(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)


# --8<-- [end:engine]


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
    raise UnknownItem(item_id) if exists is None else OutOfStock(item_id)


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
        .with_for_update()  # SQLite ignores it: BEGIN IMMEDIATE locked all
    )
    items = {item.id: item for item in await session.scalars(query)}
    for item_id, quantity in wanted.items():
        if item_id not in items:
            raise UnknownItem(item_id)
        if items[item_id].stock < quantity:
            raise OutOfStock(item_id)
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
async def demo_no_oversell(sessions: Sessions) -> None:
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
    #> Counter({'OutOfStock': 15, 'placed': 5})
    print("desks sold:", await count(sessions, OrderLine), "of 5")
    #> desks sold: 5 of 5
    print("stock left:", await stock_of(sessions, desk))
    #> stock left: 0


# --8<-- [end:demo_no_oversell]


# --8<-- [start:seed_begin]
async def place_order_seed_style(
    session: AsyncSession, customer: str, lines: list[LineIn]
) -> Order:
    async with session.begin():  # the seed: the data layer begins and commits
        return await place_order(session, customer, lines)


# --8<-- [end:seed_begin]


# --8<-- [start:demo_begin]
async def demo_begin(sessions: Sessions) -> None:
    chair = await add_item(sessions, "Chair", "45.00", stock=3)
    lines = [LineIn(item_id=chair, quantity=1)]
    async with sessions() as session:
        await session.get(
            Item, chair
        )  # any query first: the session autobegins
        try:
            await place_order_seed_style(session, "Bob", lines)
        except InvalidRequestError as exc:
            print(short(exc))
            #> A transaction is already begun on this Session.

    async with sessions.begin() as session:  # the caller owns the transaction
        await session.get(Item, chair)
        order = await place_order(session, "Bob", lines)
    print("order", order.id, "chairs left:", await stock_of(sessions, chair))
    #> order 6 chairs left: 2


# --8<-- [end:demo_begin]


# --8<-- [start:demo_all_or_nothing]
async def demo_all_or_nothing(sessions: Sessions) -> None:
    pen = await add_item(sessions, "Pen", "1.50", stock=10)
    ink = await add_item(sessions, "Ink", "4.00", stock=1)
    orders_before = await count(sessions, Order)
    try:
        async with sessions.begin() as session:
            lines = [
                LineIn(item_id=pen, quantity=2),
                LineIn(item_id=ink, quantity=3),
            ]
            await place_order(
                session, "Cy", lines
            )  # pens taken, then ink fails
    except OutOfStock as exc:
        print(exc)
        #> not enough stock for item 4
    print(
        "pens:",
        await stock_of(sessions, pen),
        "ink:",
        await stock_of(sessions, ink),
    )
    #> pens: 10 ink: 1
    print("new orders:", await count(sessions, Order) - orders_before)
    #> new orders: 0

    try:
        async with sessions.begin() as session:
            one_ink_twice = [LineIn(item_id=ink, quantity=1)] * 2
            await place_order(session, "Cy", one_ink_twice)  # 2 wanted, 1 left
    except OutOfStock as exc:
        print(exc)
        #> not enough stock for item 4


# --8<-- [end:demo_all_or_nothing]


# --8<-- [start:demo_price]
async def demo_price(sessions: Sessions) -> None:
    cup = await add_item(sessions, "Cup", "6.50", stock=10)
    async with sessions.begin() as session:
        order = await place_order(
            session, "Dee", [LineIn(item_id=cup, quantity=2)]
        )
    async with sessions.begin() as session:
        await session.execute(
            update(Item).where(Item.id == cup).values(price=Decimal("7.00"))
        )
    async with sessions() as session:
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
async def demo_savepoint(sessions: Sessions) -> None:
    pad = await add_item(sessions, "Pad", "3.00", stock=5)
    for customer in ("Eve", "Fay"):
        async with sessions.begin() as session:
            lines = [LineIn(item_id=pad, quantity=1)]
            order = await place_order(session, customer, lines)
            redeemed = await redeem_coupon(session, order, "WELCOME")
        print(customer, "order", order.id, "coupon redeemed:", redeemed)
        #> Eve order 8 coupon redeemed: True
        #> Fay order 9 coupon redeemed: False
    print("pads left:", await stock_of(sessions, pad))
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
async def demo_no_savepoint(sessions: Sessions) -> None:
    mat = await add_item(sessions, "Mat", "9.00", stock=5)
    orders_before = await count(sessions, Order)
    async with sessions.begin() as session:  # exits without an error...
        order = await place_order(
            session, "Gus", [LineIn(item_id=mat, quantity=1)]
        )
        redeemed = await redeem_coupon_without_savepoint(
            session, order, "WELCOME"
        )
    print("order", order.id, "coupon redeemed:", redeemed)
    #> order 10 coupon redeemed: False
    print("new orders:", await count(sessions, Order) - orders_before)
    #> new orders: 0
    print("mats left:", await stock_of(sessions, mat))
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


# --8<-- [start:app]
@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_engine(app.state.database_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    app.state.sessions = create_session_factory(engine)
    yield
    await engine.dispose()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: Sessions = request.app.state.sessions
    async with sessions.begin() as session:  # commit, or roll back on error
        yield session


Session = Annotated[AsyncSession, Depends(get_session, scope="function")]
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "An item does not exist"},
    409: {"description": "Not enough stock"},
}


def create_app(database_url: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.state.database_url = database_url
    app.add_exception_handler(
        UnknownItem, reply_with(status.HTTP_404_NOT_FOUND)
    )
    app.add_exception_handler(OutOfStock, reply_with(status.HTTP_409_CONFLICT))
    app.add_exception_handler(RequestValidationError, reply_422_without_input)

    @app.post("/orders", status_code=status.HTTP_201_CREATED, responses=ERRORS)
    async def create_order(body: OrderIn, session: Session) -> OrderOut:
        order = await place_order(session, body.customer, body.lines)
        return OrderOut(
            id=order.id,
            customer=order.customer,
            lines=[LineOut.model_validate(line) for line in order.lines],
            total=sum(
                (line.unit_price * line.quantity for line in order.lines),
                Decimal(0),
            ),
        )

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
            #> 409 not enough stock for item 8
            #> 422 Input should be greater than or equal to 1


# --8<-- [end:demo_http]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        naive = create_default_engine(f"sqlite+aiosqlite:///{tmp}/naive.db")
        await demo_naive_oversell(naive)
        await naive.dispose()

        app = create_app(f"sqlite+aiosqlite:///{tmp}/shop.db")
        async with lifespan(app):
            await demo_no_oversell(app.state.sessions)
            await demo_begin(app.state.sessions)
            await demo_all_or_nothing(app.state.sessions)
            await demo_price(app.state.sessions)
            await demo_savepoint(app.state.sessions)
            await demo_no_savepoint(app.state.sessions)
            await demo_sqlite_quirk(f"sqlite+aiosqlite:///{tmp}/quirk.db")
            await demo_http(app)


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

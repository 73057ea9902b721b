"""Relationships: load, write, filter and soft-delete across tables.

Run it: python -m snippets.relationships
"""

# --8<-- [start:imports]
import asyncio
import gc
import logging
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Depends, FastAPI, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    MetaData,
    Numeric,
    Select,
    String,
    Table,
    TypeDecorator,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, InvalidRequestError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncAttrs,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    ORMExecuteState,
    Session,
    contains_eager,
    joinedload,
    lazyload,
    mapped_column,
    relationship,
    selectinload,
    with_loader_criteria,
)
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


Sessions = async_sessionmaker[AsyncSession]


# --8<-- [end:engine]


# --8<-- [start:utc_datetime]
class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one")
        return value.astimezone(UTC)  # SQLite keeps no offset: store UTC

    def process_result_value(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite: we stored UTC, say so
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# --8<-- [end:utc_datetime]


# --8<-- [start:models]
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# AsyncAttrs adds `awaitable_attrs`: a lazy load you ask for with await.
class Base(AsyncAttrs, DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class SoftDeleted:
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


product_tags = Table(
    "product_tags",
    Base.metadata,
    Column("product_id", ForeignKey("products.id"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id"), primary_key=True),
)


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)


class Product(SoftDeleted, Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=func.now(), onupdate=func.now()
    )
    tags: Mapped[list[Tag]] = relationship(secondary=product_tags, lazy="raise")


class Customer(SoftDeleted, Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # Every order, deleted or not: what a delete or a restore works on.
    orders: Mapped[list["Order"]] = relationship(
        back_populates="customer", lazy="raise"
    )


# --8<-- [start:order_model]
class Order(SoftDeleted, Base):
    __tablename__ = "orders"
    __table_args__ = (Index(None, "customer_id"),)
    # --8<-- [start:eager_defaults]
    # Fetch what the database sets (RETURNING) at every flush, UPDATEs too.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012
    # --8<-- [end:eager_defaults]

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    note: Mapped[str] = mapped_column(String(200), default="")
    # Set by the database: on INSERT, and again by every UPDATE.
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=func.now(), onupdate=func.now()
    )
    customer: Mapped[Customer] = relationship(
        back_populates="orders", lazy="raise"
    )
    # The association object: a line links an order to a product and
    # carries data of its own (quantity, the price paid).
    lines: Mapped[list["OrderLine"]] = relationship(
        back_populates="order",
        cascade="all, delete-orphan",  # a line lives and dies with its order
        order_by="OrderLine.product_id",
        lazy="raise",
    )


# --8<-- [end:order_model]
class OrderLine(Base):
    __tablename__ = "order_lines"

    order_id: Mapped[int] = mapped_column(
        ForeignKey("orders.id"), primary_key=True
    )
    product_id: Mapped[int] = mapped_column(
        ForeignKey("products.id"), primary_key=True, index=True
    )
    quantity: Mapped[int]
    unit_price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    order: Mapped[Order] = relationship(back_populates="lines", lazy="raise")
    product: Mapped[Product] = relationship(lazy="raise")


# --8<-- [end:models]


# --8<-- [start:count_statements]
@contextmanager
def counted(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every SELECT the engine sends while the block runs."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statement: str = args[2]
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def short(exc: Exception) -> str:
    """The first line of an error message, without SQLAlchemy's doc link."""
    return str(exc).splitlines()[0].split(" (Background on")[0]


# --8<-- [end:count_statements]


# --8<-- [start:seed]
async def seed_orders(sessions: Sessions, orders: int = 50) -> None:
    """Three products (two tagged), two customers, `orders` orders."""
    async with sessions.begin() as session:
        sale, desk = Tag(name="sale"), Tag(name="desk")
        products = [
            Product(name="Lamp", price=Decimal("20"), tags=[sale, desk]),
            Product(name="Chair", price=Decimal("45"), tags=[desk]),
            Product(name="Mug", price=Decimal("8")),
        ]
        ann, bo = Customer(name="Ann"), Customer(name="bo")
        session.add_all([*products, ann, bo])
        for n in range(orders):
            bought = [products[n % 3], products[(n + 1) % 3]]
            lines = [
                OrderLine(product=p, quantity=1 + n % 4, unit_price=p.price)
                for p in bought
            ]
            session.add(Order(customer=ann if n % 2 else bo, lines=lines))


# --8<-- [end:seed]


# --8<-- [start:live_session]
class LiveSession(Session):
    """Queries skip soft-deleted rows; relationships load what they point to."""


@event.listens_for(LiveSession, "do_orm_execute")
def hide_deleted_rows(state: ORMExecuteState) -> None:
    if (
        state.is_select
        and not state.is_column_load
        and not state.is_relationship_load
        and not state.execution_options.get("include_deleted", False)
    ):
        # --8<-- [start:top_level_only]
        # Only what the query asks for: an order line's product loads even
        # when deleted (history); a list of products hides it.
        for cls in soft_deleted_classes_asked_for(state):
            live = cls.deleted_at.is_(None)
            state.statement = state.statement.options(
                with_loader_criteria(cls, live, propagate_to_loaders=False)
            )
        # --8<-- [end:top_level_only]


def soft_deleted_classes_asked_for(
    state: ORMExecuteState,
) -> set[type[SoftDeleted]]:
    """Entities in the SELECT list, and tables named in select_from()."""
    statement = state.statement
    froms = statement.get_final_froms() if isinstance(statement, Select) else []
    mappers = [
        *state.all_mappers,
        *(m for m in Base.registry.mappers if m.local_table in froms),
    ]
    return {m.class_ for m in mappers if issubclass(m.class_, SoftDeleted)}


def create_live_session_factory(engine: AsyncEngine) -> Sessions:
    # The foundation's factory, with the filtering session class.
    return async_sessionmaker(
        engine, expire_on_commit=False, sync_session_class=LiveSession
    )


# --8<-- [end:live_session]


# --8<-- [start:naive_loading]
async def order_totals_naive(session: AsyncSession) -> dict[int, int]:
    """Units per order: one query for the orders, then one per order."""
    # lazyload(): the default strategy most models have, for this query
    query = select(Order).options(lazyload(Order.lines)).order_by(Order.id)
    totals = {}
    for order in await session.scalars(query):
        lines = await order.awaitable_attrs.lines  # a lazy load, awaited
        totals[order.id] = sum(line.quantity for line in lines)
    return totals


# --8<-- [end:naive_loading]


# --8<-- [start:eager_loading]
async def orders_with_lines(session: AsyncSession) -> Sequence[Order]:
    """Orders, then all their lines in one more query (WHERE ... IN)."""
    query = select(Order).options(selectinload(Order.lines)).order_by(Order.id)
    return (await session.scalars(query)).all()


async def orders_with_lines_joined(session: AsyncSession) -> Sequence[Order]:
    """Orders and their lines in one query: a row per line."""
    query = select(Order).options(joinedload(Order.lines)).order_by(Order.id)
    result = await session.scalars(query)
    return result.unique().all()  # one Order per order, not one per line


# --8<-- [end:eager_loading]


# --8<-- [start:contains_eager]
async def orders_buying(session: AsyncSession, product: str) -> Sequence[Order]:
    """Orders with a line for `product`, each holding only that line."""
    query = (
        select(Order)
        .join(Order.lines)
        .join(OrderLine.product)
        .where(Product.name == product)
        .options(contains_eager(Order.lines).contains_eager(OrderLine.product))
        .order_by(Order.id)
        # the lines collection is filled from this query's rows, even for
        # orders this session already holds with all their lines
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(query)).unique().all()


# --8<-- [end:contains_eager]


# --8<-- [start:server_values]
# --8<-- [start:naive_server_value]
async def rename_product(
    session: AsyncSession, product_id: int, name: str
) -> Product:
    product = await session.get_one(Product, product_id)
    product.name = name
    await session.flush()  # UPDATE ... SET updated_at=now(): expired after
    return product


# --8<-- [end:naive_server_value]
# --8<-- [start:server_value_fixes]
async def rename_product_refreshed(
    session: AsyncSession, product_id: int, name: str
) -> Product:
    product = await rename_product(session, product_id, name)
    await session.refresh(product, ["updated_at"])  # one more SELECT
    return product


async def rename_product_returning(
    session: AsyncSession, product_id: int, name: str
) -> datetime:
    query = (
        update(Product)
        .where(Product.id == product_id)
        .values(name=name)
        .returning(Product.updated_at)  # onupdate applies to update() too
    )
    return (await session.execute(query)).scalar_one()


# --8<-- [end:server_value_fixes]
# --8<-- [end:server_values]


# --8<-- [start:schemas]
Id = Annotated[int, Field(ge=1, le=2**31 - 1)]


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: Id
    quantity: int = Field(ge=1, le=1000)


def distinct_products(lines: list[LineIn]) -> list[LineIn]:
    ids = [line.product_id for line in lines]
    if len(set(ids)) != len(ids):
        raise ValueError("each product may appear on one line only")
    return lines


Lines = Annotated[
    list[LineIn],
    Field(min_length=1, max_length=50),
    AfterValidator(distinct_products),
]


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: Id
    lines: Lines


# --8<-- [end:schemas]


# --8<-- [start:naive_writes]
async def create_order_naive(
    sessions: Sessions, customer_id: int, lines: Sequence[LineIn]
) -> int:
    async with sessions.begin() as session:  # commit the order for its id
        order = Order(customer_id=customer_id)
        session.add(order)
    async with sessions.begin() as session:  # then the lines
        for line in lines:
            price = await session.scalar(
                select(Product.price).where(Product.id == line.product_id)
            )
            session.add(
                OrderLine(
                    order_id=order.id,
                    product_id=line.product_id,
                    quantity=line.quantity,
                    unit_price=price,
                )
            )
    return order.id


async def replace_lines_naive(
    session: AsyncSession, order: Order, lines: Sequence[LineIn]
) -> None:
    prices = await live_prices(session, [line.product_id for line in lines])
    order.lines.clear()  # delete every line ...
    order.lines.extend(  # ... and insert the new ones
        OrderLine(
            product_id=line.product_id,
            quantity=line.quantity,
            unit_price=prices[line.product_id],
        )
        for line in lines
    )
    await session.flush()


# --8<-- [end:naive_writes]


# --8<-- [start:errors]
class ShopError(Exception):
    """Base class: one table maps each subclass to a status code."""


class NotFoundError(ShopError):
    def __init__(self, kind: str, *ids: int) -> None:
        self.ids = sorted(ids)
        super().__init__(f"unknown or deleted {kind}: {join_ids(self.ids)}")


class CustomerHasOrdersError(ShopError):
    def __init__(self, customer_id: int, orders: int) -> None:
        super().__init__(
            f"customer {customer_id} has {orders} live orders:"
            " delete them, or cascade=true"
        )


def join_ids(ids: Sequence[int]) -> str:
    return ", ".join(map(str, ids))


# --8<-- [end:errors]


# --8<-- [start:writes]
async def live_prices(
    session: AsyncSession, product_ids: Sequence[int]
) -> dict[int, Decimal]:
    """Today's price of each product, or NotFoundError naming the missing."""
    query = select(Product.id, Product.price).where(Product.id.in_(product_ids))
    prices = {row.id: row.price for row in await session.execute(query)}
    missing = set(product_ids) - prices.keys()
    if missing:
        raise NotFoundError("products", *missing)
    return prices


async def create_order_with_lines(
    session: AsyncSession, customer_id: int, lines: Sequence[LineIn]
) -> Order:
    """A new order and its lines, in the caller's transaction."""
    customer = select(Customer.id).where(Customer.id == customer_id)
    if await session.scalar(customer) is None:  # deleted ones are filtered
        raise NotFoundError("customers", customer_id)
    prices = await live_prices(session, [line.product_id for line in lines])
    order = Order(customer_id=customer_id)
    order.lines = [
        OrderLine(
            product_id=line.product_id,
            quantity=line.quantity,
            unit_price=prices[line.product_id],
        )
        for line in lines
    ]
    session.add(order)
    await session.flush()  # the INSERTs: the order first, then its lines
    return order


async def replace_lines(
    session: AsyncSession, order_id: int, lines: Sequence[LineIn]
) -> Order:
    """Make the order's lines exactly `lines`: add, change and remove."""
    order = await get_order_with_lines(session, order_id)
    kept = {line.product_id: line for line in order.lines}
    new_ids = [line.product_id for line in lines if line.product_id not in kept]
    prices = await live_prices(session, new_ids) if new_ids else {}
    replacement = []
    for line in lines:
        row = kept.get(line.product_id) or OrderLine(
            product_id=line.product_id, unit_price=prices[line.product_id]
        )
        row.quantity = line.quantity  # a kept line keeps the price paid
        replacement.append(row)
    order.lines = replacement  # delete-orphan: lines left out are deleted
    await session.flush()
    return order


# --8<-- [end:writes]


# --8<-- [start:read_order]
async def get_order_with_lines(session: AsyncSession, order_id: int) -> Order:
    """A live order with its customer, lines and their products."""
    query = (
        select(Order)
        .where(Order.id == order_id)
        .options(
            joinedload(Order.customer),  # one row: join it
            selectinload(Order.lines).joinedload(OrderLine.product),
        )
        # as stored, in the relationship's order, even if this session
        # holds the order already (just created, or just changed)
        .execution_options(populate_existing=True)
    )
    order = await session.scalar(query)
    if order is None:
        raise NotFoundError("orders", order_id)
    return order


# --8<-- [end:read_order]


# --8<-- [start:across]
# The whitelist: a name the client sends -> the ORDER BY it means.
OrderSort = Literal["id", "-id", "customer", "-customer"]
ORDER_SORTS: dict[OrderSort, tuple[ColumnElement[Any], ...]] = {
    "id": (Order.id.asc(),),
    "-id": (Order.id.desc(),),
    "customer": (func.lower(Customer.name).asc(), Order.id.asc()),
    "-customer": (func.lower(Customer.name).desc(), Order.id.desc()),
}


class OrderQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: str | None = Field(None, min_length=1, max_length=100)
    product: str | None = Field(None, min_length=1, max_length=100)
    tag: str | None = Field(None, min_length=1, max_length=50)
    sort: OrderSort = "id"
    limit: int = Field(20, ge=1, le=100)


def order_conditions(f: OrderQuery) -> list[ColumnElement[bool]]:
    """EXISTS subqueries: an order matches once, however many lines match."""
    conditions = []
    if f.customer is not None:  # many-to-one: has()
        conditions.append(Order.customer.has(Customer.name == f.customer))
    if f.product is not None:  # one-to-many: any()
        bought = OrderLine.product.has(Product.name == f.product)
        conditions.append(Order.lines.any(bought))
    if f.tag is not None:  # many-to-many, two steps away
        tagged = OrderLine.product.has(Product.tags.any(Tag.name == f.tag))
        conditions.append(Order.lines.any(tagged))
    return conditions


# --8<-- [end:across]


# --8<-- [start:summaries]
class OrderSummary(BaseModel):
    """A list row: what a list shows, computed by the database."""

    id: int
    customer: str
    lines: int
    total: Decimal


async def list_orders(
    session: AsyncSession, q: OrderQuery
) -> list[OrderSummary]:
    """One query, no lines loaded: a row per order with its totals."""
    query = (
        select(
            Order.id,
            Customer.name.label("customer"),
            func.count(OrderLine.product_id).label("lines"),
            func.sum(OrderLine.quantity * OrderLine.unit_price).label("total"),
        )
        .join(Order.customer)
        .join(Order.lines)
        .where(*order_conditions(q))
        .group_by(Order.id, Customer.name)
        .order_by(*ORDER_SORTS[q.sort])
        .limit(q.limit)
    )
    rows = await session.execute(query)
    return [OrderSummary.model_validate(row._asdict()) for row in rows]


class LineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    product_id: int
    product: str
    quantity: int
    unit_price: Decimal


class OrderDetail(BaseModel):
    """One order, with its lines: what a detail page shows."""

    id: int
    customer: str
    lines: list[LineOut]

    @classmethod
    def of(cls, order: Order) -> "OrderDetail":
        lines = [
            LineOut(
                product_id=line.product_id,
                product=line.product.name,
                quantity=line.quantity,
                unit_price=line.unit_price,
            )
            for line in order.lines
        ]
        return cls(id=order.id, customer=order.customer.name, lines=lines)


# --8<-- [end:summaries]


# --8<-- [start:soft_delete_parent]
async def soft_delete_customer(
    session: AsyncSession, customer_id: int, *, cascade: bool
) -> None:
    """Soft-delete a customer; its live orders go too, or it is refused."""
    query = (
        select(Customer)
        .where(Customer.id == customer_id)
        .options(selectinload(Customer.orders))
    )
    customer = await session.scalar(query)
    if customer is None:
        raise NotFoundError("customers", customer_id)
    live = [order for order in customer.orders if order.deleted_at is None]
    if live and not cascade:
        raise CustomerHasOrdersError(customer_id, len(live))
    now = utcnow()
    customer.deleted_at = now
    for order in live:
        order.deleted_at = now  # the same stamp: restore finds them by it


async def restore_deleted_customer(
    session: AsyncSession, customer_id: int
) -> Customer:
    """Bring back a customer and what its delete took, nothing more."""
    query = (
        select(Customer)
        .where(Customer.id == customer_id, Customer.deleted_at.is_not(None))
        .options(selectinload(Customer.orders))
        .execution_options(include_deleted=True)
    )
    customer = await session.scalar(query)
    if customer is None:
        raise NotFoundError("deleted customers", customer_id)
    for order in customer.orders:
        if order.deleted_at == customer.deleted_at:
            order.deleted_at = None
    customer.deleted_at = None
    return customer


async def soft_delete_product(session: AsyncSession, product_id: int) -> None:
    product = await session.scalar(
        select(Product).where(Product.id == product_id)
    )
    if product is None:
        raise NotFoundError("products", product_id)
    product.deleted_at = utcnow()


# --8<-- [end:soft_delete_parent]


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


# --8<-- [start:app]
router = APIRouter()


@router.get("/orders", summary="List orders, with their totals")
async def list_orders_route(
    q: Annotated[OrderQuery, Query()], session: ReadSessionDep
) -> list[OrderSummary]:
    return await list_orders(session, q)


@router.get("/orders/{order_id}", summary="One order, with its lines")
async def read_order_route(
    order_id: Id, session: ReadSessionDep
) -> OrderDetail:
    return OrderDetail.of(await get_order_with_lines(session, order_id))


@router.post("/orders", status_code=201, summary="Create an order and lines")
async def create_order_route(
    order: OrderIn, session: SessionDep
) -> OrderDetail:
    created = await create_order_with_lines(
        session, order.customer_id, order.lines
    )
    return OrderDetail.of(await get_order_with_lines(session, created.id))


@router.put("/orders/{order_id}/lines", summary="Replace an order's lines")
async def replace_lines_route(
    order_id: Id, lines: Lines, session: SessionDep
) -> OrderDetail:
    await replace_lines(session, order_id, lines)
    return OrderDetail.of(await get_order_with_lines(session, order_id))


@router.delete("/customers/{customer_id}", status_code=204)
async def delete_customer_route(
    customer_id: Id, session: SessionDep, cascade: bool = False
) -> None:
    await soft_delete_customer(session, customer_id, cascade=cascade)


@router.post("/customers/{customer_id}/restore", status_code=204)
async def restore_customer_route(customer_id: Id, session: SessionDep) -> None:
    await restore_deleted_customer(session, customer_id)


@router.delete("/products/{product_id}", status_code=204)
async def delete_product_route(product_id: Id, session: SessionDep) -> None:
    await soft_delete_product(session, product_id)


@asynccontextmanager
async def shop_lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_engine(app.state.database_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)  # demo: see Migrations
    reads = engine.execution_options(sqlite_begin="DEFERRED")
    app.state.engine = engine  # the demos count its statements
    app.state.sessions = create_live_session_factory(engine)
    app.state.read_sessions = create_live_session_factory(reads)
    yield
    await engine.dispose()


STATUS: dict[type[ShopError], int] = {
    NotFoundError: status.HTTP_404_NOT_FOUND,
    CustomerHasOrdersError: status.HTTP_409_CONFLICT,
}


async def shop_error(_: Request, exc: Exception) -> JSONResponse:
    code = next(c for kind, c in STATUS.items() if isinstance(exc, kind))
    return JSONResponse({"detail": str(exc)}, status_code=code)


def create_app(database_url: str) -> FastAPI:
    app = FastAPI(lifespan=shop_lifespan)
    app.state.database_url = database_url
    app.add_exception_handler(ShopError, shop_error)
    app.include_router(router)
    return app


# --8<-- [end:app]


# --8<-- [start:naive_filter]
class NaiveLiveSession(Session):
    """The Soft delete page's filter: every entity, every load."""


@event.listens_for(NaiveLiveSession, "do_orm_execute")
def hide_deleted_everywhere(state: ORMExecuteState) -> None:
    if state.is_select and not state.is_column_load:
        state.statement = state.statement.options(
            with_loader_criteria(
                SoftDeleted,
                lambda cls: cls.deleted_at.is_(None),
                include_aliases=True,
            )
        )


# --8<-- [end:naive_filter]


# --8<-- [start:demo_loading]
async def demo_loading(engine: AsyncEngine, sessions: Sessions) -> None:
    loaders = (order_totals_naive, orders_with_lines, orders_with_lines_joined)
    for load in loaders:
        async with sessions() as session:
            with counted(engine) as selects:
                orders = await load(session)
            print(
                f"{load.__name__}: {len(orders)} orders, {len(selects)} SELECTs"
            )
            #> order_totals_naive: 50 orders, 51 SELECTs
            #> orders_with_lines: 50 orders, 2 SELECTs
            #> orders_with_lines_joined: 50 orders, 1 SELECTs

    async with sessions() as session:
        query = select(Order).options(joinedload(Order.lines))
        try:
            (await session.scalars(query)).all()  # no .unique()
        except InvalidRequestError as exc:
            print(short(exc)[:60] + "...")
            #> The unique() method must be invoked on this Result, as it co...
        order = (await session.scalars(select(Order).limit(1))).one()
        try:
            print(order.lines)
        except InvalidRequestError as exc:
            print(short(exc))
            #> 'Order.lines' is not available due to lazy='raise'

        with counted(engine) as selects:
            orders = await orders_buying(session, "Mug")
        lines = {len(order.lines) for order in orders}
        print(len(orders), "orders buying Mug, lines each:", lines)
        #> 33 orders buying Mug, lines each: {1}
        print("SELECTs:", len(selects))
        #> SELECTs: 1


# --8<-- [end:demo_loading]


# --8<-- [start:leftovers]
@contextmanager
def leftovers() -> Iterator[list[str]]:
    """What a failed implicit load reports besides its exception.

    Python warns about the driver coroutine SQLAlchemy made but could not
    await, and the pool may log the connection it had to discard. Both would
    reach stderr later, far from their cause: collect them here instead.
    """
    found: list[str] = []
    pool = logging.getLogger("sqlalchemy.pool")
    handler = Collect(found)
    pool.addHandler(handler)
    pool.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            yield found
            gc.collect()  # free the failed load's objects now
    finally:
        pool.removeHandler(handler)
        pool.propagate = True
    for warning in caught:
        if "was never awaited" in str(warning.message):
            found.append(str(warning.message))
        else:  # anything else is not ours to swallow
            warnings.warn_explicit(
                warning.message,
                warning.category,
                warning.filename,
                warning.lineno,
            )


class Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__()
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


# --8<-- [end:leftovers]


# --8<-- [start:demo_server_values]
async def demo_server_values(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        pen = Product(name="Pen", price=Decimal("2"))
        session.add(pen)
        await session.flush()  # INSERT ... RETURNING fetched updated_at
        print("after INSERT:", type(pen.updated_at).__name__)
        #> after INSERT: datetime

        pen = await rename_product(session, pen.id, "Blue pen")
        with leftovers():  # what the failed load leaves behind (see Sessions)
            try:
                print(pen.updated_at)  # expired by the UPDATE: a lazy load
            except SQLAlchemyError as exc:
                print(
                    "after UPDATE:",
                    type(getattr(exc, "orig", None) or exc).__name__,
                )
                #> after UPDATE: MissingGreenlet

        pen = await rename_product_refreshed(session, pen.id, "Red pen")
        print("refreshed:", type(pen.updated_at).__name__)
        #> refreshed: datetime
        stamp = await rename_product_returning(session, pen.id, "Green pen")
        print("returned:", type(stamp).__name__)
        #> returned: datetime

        order = (await session.scalars(select(Order).limit(1))).one()
        order.note = "gift wrap"
        await session.flush()  # eager_defaults: UPDATE ... RETURNING
        print("Order after UPDATE:", type(order.updated_at).__name__)
        #> Order after UPDATE: datetime


# --8<-- [end:demo_server_values]


# --8<-- [start:demo_writes]
async def demo_writes(sessions: Sessions) -> None:
    unknown = [
        LineIn(product_id=1, quantity=1),
        LineIn(product_id=99, quantity=1),
    ]
    try:
        await create_order_naive(sessions, 1, unknown)
    except DBAPIError as exc:
        print("naive: the lines failed:", type(exc).__name__)
        #> naive: the lines failed: IntegrityError
    async with sessions() as session:
        empty = select(Order.id).where(~Order.lines.any())
        print("orders without lines:", (await session.scalars(empty)).all())
        #> orders without lines: [51]

    try:
        async with sessions.begin() as session:
            await create_order_with_lines(session, 1, unknown)
    except NotFoundError as exc:
        print("fixed:", exc)
        #> fixed: unknown or deleted products: 99


async def demo_replace_lines(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        await session.execute(
            update(Product).where(Product.name == "Lamp").values(price=25)
        )  # a price rise, after orders 1 and 4 bought a Lamp at 20
    lamp_and_mug = [
        LineIn(product_id=1, quantity=5),  # Lamp: kept, quantity changed
        LineIn(product_id=3, quantity=1),  # Mug: added
    ]  # Chair (2): removed
    async with sessions.begin() as session:
        order = await get_order_with_lines(session, 1)
        await replace_lines_naive(session, order, lamp_and_mug)
    async with sessions.begin() as session:
        await replace_lines(session, 4, lamp_and_mug)
    async with sessions() as session:
        for order_id in (1, 4):
            order = await get_order_with_lines(session, order_id)
            print(
                [
                    (line.product.name, line.quantity, str(line.unit_price))
                    for line in order.lines
                ]
            )
            #> [('Lamp', 5, '25.00'), ('Mug', 1, '8.00')]
            #> [('Lamp', 5, '20.00'), ('Mug', 1, '8.00')]


# --8<-- [end:demo_writes]


# --8<-- [start:demo_history]
async def demo_history(engine: AsyncEngine, sessions: Sessions) -> None:
    async with sessions.begin() as session:
        await soft_delete_product(session, 2)  # the Chair leaves the catalogue
    naive = async_sessionmaker(engine, sync_session_class=NaiveLiveSession)
    for name, factory in (("naive", naive), ("fixed", sessions)):
        async with factory() as session:
            order = await get_order_with_lines(
                session, 2
            )  # bought a Chair and a Mug
            products = [
                line.product and line.product.name for line in order.lines
            ]
            print(f"{name}: order 2 bought {products}")
            #> naive: order 2 bought [None, 'Mug']
            #> fixed: order 2 bought ['Chair', 'Mug']
    async with sessions() as session:
        names = await session.scalars(select(Product.name).order_by(Product.id))
        print("catalogue:", names.all())
        #> catalogue: ['Lamp', 'Mug', 'Green pen']


# --8<-- [end:demo_history]


# --8<-- [start:demo_cascade]
async def demo_cascade(sessions: Sessions) -> None:
    async def live_orders_of(customer_id: int) -> int:
        async with sessions() as session:
            query = select(func.count(Order.id)).where(
                Order.customer_id == customer_id
            )
            return await session.scalar(query) or 0

    async with sessions.begin() as session:
        await session.execute(
            update(Order).where(Order.id == 51).values(deleted_at=utcnow())
        )  # the order with no lines, deleted earlier on its own
    print("Ann's live orders:", await live_orders_of(1))
    #> Ann's live orders: 25
    try:
        async with sessions.begin() as session:
            await soft_delete_customer(session, 1, cascade=False)
    except CustomerHasOrdersError as exc:
        print(exc)
        #> customer 1 has 25 live orders: delete them, or cascade=true
    async with sessions.begin() as session:
        await soft_delete_customer(session, 1, cascade=True)
    print("after the cascade:", await live_orders_of(1))
    #> after the cascade: 0
    async with sessions.begin() as session:
        await restore_deleted_customer(session, 1)
    print("after restore:", await live_orders_of(1), "(51 stays deleted)")
    #> after restore: 25 (51 stays deleted)


# --8<-- [end:demo_cascade]


# --8<-- [start:demo_api]
async def demo_api(app: FastAPI, engine: AsyncEngine) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        with counted(engine) as selects:
            page = await c.get("/orders?tag=desk&sort=-customer&limit=2")
        print(len(selects), "SELECT")
        #> 1 SELECT
        for row in page.json():
            print(row)
            #> {'id': 49, 'customer': 'bo', 'lines': 2, 'total': '65.00'}
            #> {'id': 47, 'customer': 'bo', 'lines': 2, 'total': '159.00'}
        order = await c.get("/orders/2")  # its Chair was deleted: still shown
        lines = order.json()["lines"]
        print([(line["product"], line["unit_price"]) for line in lines])
        #> [('Chair', '45.00'), ('Mug', '8.00')]
        chair = {"customer_id": 2, "lines": [{"product_id": 2, "quantity": 1}]}
        refused = await c.post("/orders", json=chair)  # but not for sale
        print(refused.status_code, refused.json())
        #> 404 {'detail': 'unknown or deleted products: 2'}


# --8<-- [end:demo_api]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(f"sqlite+aiosqlite:///{Path(tmp) / 'shop.db'}")
        async with shop_lifespan(app):
            sessions: Sessions = app.state.sessions
            engine: AsyncEngine = app.state.engine
            await seed_orders(sessions)
            await demo_loading(engine, sessions)
            await demo_server_values(sessions)
            await demo_writes(sessions)
            await demo_replace_lines(sessions)
            await demo_history(engine, sessions)
            await demo_cascade(sessions)
            await demo_api(app, engine)


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

"""Sorting: a whitelist of fields, several keys, a tiebreaker, NULLs and case.

Run it: python -m snippets.sorting
"""

# --8<-- [start:imports]
import asyncio
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import httpx
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    ColumnElement,
    Connection,
    ForeignKey,
    Index,
    MetaData,
    Select,
    SQLColumnExpression,
    String,
    and_,
    desc,
    event,
    false,
    func,
    or_,
    select,
)
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.pool import ConnectionPoolEntry

# --8<-- [end:imports]


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


class Supplier(Base):
    __tablename__ = "suppliers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    category: Mapped[str] = mapped_column(String(50))
    price: Mapped[int | None]  # in cents; NULL: not priced yet
    cost_price: Mapped[int]  # what we pay: never shown to clients
    supplier_id: Mapped[int | None] = mapped_column(ForeignKey("suppliers.id"))
    supplier: Mapped[Supplier | None] = relationship(lazy="raise")


class ProductOut(BaseModel):
    """The public view: cost_price and supplier_id are not in it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    category: str
    price: int | None


# --8<-- [end:models]


# --8<-- [start:data]
CATALOGUE = [  # name, category, price, cost_price
    ("Banana", "fruit", 80, 60),
    ("apple", "fruit", 120, 30),
    ("cherry", "fruit", None, 90),
    ("Apricot", "fruit", 120, 100),
    ("bread", "bakery", 250, 40),
]


async def add_catalogue(session: AsyncSession) -> None:
    session.add_all(
        Product(name=name, category=category, price=price, cost_price=cost)
        for name, category, price, cost in CATALOGUE
    )


# --8<-- [end:data]


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
async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: Sessions = request.app.state.read_sessions
    async with sessions() as session:  # never commits: closing rolls back
        yield session


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]
# --8<-- [end:dependency]


# --8<-- [start:app_setup]
def create_app(database_url: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.state.database_url = database_url
    add_naive_route(app)
    add_sorted_route(app)
    return app


# --8<-- [end:app_setup]


# --8<-- [start:naive]
def add_naive_route(app: FastAPI) -> None:
    @app.get("/naive/products")
    async def list_products_naive(
        session: ReadSessionDep, sort_by: str = "id", order: str = "asc"
    ) -> list[ProductOut]:
        column = getattr(Product, sort_by)  # any attribute the user names!
        key = desc(column) if order == "desc" else column
        rows = await session.scalars(select(Product).order_by(key))
        return [ProductOut.model_validate(row) for row in rows]


# --8<-- [end:naive]


# --8<-- [start:demo_naive]
async def demo_naive(client: httpx.AsyncClient) -> None:
    for sort_by in ["__class__", "metadata", "__table__", "supplier", "colour"]:
        reply = await client.get("/naive/products", params={"sort_by": sort_by})
        print(f"sort_by={sort_by}: {reply.status_code}")
        #> sort_by=__class__: 500
        #> sort_by=metadata: 500
        #> sort_by=__table__: 500
        #> sort_by=supplier: 500
        #> sort_by=colour: 500

    reply = await client.get("/naive/products?sort_by=cost_price")
    print(reply.status_code, sorted(reply.json()[0]))
    #> 200 ['category', 'id', 'name', 'price']
    print("cheapest to buy first:", [p["name"] for p in reply.json()])
    #> cheapest to buy first: ['apple', 'bread', 'Banana', 'cherry', 'Apricot']


# --8<-- [end:demo_naive]


# --8<-- [start:demo_naive_direction]
async def demo_naive_direction(client: httpx.AsyncClient) -> None:
    for order in ["desc", "DESC"]:
        url = f"/naive/products?sort_by=price&order={order}"
        print(order, [p["price"] for p in (await client.get(url)).json()])
        #> desc [250, 120, 120, 80, None]
        #> DESC [None, 80, 120, 120, 250]


# --8<-- [end:demo_naive_direction]


# --8<-- [start:keyset_foundation]
@dataclass(frozen=True)
class OrderKey:
    """One column of an ORDER BY. The rule: NULL sorts below every value."""

    column: ColumnElement[Any]
    descending: bool = False
    nullable: bool = False

    def order_by(self) -> ColumnElement[Any]:
        if self.descending:
            order = self.column.desc()
            return order.nulls_last() if self.nullable else order
        order = self.column.asc()
        return order.nulls_first() if self.nullable else order

    def reversed(self) -> "OrderKey":
        return OrderKey(self.column, not self.descending, self.nullable)


def after(
    keys: Sequence[OrderKey], values: Sequence[Any]
) -> ColumnElement[bool]:
    """Rows strictly after `values` in the order of `keys`."""
    branches = []
    for i, (key, value) in enumerate(zip(keys, values, strict=True)):
        ties = [equals(k, v) for k, v in zip(keys[:i], values[:i], strict=True)]
        branches.append(and_(*ties, beyond(key, value)))
    return or_(*branches)


def equals(key: OrderKey, value: Any) -> ColumnElement[bool]:
    return key.column.is_(None) if value is None else key.column == value


def beyond(key: OrderKey, value: Any) -> ColumnElement[bool]:
    if value is None:  # NULL is lowest: after it come the values, ascending
        if key.descending or not key.nullable:
            return false()
        return key.column.is_not(None)
    if not key.descending:
        above: ColumnElement[bool] = key.column > value
        return above
    below: ColumnElement[bool] = key.column < value
    if key.nullable:
        return or_(below, key.column.is_(None))
    return below


def before(
    keys: Sequence[OrderKey], values: Sequence[Any]
) -> ColumnElement[bool]:
    """Rows strictly before `values`: `after` in the reversed order."""
    return after([key.reversed() for key in keys], values)


# --8<-- [end:keyset_foundation]


# --8<-- [start:whitelist]
class SortField(StrEnum):
    """The public sort fields: the only names a client may send."""

    id = "id"
    name = "name"
    category = "category"
    price = "price"


# Public name -> what the database sorts by. Text sorts by lower(): see below.
SORT_COLUMNS: dict[SortField, ColumnElement[Any]] = {
    SortField.id: Product.id.expression,
    SortField.name: func.lower(Product.name),
    SortField.category: Product.category.expression,
    SortField.price: Product.price.expression,
}
NULLABLE = {SortField.price}  # NULL sorts below every value: see OrderKey
MAX_SORT_FIELDS = 3
ALLOWED = ", ".join(SortField)  # id, name, category, price


class SortKey(NamedTuple):
    field: SortField
    descending: bool


def parse_sort(text: str) -> list[SortKey]:
    """'-price,name' -> [price descending, name ascending], or ValueError."""
    terms = text.split(",")
    if len(terms) > MAX_SORT_FIELDS:
        raise bad_sort(f"{len(terms)} sort fields, at most {MAX_SORT_FIELDS}")
    keys: list[SortKey] = []
    for term in terms:
        name = term.removeprefix("-")
        if not name:
            raise bad_sort(f"empty sort field in {text!r}")
        try:
            field = SortField(name)  # the whitelist: never getattr
        except ValueError:
            raise bad_sort(f"unknown sort field {name!r}") from None
        if any(key.field == field for key in keys):
            raise bad_sort(f"sort field {name!r} given twice")
        keys.append(SortKey(field, descending=term.startswith("-")))
    return keys


def bad_sort(problem: str) -> ValueError:
    return ValueError(f"{problem}; allowed: {ALLOWED} (- for descending)")


# --8<-- [end:whitelist]


# --8<-- [start:order_by]
def sort_terms(keys: Sequence[SortKey]) -> list[OrderKey]:
    """The keys as columns, with the primary key appended as the tiebreaker."""
    terms = [
        OrderKey(SORT_COLUMNS[k.field], k.descending, k.field in NULLABLE)
        for k in keys
    ]
    if all(k.field != SortField.id for k in keys):
        terms.append(OrderKey(SORT_COLUMNS[SortField.id]))
    return terms


def order_by(terms: Sequence[OrderKey]) -> list[ColumnElement[Any]]:
    return [term.order_by() for term in terms]  # NULLS FIRST/LAST: the rule


def sorted_products(keys: Sequence[SortKey], limit: int) -> Select[Any]:
    return select(Product).order_by(*order_by(sort_terms(keys))).limit(limit)


# --8<-- [end:order_by]


# --8<-- [start:endpoint]
def sort_keys(
    sort: Annotated[
        str,
        Query(
            max_length=100,
            description=f"Comma list of {ALLOWED}; - for descending.",
        ),
    ] = "id",
) -> list[SortKey]:
    try:
        return parse_sort(sort)
    except ValueError as exc:  # a 422 shaped like FastAPI's own
        error = {"type": "value_error", "loc": ("query", "sort")}
        raise RequestValidationError(
            [{**error, "msg": str(exc), "input": sort}]
        ) from None


def add_sorted_route(app: FastAPI) -> None:
    @app.get("/products")
    async def list_products(
        session: ReadSessionDep,
        keys: Annotated[list[SortKey], Depends(sort_keys)],
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> list[ProductOut]:
        rows = await session.scalars(sorted_products(keys, limit))
        return [ProductOut.model_validate(row) for row in rows]


# --8<-- [end:endpoint]


# --8<-- [start:demo_sorted]
async def demo_sorted(client: httpx.AsyncClient) -> None:
    reply = await client.get("/products?sort=-price,name")
    print([p["name"] for p in reply.json()])
    #> ['bread', 'apple', 'Apricot', 'Banana', 'cherry']
    print([p["price"] for p in reply.json()])
    #> [250, 120, 120, 80, None]

    for sort in ["-price,name", "category,-id"]:  # -id given: not appended
        print(f"{sort}:", order_by_sql(sort))
        #> -price,name: price DESC NULLS LAST, lower(name) ASC, id ASC
        #> category,-id: category ASC, id DESC

    for sort in ["price", "-price"]:  # NULL lowest: first, then last
        reply = await client.get("/products", params={"sort": sort})
        print(sort, [p["price"] for p in reply.json()])
        #> price [None, 80, 120, 120, 250]
        #> -price [250, 120, 120, 80, None]


def order_by_sql(sort: str) -> str:
    clauses = order_by(sort_terms(parse_sort(sort)))
    sql = ", ".join(str(clause) for clause in clauses)
    return sql.replace("products.", "")  # shorter to read


# --8<-- [end:demo_sorted]


# --8<-- [start:demo_errors]
async def demo_errors(client: httpx.AsyncClient) -> None:
    bad = ["cost_price", "__class__", "price,,name", "price,-price", "a,b,c,d"]
    for sort in bad:
        reply = await client.get("/products", params={"sort": sort})
        error = reply.json()["detail"][0]
        problem, allowed = error["msg"].split("; ")
        print(reply.status_code, error["loc"], problem)
        #> 422 ['query', 'sort'] unknown sort field 'cost_price'
        #> 422 ['query', 'sort'] unknown sort field '__class__'
        #> 422 ['query', 'sort'] empty sort field in 'price,,name'
        #> 422 ['query', 'sort'] sort field 'price' given twice
        #> 422 ['query', 'sort'] 4 sort fields, at most 3
    print(allowed)  # every message ends with the list
    #> allowed: id, name, category, price (- for descending)


# --8<-- [end:demo_errors]


# --8<-- [start:demo_case]
# Collations that put 'apple' before 'Banana': each database has its own names.
CASE_BLIND = {"sqlite": "NOCASE", "postgresql": "und-x-icu"}


async def demo_case(sessions: Sessions) -> None:
    async with sessions() as session:
        dialect = (await session.connection()).dialect.name
        by_name = await names_ordered_by(session, Product.name)
        print("name:", by_name)
        #> name: ['Apricot', 'Banana', 'apple', 'bread', 'cherry']
        collation = CASE_BLIND[dialect]
        collated = Product.name.collate(collation)
        print(f"name {collation}:", await names_ordered_by(session, collated))
        #> name NOCASE: ['apple', 'Apricot', 'Banana', 'bread', 'cherry']
        lower = func.lower(Product.name)
        print("lower(name):", await names_ordered_by(session, lower))
        #> lower(name): ['apple', 'Apricot', 'Banana', 'bread', 'cherry']


async def names_ordered_by(
    session: AsyncSession, key: SQLColumnExpression[Any]
) -> list[str]:
    query = select(Product.name).order_by(key, Product.id)
    return list(await session.scalars(query))


# --8<-- [end:demo_case]


# --8<-- [start:keyset]
LastRow = tuple[Any, ...]  # the last row's sort values, tiebreaker included


async def sorted_page(
    session: AsyncSession,
    keys: Sequence[SortKey],
    cursor: LastRow | None,
    limit: int,
) -> tuple[list[Product], LastRow | None]:
    terms = sort_terms(keys)
    columns = [term.column for term in terms]
    query = select(Product, *columns).order_by(*order_by(terms))
    if cursor is not None:
        query = query.where(after(terms, cursor))
    rows = (await session.execute(query.limit(limit + 1))).all()
    page = rows[:limit]
    next_cursor = tuple(page[-1][1:]) if len(rows) > limit else None
    return [row[0] for row in page], next_cursor


# --8<-- [end:keyset]


# --8<-- [start:demo_keyset]
async def demo_keyset(sessions: Sessions) -> None:
    keys = parse_sort("-price,name")
    cursor: LastRow | None = None
    async with sessions() as session:
        while True:
            page, cursor = await sorted_page(session, keys, cursor, limit=2)
            print([p.name for p in page], "next:", cursor)
            #> ['bread', 'apple'] next: (120, 'apple', 2)
            #> ['Apricot', 'Banana'] next: (80, 'banana', 1)
            #> ['cherry'] next: None
            if cursor is None:
                break


# --8<-- [end:demo_keyset]


# --8<-- [start:index]
# An index serves ORDER BY when its columns match in order and direction.
# SQLite cannot write NULLS LAST in an index, but its NULLs sort lowest, so
# DESC already puts them last there; PostgreSQL must be told.
Index(
    "ix_products_price_name",
    Product.price.desc(),
    func.lower(Product.name),
    Product.id,
).ddl_if(dialect="sqlite")
Index(
    "ix_products_price_name",
    Product.price.desc().nulls_last(),
    func.lower(Product.name),
    Product.id,
).ddl_if(dialect="postgresql")


async def explain(session: AsyncSession, query: Select[Any]) -> list[str]:
    conn = await session.connection()
    # Our own statement, rendered with its values inline (LIMIT 20).
    literal = {"literal_binds": True}
    sql = query.compile(dialect=conn.dialect, compile_kwargs=literal)
    if conn.dialect.name == "sqlite":
        plan = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")
        return [row["detail"] for row in plan.mappings()]
    plan = await conn.exec_driver_sql(f"EXPLAIN (COSTS OFF) {sql}")
    return list(plan.scalars())


# --8<-- [end:index]


# --8<-- [start:demo_index]
async def demo_index(sessions: Sessions) -> None:
    async with sessions() as session:
        plans = {
            sort: await explain(session, sorted_products(parse_sort(sort), 20))
            for sort in ["-price,name", "category"]
        }
    for sort, plan in plans.items():
        for step in plan:
            print(sort, step)
            #> -price,name SCAN products USING INDEX ix_products_price_name
            #> category SCAN products
            #> category USE TEMP B-TREE FOR ORDER BY


# --8<-- [end:demo_index]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(f"sqlite+aiosqlite:///{Path(tmp) / 'sorting.db'}")
        async with lifespan(app):
            async with app.state.sessions.begin() as session:
                await add_catalogue(session)
            # raise_app_exceptions=False: a crash becomes a 500, as on a server
            transport = httpx.ASGITransport(app, raise_app_exceptions=False)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://t"
            ) as client:
                await demo_naive(client)
                await demo_naive_direction(client)
                await demo_sorted(client)
                await demo_errors(client)
            await demo_case(app.state.read_sessions)
            await demo_keyset(app.state.read_sessions)
            await demo_index(app.state.read_sessions)


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

"""Extracted CRUD functions vs logic inline in endpoints, for the same resource.

Run it: python -m snippets.extracted_vs_inline
"""

# --8<-- [start:imports]
import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
)
from sqlalchemy import (
    CheckConstraint,
    Connection,
    Index,
    MetaData,
    Numeric,
    String,
    event,
    select,
)
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.schema import ColumnCollectionConstraint

# --8<-- [end:imports]


# The foundation, copied from the Sessions page (a test keeps it identical).
# --8<-- [start:foundation]
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


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_engine(app.state.database_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)  # demo: see Migrations
    app.state.sessions = create_session_factory(engine)
    app.state.read_sessions = create_read_session_factory(engine)
    yield
    await engine.dispose()  # close pooled connections on shutdown


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


# --8<-- [end:foundation]


# --8<-- [start:model]
class Item(Base):
    __tablename__ = "items"
    __table_args__ = (CheckConstraint("price >= 0", name="price_not_negative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    stock: Mapped[int] = mapped_column(default=0)
    cost: Mapped[Decimal] = mapped_column(Numeric(10, 2), default=0)  # internal


# --8<-- [end:model]


# --8<-- [start:patch]
def unchanged() -> Any:
    """The default of a PATCH field: it may be omitted, but not sent as null.

    `int | None` would let null through (and on to the database), and tell
    API clients that null is allowed. A plain `int` whose default is never
    validated refuses null, and the schema shows no default.
    """
    return Field(default=None, json_schema_extra=no_default)


def no_default(schema: dict[str, JsonValue]) -> None:
    schema.pop("default", None)


class PatchModel(BaseModel):
    """A partial update: omitted fields stay as they are; null is refused."""

    model_config = ConfigDict(extra="forbid")

    def changes(self) -> dict[str, Any]:
        """Only the fields the client sent."""
        return self.model_dump(exclude_unset=True)


# --8<-- [end:patch]


# --8<-- [start:schemas]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Price = Annotated[Decimal, Field(ge=0, max_digits=10, decimal_places=2)]
Stock = Annotated[int, Field(ge=0, le=2**31 - 1)]


class ItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown fields -> 422

    name: Name
    price: Price
    stock: Stock = 0


class ItemUpdate(PatchModel):
    """The writable fields: each may be omitted, none may be null."""

    name: Name = unchanged()
    price: Price = unchanged()
    stock: Stock = unchanged()


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    price: Decimal
    stock: int


# --8<-- [end:schemas]


# --8<-- [start:naive_patch_model]
class ItemUpdateNullable(BaseModel):
    """Naive: `X | None` so that a field may be omitted."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    price: Price | None = None
    stock: Stock | None = None

    @field_validator("name", "price", "stock", mode="before")
    @classmethod
    def reject_null(cls, value: object) -> object:
        if value is None:  # the columns are NOT NULL
            raise ValueError("may be omitted, but not null")
        return value


# --8<-- [end:naive_patch_model]


# --8<-- [start:errors]
class ItemNotFoundError(Exception):
    def __init__(self, item_id: int) -> None:
        super().__init__(f"item {item_id} not found")


# --8<-- [end:errors]


# --8<-- [start:crud]
async def create_item(session: AsyncSession, data: ItemCreate) -> Item:
    item = Item(**data.model_dump())
    session.add(item)
    await session.flush()  # a constraint that fails, fails here
    return item


async def get_item(session: AsyncSession, item_id: int) -> Item:
    item = await session.get(Item, item_id)
    if item is None:
        raise ItemNotFoundError(item_id)
    return item


async def update_item(
    session: AsyncSession, item_id: int, changes: ItemUpdate
) -> Item:
    item = await get_item(session, item_id)
    # Only the fields the client sent, and only fields ItemUpdate declares.
    for field, value in changes.changes().items():
        setattr(item, field, value)
    await session.flush()
    return item


async def list_items(session: AsyncSession) -> list[Item]:
    return list(await session.scalars(select(Item).order_by(Item.id)))


async def delete_item(session: AsyncSession, item_id: int) -> None:
    item = await get_item(session, item_id)
    await session.delete(item)
    await session.flush()


# --8<-- [end:crud]


# --8<-- [start:get_or_create]
async def get_or_create_item(session: AsyncSession, data: ItemCreate) -> Item:
    """The item named `data.name`: the existing one, or a new one."""
    try:
        async with session.begin_nested():  # a failed INSERT undoes only itself
            return await create_item(session, data)
    except IntegrityError as exc:
        if classify(exc, Base.metadata).kind is not Problem.UNIQUE:
            raise
    return (await session.scalars(select(Item).filter_by(name=data.name))).one()


# --8<-- [end:get_or_create]


# --8<-- [start:naive_integrity]
class DuplicateNameError(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"an item named {name!r} already exists")


async def create_item_naive(session: AsyncSession, data: ItemCreate) -> Item:
    item = Item(**data.model_dump())
    session.add(item)
    try:
        await session.flush()
    except IntegrityError as exc:  # any constraint at all...
        raise DuplicateNameError(item.name) from exc  # ...called a duplicate
    return item


# --8<-- [end:naive_integrity]


# --8<-- [start:sessions]
async def get_inline_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: Sessions = request.app.state.sessions  # writes: BEGIN IMMEDIATE
    async with sessions() as session:  # the endpoint commits, or nothing is
        yield session


InlineSessionDep = Annotated[AsyncSession, Depends(get_inline_session)]
# --8<-- [end:sessions]


# --8<-- [start:extracted_endpoints]
extracted = APIRouter(prefix="/items", tags=["extracted"])


@extracted.post("", status_code=status.HTTP_201_CREATED)
async def post_item(data: ItemCreate, session: SessionDep) -> ItemOut:
    return ItemOut.model_validate(await create_item(session, data))


@extracted.post("/batch", status_code=status.HTTP_201_CREATED)
async def post_items(
    batch: list[ItemCreate], session: SessionDep
) -> list[ItemOut]:
    items = [await create_item(session, data) for data in batch]
    return [ItemOut.model_validate(item) for item in items]


@extracted.get("")
async def read_items(session: ReadSessionDep) -> list[ItemOut]:
    return [ItemOut.model_validate(item) for item in await list_items(session)]


@extracted.get("/{item_id}")
async def read_item(item_id: int, session: ReadSessionDep) -> ItemOut:
    return ItemOut.model_validate(await get_item(session, item_id))


@extracted.patch("/{item_id}")
async def patch_item(
    item_id: int, changes: ItemUpdate, session: SessionDep
) -> ItemOut:
    return ItemOut.model_validate(await update_item(session, item_id, changes))


@extracted.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_item(item_id: int, session: SessionDep) -> None:
    await delete_item(session, item_id)


# --8<-- [end:extracted_endpoints]


# --8<-- [start:error_handlers]
async def not_found(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status.HTTP_404_NOT_FOUND)


# --8<-- [end:error_handlers]


# --8<-- [start:inline_endpoints]
inline = APIRouter(prefix="/inline/items", tags=["inline"])


@inline.post("", status_code=status.HTTP_201_CREATED)
async def post_item_inline(
    data: ItemCreate, session: InlineSessionDep
) -> ItemOut:
    taken = select(Item.id).where(Item.name == data.name)
    if await session.scalar(taken) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, "name already exists")
    item = Item(**data.model_dump())
    session.add(item)
    await session.commit()
    return ItemOut.model_validate(item)


@inline.post("/batch", status_code=status.HTTP_201_CREATED)
async def post_items_inline(
    batch: list[ItemCreate], session: InlineSessionDep
) -> list[ItemOut]:
    # Reusing the endpoint means reusing its commit: one per item.
    return [await post_item_inline(data, session) for data in batch]


@inline.get("/{item_id}")
async def read_item_inline(item_id: int, session: ReadSessionDep) -> ItemOut:
    item = await session.get(Item, item_id)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "item not found")
    return ItemOut.model_validate(item)


# --8<-- [end:inline_endpoints]


# --8<-- [start:naive_patch]
@inline.patch("/{item_id}")
async def patch_item_naive(
    item_id: int, changes: dict[str, Any], session: InlineSessionDep
) -> ItemOut:
    item = await session.get(Item, item_id)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "item not found")
    for key, value in changes.items():
        setattr(item, key, value)  # any key: id, cost, typos...
    await session.commit()
    return ItemOut.model_validate(item)


# --8<-- [end:naive_patch]


# --8<-- [start:naive_response]
@inline.get("/{item_id}/raw")
async def read_item_raw(  # type: ignore[no-untyped-def]  # noqa: ANN201
    item_id: int, session: ReadSessionDep
):  # no return type, so no response model
    return await session.get(Item, item_id)


# --8<-- [end:naive_response]


# --8<-- [start:app]
def create_app(database_url: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.state.database_url = database_url
    app.include_router(extracted)
    app.include_router(inline)
    app.add_exception_handler(ItemNotFoundError, not_found)
    app.add_exception_handler(DBAPIError, database_error)
    return app


# --8<-- [end:app]


# --8<-- [start:helpers]
@asynccontextmanager
async def client_for(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test"
        ) as client:
            yield client


def show(reply: httpx.Response) -> str:
    shown = f"{reply.request.method} {reply.status_code}"
    if reply.status_code == 422:  # the fields and the kinds of error
        errors = reply.json()["detail"]
        fields = [error["loc"][-1] for error in errors]
        kinds = sorted({error["type"] for error in errors})
        return f"{shown} {fields} {kinds}"
    return f"{shown} {reply.json()}" if reply.content else shown


async def stored_names(client: httpx.AsyncClient) -> list[str]:
    return [item["name"] for item in (await client.get("/items")).json()]


def allows_null(schema: dict[str, Any]) -> bool:
    """Whether a property's JSON schema accepts null."""
    options = schema.get("anyOf", [schema])
    return any(option.get("type") == "null" for option in options)


# --8<-- [end:helpers]


# --8<-- [start:demo_status_codes]
async def demo_status_codes(client: httpx.AsyncClient) -> None:
    pen = {"name": "Pen", "price": "1.50", "stock": 10}
    print(show(await client.post("/items", json=pen)))
    #> POST 201 {'id': 1, 'name': 'Pen', 'price': '1.50', 'stock': 10}
    print(show(await client.post("/items", json=pen)))
    #> POST 409 {'detail': 'name already exists'}
    print(show(await client.post("/items", json={"name": "", "price": "1"})))
    #> POST 422 ['name'] ['string_too_short']
    print(show(await client.get("/items/42")))
    #> GET 404 {'detail': 'item 42 not found'}
    print(show(await client.patch("/items/1", json={"stock": 7})))
    #> PATCH 200 {'id': 1, 'name': 'Pen', 'price': '1.50', 'stock': 7}
    print(show(await client.delete("/items/1")))
    #> DELETE 204
    print(show(await client.delete("/items/1")))
    #> DELETE 404 {'detail': 'item 1 not found'}


# --8<-- [end:demo_status_codes]


# --8<-- [start:demo_composition]
async def demo_composition(client: httpx.AsyncClient) -> None:
    batch = [
        {"name": "Ink", "price": "3.00"},
        {"name": "Ink", "price": "3.00"},  # duplicate: the batch must fail
    ]
    reply = await client.post("/items/batch", json=batch)
    print("extracted:", reply.status_code, await stored_names(client))
    #> extracted: 409 []

    reply = await client.post("/inline/items/batch", json=batch)
    print("inline:", reply.status_code, await stored_names(client))
    #> inline: 409 ['Ink']


# --8<-- [end:demo_composition]


# --8<-- [start:demo_integrity_errors]
async def demo_integrity_errors(sessions: Sessions) -> None:
    # A rule the schema missed (here: bypassed) reaches the CHECK constraint.
    free = ItemCreate.model_construct(name="Free", price=Decimal(-1), stock=0)
    async with sessions() as session:
        try:
            await create_item_naive(session, free)
        except DuplicateNameError as exc:
            print("naive:", exc)
            #> naive: an item named 'Free' already exists
    async with sessions() as session:
        try:
            await create_item(session, free)
        except DBAPIError as exc:
            problem = classify(exc, Base.metadata)
            reply = database_error_response(problem)
            print("fixed:", reply.status_code, problem.kind, problem.constraint)
            #> fixed: 422 check ck_items_price_not_negative


# --8<-- [end:demo_integrity_errors]


# --8<-- [start:demo_get_or_create]
async def demo_get_or_create(sessions: Sessions) -> None:
    nib = ItemCreate(name="Nib", price=Decimal("0.80"))
    async with sessions.begin() as session:
        first = await get_or_create_item(session, nib)
        again = await get_or_create_item(session, nib)  # a duplicate: found
    print("same item:", first.id == again.id, "named", again.name)
    #> same item: True named Nib


# --8<-- [end:demo_get_or_create]


# --8<-- [start:demo_mass_assignment]
async def demo_mass_assignment(client: httpx.AsyncClient) -> None:
    cup = await client.post("/items", json={"name": "Cup", "price": "4"})
    url = f"/items/{cup.json()['id']}"
    hostile = {"id": 99, "cost": "0", "nmae": "Mug"}
    print(show(await client.patch(f"/inline{url}", json=hostile)))
    #> PATCH 200 {'id': 99, 'name': 'Cup', 'price': '4.00', 'stock': 0}
    print(show(await client.get(url)))
    #> GET 404 {'detail': 'item 3 not found'}

    print(show(await client.patch("/items/99", json=hostile)))
    #> PATCH 422 ['id', 'cost', 'nmae'] ['extra_forbidden']


# --8<-- [end:demo_mass_assignment]


# --8<-- [start:demo_patch_null]
async def demo_patch_null(client: httpx.AsyncClient) -> None:
    naive = ItemUpdateNullable.model_json_schema()["properties"]
    print("naive: name allows null:", allows_null(naive["name"]))
    #> naive: name allows null: True
    try:
        ItemUpdateNullable.model_validate({"name": None})
    except ValidationError as exc:
        print("naive: yet refused:", exc.errors()[0]["msg"])
        #> naive: yet refused: Value error, may be omitted, but not null

    components = (await client.get("/openapi.json")).json()["components"]
    published = components["schemas"]["ItemUpdate"]["properties"]
    print("ItemUpdate: name allows null:", allows_null(published["name"]))
    #> ItemUpdate: name allows null: False
    print(show(await client.patch("/items/99", json={"name": None})))
    #> PATCH 422 ['name'] ['string_type']
    print(show(await client.patch("/items/99", json={"price": "2.50"})))
    #> PATCH 200 {'id': 99, 'name': 'Cup', 'price': '2.50', 'stock': 0}


# --8<-- [end:demo_patch_null]


# --8<-- [start:demo_response_model]
async def demo_response_model(client: httpx.AsyncClient) -> None:
    mug = await client.post("/items", json={"name": "Mug", "price": "4.10"})
    url = f"/items/{mug.json()['id']}"
    raw = (await client.get(f"/inline{url}/raw")).json()
    print(dict(sorted(raw.items())))  # sorted: its key order is not fixed
    #> {'cost': 0.0, 'id': 100, 'name': 'Mug', 'price': 4.1, 'stock': 0}
    print((await client.get(url)).json())
    #> {'id': 100, 'name': 'Mug', 'price': '4.10', 'stock': 0}


# --8<-- [end:demo_response_model]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(f"sqlite+aiosqlite:///{Path(tmp) / 'items.db'}")
        async with client_for(app) as client:
            await demo_status_codes(client)
            await demo_composition(client)
            await demo_integrity_errors(app.state.sessions)
            await demo_get_or_create(app.state.sessions)
            await demo_mass_assignment(client)
            await demo_patch_null(client)
            await demo_response_model(client)


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

"""Connections: the engine in production (pool, dead connections, timeouts).

Run it: python -m snippets.connections
"""

# --8<-- [start:imports]
import asyncio
import logging
import os
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar
from uuid import uuid4

import httpx
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import (
    Connection,
    ForeignKey,
    Index,
    MetaData,
    String,
    event,
    text,
    update,
)
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry, NullPool
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


def create_read_session_factory(engine: AsyncEngine) -> Sessions:
    # A deferred BEGIN on SQLite: reads take no write lock (no-op elsewhere).
    return create_session_factory(
        engine.execution_options(sqlite_begin="DEFERRED")
    )


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
class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    stock: Mapped[int]


class Shipment(Base):
    __tablename__ = "shipments"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    tracking: Mapped[str] = mapped_column(String(100))


# --8<-- [end:models]


# --8<-- [start:pool_math]
def connections_needed(workers: int, pool_size: int, max_overflow: int) -> int:
    """The most connections a deployment opens: every pool full, everywhere."""
    return workers * (pool_size + max_overflow)


async def max_connections(engine: AsyncEngine) -> int:
    """What the PostgreSQL server allows, for every client together."""
    async with engine.connect() as conn:
        return int(await conn.scalar(text("SHOW max_connections")))


# --8<-- [end:pool_math]


# --8<-- [start:lifespan]
@asynccontextmanager
async def pooled_lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The foundation's lifespan, with the engine options (pool size, pool
    # timeout, pre-ping, connect_args) the app was created with.
    engine = create_engine(app.state.database_url, **app.state.engine_options)
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


# --8<-- [start:factories]
async def get_session_factory(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


# For a unit of work the route runs (and retries) itself.
SessionFactoryDep = Annotated[Sessions, Depends(get_session_factory)]


async def get_read_session_factory(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.read_sessions
    return sessions


# For a read the route may run twice (see read_once_more).
ReadSessionFactoryDep = Annotated[Sessions, Depends(get_read_session_factory)]
# --8<-- [end:factories]


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

# --8<-- [start:faults]
QUERY_CANCELED = "57014"  # statement_timeout ran out


async def database_error_or_timeout(request: Request, exc: Exception) -> Any:
    """The foundation's handler, plus statement_timeout: worth a retry."""
    if getattr(getattr(exc, "orig", None), "sqlstate", None) == QUERY_CANCELED:
        return database_error_response(DatabaseProblem(Problem.BUSY))
    return await database_error(request, exc)


async def pool_exhausted(_: Request, exc: Exception) -> JSONResponse:
    """No connection free within pool_timeout: busy, not broken."""
    return database_error_response(DatabaseProblem(Problem.BUSY))


async def database_unreachable(_: Request, exc: Exception) -> JSONResponse:
    """The database refused the connection (a restart): unavailable."""
    return database_error_response(DatabaseProblem(Problem.UNAVAILABLE))


def add_fault_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DBAPIError, database_error_or_timeout)
    app.add_exception_handler(PoolTimeoutError, pool_exhausted)
    # asyncpg lets the socket's error through while connecting:
    # ConnectionRefusedError, a DNS failure, a connect timeout are OSErrors.
    app.add_exception_handler(OSError, database_unreachable)


# --8<-- [end:faults]


# --8<-- [start:read_once_more]
T = TypeVar("T")


async def read_once_more(
    sessions: Sessions, read: Callable[[AsyncSession], Awaitable[T]]
) -> T:
    """Run a read; if its connection died, run it once more on a new one.

    Only for reads: a write whose connection died may have committed.
    """
    try:
        async with sessions() as session:
            return await read(session)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    # The pool dropped the dead connection and every one opened before it.
    async with sessions() as session:
        return await read(session)


# --8<-- [end:read_once_more]


# --8<-- [start:data]
async def get_item(session: AsyncSession, item_id: int) -> Item | None:
    return await session.get(Item, item_id)


async def reserve_item(session: AsyncSession, item_id: int) -> bool:
    """Take one unit out of stock; False when there is none (or no item)."""
    query = (
        update(Item)
        .where(Item.id == item_id, Item.stock > 0)
        .values(stock=Item.stock - 1)
        .returning(Item.id)
    )
    return await session.scalar(query) is not None


async def release_item(session: AsyncSession, item_id: int) -> None:
    query = update(Item).where(Item.id == item_id)
    await session.execute(query.values(stock=Item.stock + 1))


async def record_shipment(
    session: AsyncSession, item_id: int, tracking: str
) -> Shipment:
    shipment = Shipment(item_id=item_id, tracking=tracking)
    session.add(shipment)
    await session.flush()
    return shipment


# --8<-- [end:data]


# --8<-- [start:app]
# The other service: a carrier's HTTP API that books a parcel.
Carrier = Callable[[int], Awaitable[str]]


async def instant_carrier(item_id: int) -> str:
    return f"TRACK-{item_id}"


def get_carrier(request: Request) -> Carrier:
    carrier: Carrier = request.app.state.carrier
    return carrier


CarrierDep = Annotated[Carrier, Depends(get_carrier)]


class ItemOut(BaseModel):
    id: int
    name: str
    stock: int


class ShipmentOut(BaseModel):
    id: int
    item_id: int
    tracking: str


router = APIRouter()


@router.get("/items/{item_id}")
async def read_one_item(item_id: int, session: ReadSessionDep) -> ItemOut:
    item = await get_item(session, item_id)
    if item is None:
        raise HTTPException(404, "no such item")
    return ItemOut.model_validate(item, from_attributes=True)


@router.get("/retried/items/{item_id}")
async def read_item_retried(
    item_id: int, sessions: ReadSessionFactoryDep
) -> ItemOut:
    item = await read_once_more(sessions, lambda s: get_item(s, item_id))
    if item is None:
        raise HTTPException(404, "no such item")
    return ItemOut.model_validate(item, from_attributes=True)


@router.get("/worker")
async def worker() -> dict[str, int]:
    return {"pid": os.getpid()}  # which process answered


# --8<-- [end:app]


# --8<-- [start:ship_naive]
@router.post("/naive/items/{item_id}/ship", status_code=201)
async def ship_naive(
    item_id: int, session: SessionDep, carrier: CarrierDep
) -> ShipmentOut:
    if not await reserve_item(session, item_id):
        raise HTTPException(409, "out of stock")
    tracking = await carrier(item_id)  # the connection waits with us
    shipment = await record_shipment(session, item_id, tracking)
    return ShipmentOut.model_validate(shipment, from_attributes=True)


# --8<-- [end:ship_naive]


# --8<-- [start:ship]
@router.post("/items/{item_id}/ship", status_code=201)
async def ship(
    item_id: int, sessions: SessionFactoryDep, carrier: CarrierDep
) -> ShipmentOut:
    async with sessions.begin() as session:  # commit: connection back
        if not await reserve_item(session, item_id):
            raise HTTPException(409, "out of stock")
    try:
        tracking = await carrier(item_id)  # no connection held
    except Exception:
        async with sessions.begin() as session:  # undo the reservation
            await release_item(session, item_id)
        raise
    async with sessions.begin() as session:
        shipment = await record_shipment(session, item_id, tracking)
    return ShipmentOut.model_validate(shipment, from_attributes=True)


# --8<-- [end:ship]


# --8<-- [start:create_app]
def create_app(
    database_url: str, *, handlers: bool = True, **engine_options: Any
) -> FastAPI:
    """engine_options go to create_engine: SQLAlchemy's defaults otherwise."""
    app = FastAPI(lifespan=pooled_lifespan)
    app.state.database_url = database_url
    app.state.engine_options = engine_options
    app.state.carrier = instant_carrier
    app.include_router(router)
    if handlers:  # handlers=False: the naive app, for the demos
        add_fault_handlers(app)
    return app


# --8<-- [end:create_app]


# --8<-- [start:production]
def create_production_app(database_url: str) -> FastAPI:
    """The options this page argues for; the sizes come from the pool math."""
    return create_app(
        database_url,
        pool_size=10,
        max_overflow=0,  # a hard bound keeps the pool math true
        pool_timeout=5,  # a 503 after 5 s rather than a 500 after 30
        pool_pre_ping=True,  # replace connections a restart killed
        pool_recycle=1800,  # and ones a proxy may drop while idle
    )


# --8<-- [end:production]


# --8<-- [start:ping_when_idle]
def ping_when_idle(engine: AsyncEngine, idle: float = 0.5) -> None:
    """pool_pre_ping for connections idle `idle` seconds or more, only.

    A connection a request gave back a moment ago is alive: under load no
    connection waits long, so no ping is sent. One that sat idle may have
    died with a restart: ping it, and on a dead one replace every connection
    older than it, as pool_pre_ping does. HikariCP (Java) skips its check the
    same way for connections used within the last 500 ms.
    """
    pool, dialect = engine.sync_engine.pool, engine.sync_engine.dialect

    def used_now(_dbapi: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info["last_used"] = time.monotonic()

    def ping_if_idle(
        dbapi: DBAPIConnection, record: ConnectionPoolEntry, _proxy: object
    ) -> None:
        if time.monotonic() - record.info.get("last_used", 0.0) < idle:
            return
        try:
            dialect.do_ping(dbapi)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi, None):
                raise InvalidatePoolError() from exc  # the pool reconnects
            raise

    event.listen(pool, "connect", used_now)
    event.listen(pool, "checkin", used_now)
    event.listen(pool, "checkout", ping_if_idle)


# --8<-- [end:ping_when_idle]


# --8<-- [start:timeouts]
def timeouts(statement_ms: int, lock_ms: int) -> dict[str, Any]:
    """Engine options: every connection starts with these limits (asyncpg)."""
    settings = {"statement_timeout": str(statement_ms)}
    settings["lock_timeout"] = str(lock_ms)  # 0 means no limit
    return {"connect_args": {"server_settings": settings}}


async def limit_transaction(
    session: AsyncSession, statement_ms: int, lock_ms: int
) -> None:
    """Per transaction (PostgreSQL): like SET LOCAL, gone at COMMIT."""
    limit = text("SELECT set_config(:name, :value, true)")  # true: local
    await session.execute(
        limit, {"name": "statement_timeout", "value": str(statement_ms)}
    )
    await session.execute(
        limit, {"name": "lock_timeout", "value": str(lock_ms)}
    )


# --8<-- [end:timeouts]


# --8<-- [start:pgbouncer]
def through_pgbouncer() -> dict[str, Any]:
    """Engine options for asyncpg behind PgBouncer in transaction mode.

    PgBouncer hands each transaction any server connection: a statement
    prepared in one transaction is missing in the next, and two processes'
    statements named __asyncpg_stmt_1__ collide on one server connection.
    """
    return {
        # PgBouncer is the pool; each checkout is a new client connection,
        # so SQLAlchemy's cache of prepared statements never outlives it.
        "poolclass": NullPool,
        "connect_args": {
            "statement_cache_size": 0,  # asyncpg's own cache: off
            # SQLAlchemy still prepares each statement: a name never reused.
            "prepared_statement_name_func": lambda: f"__asyncpg_{uuid4()}__",
        },
    }


# --8<-- [end:pgbouncer]


# --8<-- [start:terminate]
async def terminate_backends(session: AsyncSession) -> int:
    """What a database restart or a failover does to the app's connections:
    close every other connection to this database (PostgreSQL)."""
    query = text(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return int(await session.scalar(query) or 0)


# --8<-- [end:terminate]


# --8<-- [start:demo_pool_math]
def demo_pool_math() -> None:
    # SQLAlchemy's defaults: pool_size=5, max_overflow=10.
    print("4 workers, defaults:", connections_needed(4, 5, 10))
    #> 4 workers, defaults: 60
    print("8 workers, pool 20:", connections_needed(8, 20, 0))
    #> 8 workers, pool 20: 160


# --8<-- [end:demo_pool_math]


# --8<-- [start:demo_client]
def client_for(app: FastAPI) -> httpx.AsyncClient:
    # raise_app_exceptions=False: an unhandled error is a 500, as in uvicorn.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def ship_and_read(app: FastAPI, ship_path: str) -> tuple[int, int]:
    """Ship item 1 (the carrier hangs) and read it meanwhile: both statuses."""
    called, answer = asyncio.Event(), asyncio.Event()

    async def slow_carrier(item_id: int) -> str:
        called.set()
        await answer.wait()  # the other service takes its time
        return f"TRACK-{item_id}"

    app.state.carrier = slow_carrier
    async with client_for(app) as http:
        shipping = asyncio.create_task(http.post(ship_path))
        await called.wait()  # the carrier call is in flight
        read = await http.get("/items/1")
        answer.set()
        shipped = await shipping
    return read.status_code, shipped.status_code


# --8<-- [end:demo_client]


# --8<-- [start:demo_pool]
ONE_CONNECTION: dict[str, Any] = {
    "pool_size": 1,
    "max_overflow": 0,
    "pool_timeout": 0.5,  # seconds a request waits for a connection
}


async def seed(app: FastAPI) -> None:
    async with app.state.sessions.begin() as session:
        session.add(Item(id=1, name="Lamp", stock=10))


async def demo_pool(url: str) -> None:
    naive = create_app(url, handlers=False, **ONE_CONNECTION)
    async with pooled_lifespan(naive):
        await seed(naive)
        read, shipped = await ship_and_read(naive, "/naive/items/1/ship")
        print("naive: read", read, "while shipping; ship", shipped)
        #> naive: read 500 while shipping; ship 201

    fixed = create_app(url, **ONE_CONNECTION)
    async with pooled_lifespan(fixed):
        read, shipped = await ship_and_read(fixed, "/naive/items/1/ship")
        print("handled: read", read, "while shipping; ship", shipped)
        #> handled: read 503 while shipping; ship 201
        read, shipped = await ship_and_read(fixed, "/items/1/ship")
        print("recipe: read", read, "while shipping; ship", shipped)
        #> recipe: read 200 while shipping; ship 201


# --8<-- [end:demo_pool]


# --8<-- [start:demo_refused]
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens: connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def demo_refused(url: str) -> None:
    # The database goes away after start-up, as during a restart.
    down = f"postgresql+asyncpg://app@127.0.0.1:{closed_port()}/app"
    for app in (create_app(url, handlers=False), create_app(url)):
        async with pooled_lifespan(app):
            engine = create_engine(down)
            app.state.read_sessions = create_read_session_factory(engine)
            async with client_for(app) as http:
                reply = await http.get("/items/1")
            await engine.dispose()
        print(reply.status_code, reply.headers.get("Retry-After"))
        #> 500 None
        #> 503 1


# --8<-- [end:demo_refused]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'shop.db'}"
        demo_pool_math()
        await demo_pool(url)
        await demo_refused(url)


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

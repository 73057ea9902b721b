"""Testing your app: isolated tests, event loops, the lifespan, parallel runs.

Run it: python -m snippets.testing
"""

# --8<-- [start:imports]
import asyncio
import logging
import os
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
import pytest_asyncio
from fastapi import Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    Connection,
    Index,
    MetaData,
    String,
    event,
    make_url,
    select,
)
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, SAWarning
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

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)


# --8<-- [end:models]


# --8<-- [start:app]
class NewItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)


async def insert_item(session: AsyncSession, name: str) -> Item:
    """Add an item and flush it (the request's dependency commits)."""
    item = Item(name=name)
    session.add(item)
    await session.flush()
    return item


async def list_item_names(session: AsyncSession) -> list[str]:
    """Every item's name, oldest first."""
    return list(await session.scalars(select(Item.name).order_by(Item.id)))


def create_app(database_url: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.state.database_url = database_url
    app.add_exception_handler(DBAPIError, database_error)

    @app.post("/items", status_code=status.HTTP_201_CREATED)
    async def create_item(body: NewItem, session: SessionDep) -> str:
        return (await insert_item(session, body.name)).name

    @app.get("/items")
    async def list_items(session: ReadSessionDep) -> list[str]:
        return await list_item_names(session)

    return app


# --8<-- [end:app]


# --8<-- [start:naive_client]
def naive_client(app: FastAPI) -> httpx.AsyncClient:
    # ASGITransport only sends HTTP requests: it never runs the lifespan.
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


# --8<-- [end:naive_client]


# --8<-- [start:app_client]
@asynccontextmanager
async def app_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client for `app`, inside the app's lifespan."""
    async with app.router.lifespan_context(app):  # what a server would run
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test"
        ) as client:
            yield client


# --8<-- [end:app_client]


# --8<-- [start:naive_rolled_back]
@asynccontextmanager
async def rolled_back_naive(engine: AsyncEngine) -> AsyncIterator[Sessions]:
    """Naive: the default join mode lets a rollback end the outer one."""
    async with engine.connect() as conn:
        outer = await conn.begin()
        sessions = async_sessionmaker(bind=conn, expire_on_commit=False)
        try:
            yield sessions
        finally:
            await outer.rollback()


# --8<-- [end:naive_rolled_back]


# --8<-- [start:rolled_back]
@asynccontextmanager
async def rolled_back(engine: AsyncEngine) -> AsyncIterator[Sessions]:
    """Sessions on one connection whose work is all undone at the end."""
    async with engine.connect() as conn:
        outer = await conn.begin()  # the test's transaction: never committed
        # --8<-- [start:savepoint]
        # Each session's BEGIN, COMMIT and ROLLBACK become SAVEPOINT, RELEASE
        # and ROLLBACK TO inside it: the outer transaction stays as it was.
        sessions = async_sessionmaker(
            bind=conn,
            expire_on_commit=False,
            join_transaction_mode="create_savepoint",
        )
        # --8<-- [end:savepoint]
        try:
            yield sessions
        finally:
            await outer.rollback()


# --8<-- [end:rolled_back]


# --8<-- [start:naive_overrides]
def use_write_sessions_only(app: FastAPI, sessions: Sessions) -> None:
    """Naive: reads still go through the app's own engine."""

    async def write_session() -> AsyncIterator[AsyncSession]:
        async with sessions.begin() as session:
            yield session

    app.dependency_overrides[get_session] = write_session


# --8<-- [end:naive_overrides]


# --8<-- [start:overrides]
def use_sessions(app: FastAPI, sessions: Sessions) -> None:
    """Route both of the app's session dependencies to `sessions`."""

    async def write_session() -> AsyncIterator[AsyncSession]:
        async with sessions.begin() as session:  # commits, as the app does
            yield session

    async def read_session() -> AsyncIterator[AsyncSession]:
        async with sessions() as session:  # never commits
            yield session

    app.dependency_overrides[get_session] = write_session
    app.dependency_overrides[get_read_session] = read_session


# --8<-- [end:overrides]


# --8<-- [start:fixtures]
@pytest_asyncio.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """One engine per test: it lives and dies on the test's event loop."""
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)  # later: checks only
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture
async def client(
    engine: AsyncEngine, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The app over HTTP, in process; what a test writes is rolled back."""
    app = create_app(database_url)
    # The lifespan first: on SQLite, the test's transaction holds the lock.
    async with app_client(app) as http, rolled_back(engine) as sessions:
        use_sessions(app, sessions)
        yield http


# --8<-- [end:fixtures]


# --8<-- [start:naive_loops]
@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def shared_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Naive alone: made on the session's loop, used from each test's."""
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


# --8<-- [end:naive_loops]


# --8<-- [start:session_loop]
# In each test module that uses shared_engine: pytestmark = SESSION_LOOP
SESSION_LOOP = pytest.mark.asyncio(loop_scope="session")
# --8<-- [end:session_loop]


# --8<-- [start:naive_database_url]
@pytest.fixture(scope="session")
def shared_database_url() -> str:
    """Naive: every test process gets the same database."""
    return os.environ.get("TEST_DATABASE_URL", "sqlite+aiosqlite:///test.db")


# --8<-- [end:naive_database_url]


# --8<-- [start:database_url]
@pytest.fixture(scope="session")
def database_url(
    worker_id: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database per test process: worker_id is gw0, gw1... or master."""
    server = os.environ.get("TEST_POSTGRES_URL")
    if not server:  # SQLite: a file in this worker's own temporary directory
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        return
    url = make_url(server)
    name = f"{url.database}_{worker_id}"
    run_admin_sql(
        server, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"'
    )
    yield url.set(database=name).render_as_string(hide_password=False)
    run_admin_sql(server, f'DROP DATABASE "{name}" WITH (FORCE)')


def run_admin_sql(server: str, *statements: str) -> None:
    """Statements outside a transaction, from synchronous code."""
    asyncio.run(run_admin(server, *statements))  # a loop of its own, at once


async def run_admin(server: str, *statements: str) -> None:
    # CREATE and DROP DATABASE refuse to run inside a transaction.
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        for sql in statements:
            await conn.exec_driver_sql(sql)
    await admin.dispose()


# --8<-- [end:database_url]


# --8<-- [start:demo_lifespan]
async def demo_lifespan(url: str) -> None:
    app = create_app(url)
    async with naive_client(app) as client:
        try:
            await client.get("/items")
        except AttributeError as exc:
            print("AttributeError:", exc)
            #> AttributeError: 'State' object has no attribute 'read_sessions'
    async with app_client(app) as client:
        reply = await client.get("/items")
        print(reply.status_code, reply.json())
        #> 200 []


# --8<-- [end:demo_lifespan]


# --8<-- [start:demo_leak]
async def demo_leak(url: str) -> None:
    async with app_client(create_app(url)) as client:  # test 1
        reply = await client.post("/items", json={"name": "apple"})
        print("test 1:", reply.status_code)
        #> test 1: 201
    async with app_client(create_app(url)) as client:  # test 2
        print("test 2 finds:", (await client.get("/items")).json())
        #> test 2 finds: ['apple']
        reply = await client.post("/items", json={"name": "apple"})
        print("test 2:", reply.status_code, reply.json())
        #> test 2: 409 {'detail': 'name already exists'}


# --8<-- [end:demo_leak]


# --8<-- [start:demo_rolled_back]
async def demo_rolled_back(url: str) -> None:
    engine = create_engine(url)
    app = create_app(url)
    for test in (1, 2):
        async with app_client(app) as client, rolled_back(engine) as sessions:
            use_sessions(app, sessions)
            reply = await client.post("/items", json={"name": "apple"})
            names = (await client.get("/items")).json()
            print(f"test {test}:", reply.status_code, names)
            #> test 1: 201 ['apple']
            #> test 2: 201 ['apple']
    await engine.dispose()
    async with app_client(create_app(url)) as client:  # no overrides
        print("stored:", (await client.get("/items")).json())
        #> stored: []


# --8<-- [end:demo_rolled_back]


# --8<-- [start:demo_naive_join]
async def demo_naive_join(url: str) -> None:
    engine = create_engine(url)
    app = create_app(url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SAWarning)
        async with (
            app_client(app) as client,
            rolled_back_naive(engine) as sessions,
        ):
            use_sessions(app, sessions)
            for name in ("fig", "fig", "kiwi"):
                reply = await client.post("/items", json={"name": name})
                print(name, reply.status_code)
                #> fig 201
                #> fig 409
                #> kiwi 201
    print("SAWarning:", *(str(w.message) for w in caught))
    #> SAWarning: transaction already deassociated from connection
    await engine.dispose()
    async with app_client(create_app(url)) as client:  # the next test
        print("next test finds:", (await client.get("/items")).json())
        #> next test finds: ['kiwi']


# --8<-- [end:demo_naive_join]


# --8<-- [start:demo_write_only]
async def demo_write_only(url: str) -> None:
    engine = create_engine(url)
    app = create_app(url)
    async with app_client(app) as client, rolled_back(engine) as sessions:
        use_write_sessions_only(app, sessions)
        reply = await client.post("/items", json={"name": "plum"})
        print(reply.status_code, (await client.get("/items")).json())
        #> 201 []
        use_sessions(app, sessions)
        print(reply.status_code, (await client.get("/items")).json())
        #> 201 ['plum']
    await engine.dispose()


# --8<-- [end:demo_write_only]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp)}/{{}}.db"
        await demo_lifespan(url.format("lifespan"))
        await demo_leak(url.format("leak"))
        await demo_rolled_back(url.format("rolled_back"))
        await demo_naive_join(url.format("naive_join"))
        await demo_write_only(url.format("write_only"))


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

"""Outside the request: background tasks, workers, concurrency, streaming.

Run it: python -m snippets.background
"""

# --8<-- [start:imports]
import asyncio
import csv
import io
import json
import logging
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from fastapi import (
    APIRouter,
    BackgroundTasks,
    Depends,
    FastAPI,
    Query,
    Request,
)
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import (
    Connection,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    MetaData,
    Numeric,
    String,
    TypeDecorator,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError
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


# --8<-- [end:base]


# --8<-- [start:models]
class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(50), index=True)
    price: Mapped[Decimal] = mapped_column(Numeric(11, 2))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Download(Base):
    __tablename__ = "downloads"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# --8<-- [end:models]


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


# --8<-- [start:session_factory]
async def get_session_factory(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


async def get_read_session_factory(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.read_sessions
    return sessions


# For work that opens its own sessions: a background task, a stream.
SessionFactoryDep = Annotated[Sessions, Depends(get_session_factory)]
ReadSessionFactoryDep = Annotated[Sessions, Depends(get_read_session_factory)]
# --8<-- [end:session_factory]


# --8<-- [start:naive_task]
async def record_download_naive(session: AsyncSession, item_id: int) -> None:
    """Written like endpoint code: the request's session will commit it."""
    session.add(Download(item_id=item_id))


# --8<-- [end:naive_task]


# --8<-- [start:task]
async def record_download(sessions: Sessions, item_id: int) -> None:
    """A task gets ids and a session factory, and commits its own work."""
    async with sessions.begin() as session:
        session.add(Download(item_id=item_id))


# --8<-- [end:task]


# --8<-- [start:tasks_routes]
router = APIRouter()


# --8<-- [start:naive_download_route]
@router.post("/naive/items/{item_id}/download")
async def download_naive(
    item_id: int, tasks: BackgroundTasks, session: SessionDep
) -> dict[str, str]:
    tasks.add_task(record_download_naive, session, item_id)
    return {"url": f"/files/{item_id}"}


# --8<-- [end:naive_download_route]
# --8<-- [start:download_route]
@router.post("/items/{item_id}/download")
async def download(
    item_id: int, tasks: BackgroundTasks, sessions: SessionFactoryDep
) -> dict[str, str]:
    tasks.add_task(record_download, sessions, item_id)  # runs after the reply
    return {"url": f"/files/{item_id}"}


# --8<-- [end:download_route]
# --8<-- [end:tasks_routes]


# --8<-- [start:naive_worker]
_engine: AsyncEngine | None = None


async def count_items_naive(url: str) -> int:
    """A job that keeps one engine for the life of the process."""
    global _engine  # noqa: PLW0603
    if _engine is None:
        _engine = create_engine(url)
    async with create_session_factory(_engine)() as session:
        return await session.scalar(select(func.count(Item.id))) or 0


# --8<-- [end:naive_worker]


# --8<-- [start:worker]
async def count_items(url: str) -> int:
    """A job with an engine of its own: made in this loop, closed in it."""
    engine = create_engine(url)
    try:
        async with create_session_factory(engine)() as session:
            return await session.scalar(select(func.count(Item.id))) or 0
    finally:
        await engine.dispose()  # its connections belong to this loop


def run_jobs(url: str, runs: int = 2) -> list[int]:
    """What a job runner does: asyncio.run() for each job."""
    return [asyncio.run(count_items(url)) for _ in range(runs)]


# --8<-- [end:worker]


# --8<-- [start:naive_gather]
async def totals_naive(
    session: AsyncSession, categories: Sequence[str]
) -> list[Decimal]:
    """One session, several queries at once: SQLAlchemy refuses."""
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(category_total(session, category))
            for category in categories
        ]
    return [task.result() for task in tasks]


async def category_total(session: AsyncSession, category: str) -> Decimal:
    query = select(func.coalesce(func.sum(Item.price), 0)).where(
        Item.category == category
    )
    return Decimal(await session.scalar(query) or 0)


# --8<-- [end:naive_gather]


# --8<-- [start:gather]
async def totals(
    sessions: Sessions, categories: Sequence[str], at_once: int = 4
) -> list[Decimal]:
    """One session per task, and no more tasks at once than `at_once`.

    Keep `at_once` at or below the pool's size (pool_size + max_overflow),
    or the tasks wait for connections instead of for the database.
    """
    limit = asyncio.Semaphore(at_once)

    async def one(category: str) -> Decimal:
        async with limit, sessions() as session:
            return await category_total(session, category)

    return await asyncio.gather(*(one(category) for category in categories))


# --8<-- [end:gather]


# --8<-- [start:naive_export]
async def export_csv_naive(session: AsyncSession) -> str:
    """Every row in memory, then the whole file in memory: grows with rows."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(FIELDS)
    for item in (await session.scalars(select(Item).order_by(Item.id))).all():
        writer.writerow(record_of(item).values())
    return out.getvalue()


# --8<-- [end:naive_export]


# --8<-- [start:export]
FIELDS = ("id", "name", "category", "price", "created_at")
Format = Literal["csv", "ndjson"]
MEDIA_TYPES: dict[Format, str] = {
    "csv": "text/csv; charset=utf-8",
    "ndjson": "application/x-ndjson",
}


def record_of(item: Item) -> dict[str, int | str]:
    """One item as JSON: the same fields, in the same order, as the CSV."""
    return {
        "id": item.id,
        "name": item.name,
        "category": item.category,
        "price": str(item.price),  # a decimal string: no float rounding
        "created_at": item.created_at.isoformat(),
    }


# --8<-- [start:export_lines]
async def export_lines(
    sessions: Sessions, fmt: Format, category: str | None
) -> AsyncIterator[str]:
    """Stream items in id order, 1,000 rows in memory at a time.

    The generator opens its own session: the request's is closed before a
    streamed body is sent. Leaving the `async with` (the end, an error, or
    a client that went away) returns the connection to the pool.
    """
    query = select(Item).order_by(Item.id).execution_options(yield_per=1000)
    if category is not None:
        query = query.where(Item.category == category)
    async with sessions() as session:
        if fmt == "csv":
            yield csv_line(FIELDS)
        async for item in await session.stream_scalars(query):
            record = record_of(item)
            if fmt == "csv":
                yield csv_line(record.values())
            else:
                yield json.dumps(record) + "\n"


# --8<-- [end:export_lines]
def csv_line(values: Iterable[object]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(values)  # quotes commas, quotes, newlines
    return out.getvalue()


# --8<-- [start:export_items]
@router.get("/items/export", summary="Every item, streamed as CSV or NDJSON")
async def export_items(
    read_sessions: ReadSessionFactoryDep,
    fmt: Annotated[Format, Query(alias="format")] = "csv",
    category: Annotated[str | None, Query(min_length=1, max_length=50)] = None,
) -> StreamingResponse:
    lines = export_lines(read_sessions, fmt, category)
    return StreamingResponse(lines, media_type=MEDIA_TYPES[fmt])


# --8<-- [end:export_items]
# --8<-- [end:export]


# --8<-- [start:app]
def create_app(database_url: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.state.database_url = database_url
    app.add_exception_handler(DBAPIError, database_error)
    app.include_router(router)
    return app


# --8<-- [end:app]


# --8<-- [start:seed]
async def seed_items(sessions: Sessions, count: int) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {
            "name": f"Item {n}",
            "category": ("desk", "lamp", "mug")[n % 3],
            "price": Decimal(n % 50) + Decimal("0.99"),
            "created_at": start + timedelta(minutes=n),
        }
        for n in range(1, count + 1)
    ]
    async with sessions.begin() as session:
        await session.execute(insert(Item), rows)


async def count_downloads(sessions: Sessions) -> int:
    async with sessions() as session:
        return await session.scalar(select(func.count(Download.id))) or 0


# --8<-- [end:seed]


# --8<-- [start:demo_tasks]
async def demo_tasks(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        naive = await c.post("/naive/items/1/download")
        print(
            "naive:",
            naive.status_code,
            "stored:",
            await count_downloads(app.state.sessions),
        )
        #> naive: 200 stored: 0
        fixed = await c.post("/items/1/download")
        print(
            "fixed:",
            fixed.status_code,
            "stored:",
            await count_downloads(app.state.sessions),
        )
        #> fixed: 200 stored: 1


# --8<-- [end:demo_tasks]


# --8<-- [start:demo_worker]
async def demo_worker(url: str) -> None:
    # asyncio.run() cannot nest: run the "job runner" in a thread of its own.
    print("two runs:", await asyncio.to_thread(run_jobs, url))
    #> two runs: [3000, 3000]


# --8<-- [end:demo_worker]


# --8<-- [start:demo_gather]
async def demo_gather(sessions: Sessions) -> None:
    categories = ["desk", "lamp", "mug"]
    async with sessions() as session:
        try:
            await totals_naive(session, categories)
        except ExceptionGroup as group:  # the TaskGroup's first failure
            print(str(group.exceptions[0]).split(";")[0])
            #> This session is provisioning a new connection
    print(await totals(sessions, categories, at_once=2))
    #> [Decimal('25490.00'), Decimal('25490.00'), Decimal('25490.00')]


# --8<-- [end:demo_gather]


# --8<-- [start:demo_export]
async def demo_export(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        csv_reply = await c.get("/items/export", params={"format": "csv"})
        csv_lines = csv_reply.text.splitlines()
        print(csv_reply.headers["content-type"], len(csv_lines), "lines")
        #> text/csv; charset=utf-8 3001 lines
        print(csv_lines[1])
        #> 1,Item 1,lamp,1.99,2026-01-01T00:01:00+00:00
        json_reply = await c.get("/items/export", params={"format": "ndjson"})
        json_lines = json_reply.text.splitlines()
        print(json_reply.headers["content-type"], len(json_lines), "lines")
        #> application/x-ndjson 3000 lines
        print(list(json.loads(json_lines[0])))  # the same fields
        #> ['id', 'name', 'category', 'price', 'created_at']
        bad = await c.get("/items/export", params={"format": "xml"})
        print(bad.status_code)
        #> 422


# --8<-- [end:demo_export]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'shop.db'}"
        app = create_app(url)
        async with lifespan(app):
            await seed_items(app.state.sessions, 3000)
            await demo_tasks(app)
            await demo_worker(url)
            await demo_gather(app.state.sessions)
            await demo_export(app)


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

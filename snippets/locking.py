"""Optimistic locking: every concurrent write counts, or is refused out loud.

Run it: python -m snippets.locking
"""

# --8<-- [start:imports]
import asyncio
import logging
import re
import tempfile
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import httpx
from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Request,
    Response,
    status,
)
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from sqlalchemy import (
    Connection,
    CursorResult,
    Index,
    MetaData,
    String,
    event,
    select,
    update,
)
from sqlalchemy.engine.interfaces import DBAPIConnection, DBAPICursor
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.orm.exc import StaleDataError
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


class Counter(Base):
    """What most tutorials write: no record of which state a write saw."""

    __tablename__ = "counters"

    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int] = mapped_column(default=0)


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    stock: Mapped[int] = mapped_column(default=0)
    version: Mapped[int] = mapped_column()

    # The ORM sets version = 1 on INSERT, and adds "AND version = <the version
    # it loaded>" to every UPDATE it flushes, which also sets version + 1.
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


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


# --8<-- [start:default_engine]
def create_default_engine(url: str, **options: Any) -> AsyncEngine:
    # What most tutorials write: the driver decides when a transaction begins.
    return create_async_engine(url, **options)


# --8<-- [end:default_engine]


# --8<-- [start:record_sql]
@contextmanager
def recorded_sql(engine: AsyncEngine) -> Iterator[list[str]]:
    """Collect every SQL statement the engine sends, as the driver gets it."""
    statements: list[str] = []

    def record(
        conn: Connection, cursor: DBAPICursor, statement: str, *_: object
    ) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def clauses(statements: list[str], verb: str) -> list[str]:
    """The first statement that starts with `verb`, a line per clause."""
    statement = next(s for s in statements if s.startswith(verb))
    one_line = " ".join(statement.split())
    return re.sub(
        r" (SET|FROM|WHERE|RETURNING) ", r"\n\1 ", one_line
    ).splitlines()


# --8<-- [end:record_sql]


# --8<-- [start:naive]
async def add_one_naive(session: AsyncSession, counter_id: int) -> None:
    counter = await session.get(Counter, counter_id)  # SELECT: value = 0
    if counter is None:
        raise LookupError(counter_id)
    counter.value += 1  # sent at commit: SET value = 1, whatever is stored


# --8<-- [end:naive]


# --8<-- [start:race]
Writer = Callable[[asyncio.Barrier], Awaitable[None]]
WRITERS = 50


async def race(writer: Writer, writers: int = WRITERS) -> None:
    """Start `writers` copies of `writer` at once, sharing one barrier."""
    barrier = asyncio.Barrier(writers)
    await asyncio.gather(*(writer(barrier) for _ in range(writers)))


def naive_writer(
    sessions: Sessions,
    counter_id: int,
    outcomes: list[str],
    add_one: Callable[[AsyncSession, int], Awaitable[None]] = add_one_naive,
) -> Writer:
    turn = asyncio.Lock()  # shared by every copy of the writer below

    async def writer(barrier: asyncio.Barrier) -> None:
        async with sessions() as session:
            await add_one(session, counter_id)
            await barrier.wait()  # every writer has read before any writes
            async with turn:  # then they write one at a time: the best case
                await session.commit()
        outcomes.append("ok")

    return writer


async def create_counter(sessions: Sessions) -> int:
    async with sessions.begin() as session:
        counter = Counter(value=0)
        session.add(counter)
        await session.flush()
        return counter.id


async def read_counter(sessions: Sessions, counter_id: int) -> int:
    async with sessions() as session:
        value = await session.scalar(
            select(Counter.value).where(Counter.id == counter_id)
        )
        return int(value or 0)


# --8<-- [end:race]


# --8<-- [start:demo_lost_update]
async def demo_lost_update(url: str) -> None:
    engine = create_default_engine(url, pool_size=WRITERS)  # one per writer
    sessions = create_session_factory(engine)
    counter_id = await create_counter(sessions)
    outcomes: list[str] = []
    with recorded_sql(engine) as sql:
        await race(naive_writer(sessions, counter_id, outcomes))
    value = await read_counter(sessions, counter_id)
    print(outcomes.count("ok"), "writers succeeded, counter =", value)
    #> 50 writers succeeded, counter = 1
    for line in clauses(sql, "UPDATE"):
        print(line)
        #> UPDATE counters
        #> SET value=?
        #> WHERE counters.id = ?
    await engine.dispose()


# --8<-- [end:demo_lost_update]


# --8<-- [start:errors]
class ItemNotFoundError(Exception):
    def __init__(self, item_id: int) -> None:
        super().__init__(f"item {item_id} does not exist")
        self.item_id = item_id


class VersionConflictError(Exception):
    def __init__(self, item_id: int, version: int) -> None:
        super().__init__(f"item {item_id} is no longer at version {version}")
        self.item_id = item_id
        self.version = version


WRITABLE = frozenset({"name", "stock"})  # never the id, never the version


def writable(changes: Mapping[str, object]) -> Mapping[str, object]:
    if unknown := changes.keys() - WRITABLE:
        raise ValueError(f"not writable: {sorted(unknown)}")
    return changes


# --8<-- [end:errors]


# --8<-- [start:version_id_col]
async def get_item(session: AsyncSession, item_id: int) -> Item:
    item = await session.get(Item, item_id)
    if item is None:
        raise ItemNotFoundError(item_id)
    return item


async def update_item(
    session: AsyncSession,
    item_id: int,
    version: int,
    changes: Mapping[str, object],
) -> Item:
    """Apply `changes` if the item is still at `version`, the one read."""
    item = await get_item(session, item_id)
    if item.version != version:  # changed before we even loaded it
        raise VersionConflictError(item_id, version)
    for field, value in writable(changes).items():
        setattr(item, field, value)
    try:
        await session.flush()  # UPDATE ... WHERE id = ? AND version = ?
    except StaleDataError as exc:  # changed between our SELECT and UPDATE
        raise VersionConflictError(item_id, version) from exc
    return item


# --8<-- [end:version_id_col]


# --8<-- [start:naive_cas]
async def update_item_naive_cas(
    session: AsyncSession,
    item_id: int,
    version: int,
    changes: Mapping[str, object],
) -> int:
    """The popular version: zero rows always means a conflict."""
    result = await session.execute(
        update(Item)
        .where(Item.id == item_id, Item.version == version)
        .values(**writable(changes), version=Item.version + 1)
    )
    if cast(CursorResult[Any], result).rowcount == 0:
        raise VersionConflictError(item_id, version)  # or it never existed
    return version + 1


# --8<-- [end:naive_cas]


# --8<-- [start:compare_and_swap]
async def update_item_cas(
    session: AsyncSession,
    item_id: int,
    version: int,
    changes: Mapping[str, object],
) -> int:
    """The same by hand: one UPDATE that matches only the version read."""
    result = await session.execute(
        update(Item)
        .where(Item.id == item_id, Item.version == version)
        .values(**writable(changes), version=Item.version + 1)
    )
    if cast(CursorResult[Any], result).rowcount == 1:
        return version + 1
    # --8<-- [start:tell_apart]
    # 0 rows: tell "no such item" (404) from "someone else wrote" (409).
    found = await session.scalar(select(Item.id).where(Item.id == item_id))
    if found is None:
        raise ItemNotFoundError(item_id)
    raise VersionConflictError(item_id, version)
    # --8<-- [end:tell_apart]


# --8<-- [end:compare_and_swap]


# --8<-- [start:create_item]
Update = Callable[
    [AsyncSession, int, int, Mapping[str, object]], Awaitable[object]
]


async def create_item(sessions: Sessions, name: str, stock: int = 0) -> int:
    async with sessions.begin() as session:
        item = Item(name=name, stock=stock)
        session.add(item)
        await session.flush()
        return item.id


async def read_item_row(sessions: Sessions, item_id: int) -> Item:
    async with sessions() as session:
        return await get_item(session, item_id)


async def failure(
    sessions: Sessions,
    update_fn: Update,
    item_id: int,
    version: int,
    changes: Mapping[str, object],
) -> str:
    """The name of the error an update raises, or "ok"."""
    try:
        async with sessions.begin() as session:
            await update_fn(session, item_id, version, changes)
    except (ItemNotFoundError, VersionConflictError) as exc:
        return type(exc).__name__
    return "ok"


# --8<-- [end:create_item]


# --8<-- [start:demo_version_check]
async def demo_version_check(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    item_id = await create_item(sessions, "lamp", stock=10)
    with recorded_sql(engine) as sql:
        async with sessions.begin() as session:
            item = await update_item(session, item_id, 1, {"stock": 7})
    print("stock", item.stock, "version", item.version)
    #> stock 7 version 2
    for line in clauses(sql, "UPDATE"):
        print(line)
        #> UPDATE items
        #> SET stock=?, version=?
        #> WHERE items.id = ? AND items.version = ?

    with recorded_sql(engine) as sql:
        async with sessions.begin() as session:
            version = await update_item_cas(session, item_id, 2, {"stock": 6})
    print("version", version)
    #> version 3
    for line in clauses(sql, "UPDATE"):
        print(line)
        #> UPDATE items
        #> SET stock=?, version=(items.version + ?)
        #> WHERE items.id = ? AND items.version = ?

    for update_fn in (update_item, update_item_cas):
        zero = {"stock": 0}
        stale = await failure(sessions, update_fn, item_id, 1, zero)
        missing = await failure(sessions, update_fn, 999, 1, zero)
        print(f"{update_fn.__name__}:", stale, missing)
        #> update_item: VersionConflictError ItemNotFoundError
        #> update_item_cas: VersionConflictError ItemNotFoundError


# --8<-- [end:demo_version_check]


# --8<-- [start:demo_refused]
def checked_writer(
    sessions: Sessions,
    read_sessions: Sessions,
    item_id: int,
    update_fn: Update,
    outcomes: list[str],
) -> Writer:
    turn = asyncio.Lock()

    async def writer(barrier: asyncio.Barrier) -> None:
        item = await read_item_row(read_sessions, item_id)  # as a GET would
        await barrier.wait()  # every writer has read version 1
        async with turn:  # then each writes in a transaction of its own
            changes = {"stock": item.stock + 1}
            outcomes.append(
                await failure(
                    sessions, update_fn, item_id, item.version, changes
                )
            )

    return writer


async def demo_refused(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    read_sessions = create_read_session_factory(engine)
    item_id = await create_item(sessions, "refused")
    outcomes: list[str] = []
    await race(
        checked_writer(sessions, read_sessions, item_id, update_item, outcomes)
    )
    item = await read_item_row(read_sessions, item_id)
    ok, refused = outcomes.count("ok"), outcomes.count("VersionConflictError")
    print(f"{ok} ok, {refused} refused, stock = {item.stock}")
    #> 1 ok, 49 refused, stock = 1


# --8<-- [end:demo_refused]


# --8<-- [start:retry]
T = TypeVar("T")


async def retry_on_conflict(
    sessions: Sessions,
    work: Callable[[AsyncSession], Awaitable[T]],
    attempts: int = 10,
) -> T:
    """Run `work` in a fresh transaction until it commits without conflict."""
    for _ in range(attempts - 1):
        try:
            async with sessions.begin() as session:
                return await work(session)
        except VersionConflictError:
            continue  # another writer won: read again, apply again
    async with sessions.begin() as session:
        return await work(session)  # the last attempt lets its conflict out


# --8<-- [end:retry]


# --8<-- [start:atomic]
async def add_stock_atomic(
    session: AsyncSession, item_id: int, amount: int
) -> int:
    """No read: the database adds to what it has. The version still goes up,
    so a client holding an older ETag learns that the item changed."""
    stock: int | None = await session.scalar(
        update(Item)
        .where(Item.id == item_id)
        .values(stock=Item.stock + amount, version=Item.version + 1)
        .returning(Item.stock)
    )
    if stock is None:
        raise ItemNotFoundError(item_id)
    return stock


# --8<-- [end:atomic]


# --8<-- [start:demo_atomic]
FEW_WRITERS = 10


def atomic_writer(sessions: Sessions, item_id: int) -> Writer:
    async def writer(barrier: asyncio.Barrier) -> None:
        await barrier.wait()  # nothing to read: all write at once
        async with sessions.begin() as session:
            await add_stock_atomic(session, item_id, 1)

    return writer


async def demo_atomic(engine: AsyncEngine, writers: int = FEW_WRITERS) -> None:
    sessions = create_session_factory(engine)
    item_id = await create_item(sessions, "atomic")
    with recorded_sql(engine) as sql:
        await race(atomic_writer(sessions, item_id), writers)
    item = await read_item_row(create_read_session_factory(engine), item_id)
    print("stock =", item.stock, "version =", item.version)
    #> stock = 10 version = 11
    for line in clauses(sql, "UPDATE"):
        print(line)
        #> UPDATE items
        #> SET stock=(items.stock + ?), version=(items.version + ?)
        #> WHERE items.id = ?
        #> RETURNING stock


# --8<-- [end:demo_atomic]


# --8<-- [start:for_update]
async def add_one_locked(session: AsyncSession, counter_id: int) -> None:
    """PostgreSQL: lock the row as you read it; other writers wait here."""
    query = select(Counter).where(Counter.id == counter_id).with_for_update()
    counter = (await session.scalars(query)).one()
    counter.value += 1


# --8<-- [end:for_update]


# --8<-- [start:demo_for_update]
async def demo_for_update(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    counter_id = await create_counter(sessions)
    with recorded_sql(engine) as sql:
        async with sessions.begin() as session:
            await add_one_locked(session, counter_id)
    for statement in sql:  # everything SQLite received
        for line in clauses([statement], statement.split()[0]):
            print(line)
            #> BEGIN IMMEDIATE
            #> SELECT counters.id, counters.value
            #> FROM counters
            #> WHERE counters.id = ?
            #> UPDATE counters
            #> SET value=?
            #> WHERE counters.id = ?


# --8<-- [end:demo_for_update]


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
MAX_INT = 2**31 - 1
ItemId = Annotated[int, PathParam(ge=1, le=MAX_INT)]


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    stock: int
    version: int


class ItemPatch(PatchModel):
    name: Annotated[str, Field(min_length=1, max_length=100)] = unchanged()
    stock: Annotated[int, Field(ge=0, le=MAX_INT)] = unchanged()
    version: Annotated[int, Field(ge=1, le=MAX_INT)] = unchanged()  # proof


Responses = dict[int | str, dict[str, Any]]
NOT_FOUND: Responses = {404: {"description": "No such item"}}
PATCH_ERRORS: Responses = {
    **NOT_FOUND,
    409: {"description": "The version in the body is not the current one"},
    412: {"description": "If-Match names no current version"},
    428: {"description": "Neither If-Match nor a version was sent"},
}


# --8<-- [end:schemas]


# --8<-- [start:etag]
ETAG = re.compile(r'"([0-9]{1,10})"')  # a strong ETag: "<version>"


def etag(version: int) -> str:
    return f'"{version}"'


def version_from_if_match(value: str) -> int:
    if value.strip() == "*":  # "any version": proves nothing was read
        raise HTTPException(
            status.HTTP_428_PRECONDITION_REQUIRED,
            'send the ETag you read: If-Match: "<version>"',
        )
    match = ETAG.fullmatch(value.strip())
    if match is None or int(match.group(1)) > MAX_INT:
        raise HTTPException(
            status.HTTP_412_PRECONDITION_FAILED, "If-Match matches no version"
        )
    return int(match.group(1))


# --8<-- [end:etag]


# --8<-- [start:routes]
router = APIRouter()


@router.get("/items/{item_id}", responses=NOT_FOUND)
async def read_item_route(
    item_id: ItemId, session: ReadSessionDep, response: Response
) -> ItemOut:
    item = await get_item(session, item_id)
    response.headers["ETag"] = etag(item.version)
    return ItemOut.model_validate(item)


@router.patch("/items/{item_id}", responses=PATCH_ERRORS)
async def update_item_route(
    item_id: ItemId,
    patch: ItemPatch,
    session: SessionDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> ItemOut:
    changes = {k: v for k, v in patch.changes().items() if k != "version"}
    if if_match is not None:
        version = version_from_if_match(if_match)
        try:
            item = await update_item(session, item_id, version, changes)
        except VersionConflictError as exc:
            raise HTTPException(
                status.HTTP_412_PRECONDITION_FAILED,
                "the item changed since you read it: GET it again",
            ) from exc
    elif "version" in patch.model_fields_set:  # a stale body version: 409
        item = await update_item(session, item_id, patch.version, changes)
    else:
        raise HTTPException(
            status.HTTP_428_PRECONDITION_REQUIRED,
            'send If-Match: "<version>" (the ETag you read)',
        )
    response.headers["ETag"] = etag(item.version)
    return ItemOut.model_validate(item)


# --8<-- [end:routes]


# --8<-- [start:create_app]
def create_app(database_url: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.state.database_url = database_url
    app.include_router(router)
    app.add_exception_handler(ItemNotFoundError, not_found)
    app.add_exception_handler(VersionConflictError, conflict)
    app.add_exception_handler(DBAPIError, database_error)
    return app


async def not_found(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status.HTTP_404_NOT_FOUND)


async def conflict(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status.HTTP_409_CONFLICT)


# --8<-- [end:create_app]


# --8<-- [start:demo_http]
def show(reply: httpx.Response) -> str:
    tag = reply.headers.get("ETag", "-")
    body = reply.json()
    detail = body.get("detail") if "detail" in body else body.get("stock")
    return f"{reply.status_code} ETag={tag} {detail}"


async def demo_http(app: FastAPI) -> None:
    item_id = await create_item(app.state.sessions, "desk", stock=10)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        url = f"/items/{item_id}"
        alice = await c.get(url)
        bob = await c.get(url)
        print("both read:", show(alice), "|", show(bob))
        #> both read: 200 ETag="1" 10 | 200 ETag="1" 10

        sold_3 = {"If-Match": alice.headers["ETag"]}
        print(
            "alice:",
            show(await c.patch(url, json={"stock": 7}, headers=sold_3)),
        )
        #> alice: 200 ETag="2" 7
        sold_2 = {"If-Match": bob.headers["ETag"]}
        print(
            "bob:", show(await c.patch(url, json={"stock": 8}, headers=sold_2))
        )
        #> bob: 412 ETag=- the item changed since you read it: GET it again
        bob = await c.get(url)
        sold_2 = {"If-Match": bob.headers["ETag"]}
        print(
            "bob:", show(await c.patch(url, json={"stock": 5}, headers=sold_2))
        )
        #> bob: 200 ETag="3" 5

        print(show(await c.patch(url, json={"stock": 1})))
        #> 428 ETag=- send If-Match: "<version>" (the ETag you read)
        print(show(await c.patch(url, json={"stock": 1, "version": 1})))
        #> 409 ETag=- item 4 is no longer at version 1
        missing = await c.patch(
            "/items/99", json={}, headers={"If-Match": '"1"'}
        )
        print(show(missing))
        #> 404 ETag=- item 99 does not exist


# --8<-- [end:demo_http]


# --8<-- [start:retry_route]
async def get_session_factory(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


# The factory, not a session: each attempt opens its own transaction.
SessionFactoryDep = Annotated[Sessions, Depends(get_session_factory)]


class Restock(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int = Field(ge=1, le=1_000_000)


RESTOCK_ERRORS: Responses = {
    **NOT_FOUND,
    409: {"description": "Still in conflict after 10 attempts, or too large"},
}


@router.post("/items/{item_id}/restock", responses=RESTOCK_ERRORS)
async def restock_item(
    item_id: ItemId, body: Restock, sessions: SessionFactoryDep
) -> ItemOut:
    async def restock(session: AsyncSession) -> Item:
        item = await get_item(session, item_id)
        stock = item.stock + body.amount  # Python between the read and write
        if stock > MAX_INT:
            raise HTTPException(status.HTTP_409_CONFLICT, "stock too large")
        changes = {"stock": stock}
        return await update_item(session, item_id, item.version, changes)

    item = await retry_on_conflict(sessions, restock)  # commits each attempt
    return ItemOut.model_validate(item)


# --8<-- [end:retry_route]


# --8<-- [start:demo_retry]
async def demo_retry(app: FastAPI, requests: int = FEW_WRITERS) -> None:
    item_id = await create_item(app.state.sessions, "retried")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        url = f"/items/{item_id}"
        replies = await asyncio.gather(
            *(
                c.post(f"{url}/restock", json={"amount": 1})
                for _ in range(requests)
            )
        )
        stock = (await c.get(url)).json()["stock"]
    ok = [reply.status_code for reply in replies].count(200)
    print(f"{ok} of {requests} answered 200, stock = {stock}")
    #> 10 of 10 answered 200, stock = 10


# --8<-- [end:demo_retry]


# --8<-- [start:demo_sqlite_locks]
def short(exc: Exception) -> str:
    """The first line of an error message, without SQLAlchemy's doc link."""
    return str(exc).splitlines()[0].split(" (Background on")[0]


async def demo_database_is_locked(url: str) -> None:
    patient = create_engine(url)
    impatient = create_engine(url, connect_args={"timeout": 0})  # no waiting
    bump = update(Counter).values(value=Counter.value + 1)
    async with patient.begin() as holder:
        await holder.execute(bump)  # holds the write lock until it commits
        try:
            async with impatient.begin() as conn:
                await conn.execute(bump)
        except OperationalError as exc:
            print(short(exc))
            #> (sqlite3.OperationalError) database is locked
    async with impatient.begin() as conn:  # the lock is free again
        await conn.execute(bump)
    print("after the commit: ok")
    #> after the commit: ok
    await patient.dispose()
    await impatient.dispose()


def locked_writer(
    sessions: Sessions,
    counter_id: int,
    add_one: Callable[[AsyncSession, int], Awaitable[None]] = add_one_naive,
) -> Writer:
    async def writer(barrier: asyncio.Barrier) -> None:
        await barrier.wait()  # all start together; the lock orders them
        async with sessions.begin() as session:
            await add_one(session, counter_id)

    return writer


async def demo_one_writer(url: str, writers: int = FEW_WRITERS) -> None:
    engine = create_engine(url, pool_size=writers)
    sessions = create_session_factory(engine)
    counter_id = await create_counter(sessions)
    with recorded_sql(engine) as sql:
        async with sessions.begin() as session:
            await add_one_naive(session, counter_id)
    for statement in sql:
        print(statement.splitlines()[0].strip())
        #> BEGIN IMMEDIATE
        #> SELECT counters.id, counters.value
        #> UPDATE counters SET value=? WHERE counters.id = ?
    await race(locked_writer(sessions, counter_id), writers)
    read_sessions = create_read_session_factory(engine)
    print("counter =", await read_counter(read_sessions, counter_id))
    #> counter = 11
    await engine.dispose()


# --8<-- [end:demo_sqlite_locks]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'locking.db'}"
        app = create_app(url)
        async with lifespan(app):  # creates the tables
            await demo_lost_update(url)
            engine = create_engine(url)
            await demo_version_check(engine)
            await demo_refused(engine)
            await demo_atomic(engine)
            await demo_for_update(engine)
            await engine.dispose()
            await demo_http(app)
            await demo_retry(app)
            await demo_database_is_locked(url)
            await demo_one_writer(url)


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

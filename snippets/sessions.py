"""Sessions: the cookbook's foundation, and the traps each piece of it avoids.

Run it: python -m snippets.sessions
"""

# --8<-- [start:imports]
import asyncio
import gc
import json
import logging
import tempfile
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    CheckConstraint,
    Connection,
    ForeignKey,
    Index,
    MetaData,
    String,
    UniqueConstraint,
    event,
    func,
    select,
)
from sqlalchemy.engine.interfaces import DBAPIConnection, DBAPICursor
from sqlalchemy.exc import (
    DBAPIError,
    InvalidRequestError,
    SQLAlchemyError,
    StatementError,
)
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


# --8<-- [start:naming]
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


# --8<-- [end:naming]


# --8<-- [start:models]
class Author(Base):
    __tablename__ = "authors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    books: Mapped[list["Book"]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "books"
    __table_args__ = (
        UniqueConstraint("author_id", "title"),
        CheckConstraint("pages > 0", name="positive_pages"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    pages: Mapped[int] = mapped_column(default=1)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books", lazy="raise")


# --8<-- [end:models]


# --8<-- [start:engine]
# --8<-- [start:engine_factory]
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


# --8<-- [end:engine_factory]


# --8<-- [start:sqlite_begin]
def begin_sqlite_transaction(conn: Connection) -> None:
    # IMMEDIATE takes the write lock at BEGIN: a transaction that reads and
    # then writes waits its turn instead of failing with "database is locked".
    mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    if mode is not None:  # None: no BEGIN, each statement commits on its own
        conn.exec_driver_sql(f"BEGIN {mode}")


# --8<-- [end:sqlite_begin]


# --8<-- [start:session_factories]
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


# --8<-- [end:session_factories]
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
# --8<-- [start:scope]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
# --8<-- [end:scope]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]
# --8<-- [end:dependency]

# --8<-- [start:naive_dependency]
# Naive: the default scope runs the commit after the response was sent.
NaiveSessionDep = Annotated[AsyncSession, Depends(get_session)]
# --8<-- [end:naive_dependency]


# --8<-- [start:schemas]
class BookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    author_id: int


class AuthorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    book_titles: list[str] = []


class AuthorOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str


# --8<-- [end:schemas]


# --8<-- [start:app]
def create_app(database_url: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.state.database_url = database_url
    app.add_exception_handler(DBAPIError, database_error)  # see below

    @app.post("/naive/books", status_code=status.HTTP_201_CREATED)
    async def add_book_naive(book: BookIn, session: NaiveSessionDep) -> BookIn:
        session.add(Book(**book.model_dump()))
        return book

    @app.post("/books", status_code=status.HTTP_201_CREATED)
    async def add_book(book: BookIn, session: SessionDep) -> BookIn:
        session.add(Book(**book.model_dump()))
        return book

    @app.post("/authors", status_code=status.HTTP_201_CREATED)
    async def add_author(author: AuthorIn, session: SessionDep) -> AuthorOut:
        row = Author(name=author.name)
        row.books = [Book(title=title) for title in author.book_titles]
        session.add(row)
        await session.flush()  # sends the INSERTs now, to learn the id
        return AuthorOut.model_validate(row)

    @app.get("/authors")
    async def list_authors(session: ReadSessionDep) -> list[AuthorOut]:
        rows = await session.scalars(select(Author).order_by(Author.id))
        return [AuthorOut.model_validate(row) for row in rows]

    return app


# --8<-- [end:app]


# --8<-- [start:load_books]
async def get_author_with_books(session: AsyncSession, name: str) -> Author:
    query = (
        select(Author)
        .where(Author.name == name)
        .options(selectinload(Author.books))  # load now, in one more query
    )
    return (await session.scalars(query)).one()


# --8<-- [end:load_books]


# --8<-- [start:helpers]
def short(exc: Exception) -> str:
    """The first line of an error message, without SQLAlchemy's doc link."""
    return str(exc).splitlines()[0].split(" (Background on")[0]


async def count(sessions: Sessions, model: type) -> int:
    async with sessions() as session:
        total = await session.scalar(select(func.count()).select_from(model))
        return int(total or 0)


# --8<-- [end:helpers]


# --8<-- [start:demo_pragmas]
async def demo_pragmas(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        for pragma in ("foreign_keys", "journal_mode", "busy_timeout"):
            value = await conn.exec_driver_sql(f"PRAGMA {pragma}")
            print(pragma, "=", value.scalar())
            #> foreign_keys = 1
            #> journal_mode = wal
            #> busy_timeout = 5000
    async with create_session_factory(engine)() as session:
        session.add(Book(title="Orphan", author_id=999))
        try:
            await session.flush()
        except DBAPIError as exc:
            print(short(exc))
            #> (sqlite3.IntegrityError) FOREIGN KEY constraint failed


# --8<-- [end:demo_pragmas]


# --8<-- [start:demo_commit_timing]
async def demo_commit_timing(app: FastAPI) -> None:
    sessions = app.state.sessions
    # raise_app_exceptions=False: like a real server, log errors that happen
    # after the response instead of raising them in the client.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        orphan = {"title": "Orphan", "author_id": 999}
        naive = await c.post("/naive/books", json=orphan)
        print(
            "naive:",
            naive.status_code,
            "books stored:",
            await count(sessions, Book),
        )
        #> naive: 201 books stored: 0
        fixed = await c.post("/books", json=orphan)
        print("fixed:", fixed.status_code, fixed.json())
        #> fixed: 409 {'detail': 'references a row that does not exist'}


# --8<-- [end:demo_commit_timing]


# --8<-- [start:demo_rollback]
async def demo_rollback(app: FastAPI) -> None:
    sessions = app.state.sessions
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        twice = {"name": "Ann", "book_titles": ["Dune", "Dune"]}
        reply = await c.post("/authors", json=twice)
        print(reply.status_code, reply.json())
        #> 409 {'detail': 'author_id, title already exists'}
        print("authors stored:", await count(sessions, Author))
        #> authors stored: 0
        once = {"name": "Ann", "book_titles": ["Dune", "Emma"]}
        reply = await c.post("/authors", json=once)
        print(reply.status_code, reply.json())
        #> 201 {'id': 1, 'name': 'Ann'}


# --8<-- [end:demo_rollback]


# --8<-- [start:sql_log]
@contextmanager
def sql_log(engine: AsyncEngine) -> Iterator[list[str]]:
    """Each statement the engine sends, and each COMMIT and ROLLBACK."""
    sent: list[str] = []

    def statement(
        conn: Connection, cursor: DBAPICursor, sql: str, *_: object
    ) -> None:
        sent.append(sql)

    def commit(conn: Connection) -> None:
        sent.append("COMMIT")

    def rollback(conn: Connection) -> None:
        sent.append("ROLLBACK")

    hooks: dict[str, Callable[..., None]] = {
        "before_cursor_execute": statement,
        "commit": commit,
        "rollback": rollback,
    }
    for name, hook in hooks.items():
        event.listen(engine.sync_engine, name, hook)
    try:
        yield sent
    finally:
        for name, hook in hooks.items():
            event.remove(engine.sync_engine, name, hook)


# --8<-- [end:sql_log]


# --8<-- [start:demo_savepoint_first]
async def demo_savepoint_first(url: str, engine: AsyncEngine) -> None:
    driver_begin = create_async_engine(url)  # no listeners: the driver's BEGIN
    kept, sql = await dry_run(driver_begin)
    print("driver's BEGIN: rolled back, kept", kept)
    #> driver's BEGIN: rolled back, kept 1
    for statement in sql:
        print("   ", statement)
        #>     SAVEPOINT sa_savepoint_1
        #>     INSERT INTO authors (name) VALUES (?)
        #>     RELEASE SAVEPOINT sa_savepoint_1
        #>     ROLLBACK
    await driver_begin.dispose()

    kept, sql = await dry_run(engine)
    print("ours: rolled back, kept", kept)
    #> ours: rolled back, kept 0
    for statement in sql:
        print("   ", statement)
        #>     BEGIN IMMEDIATE
        #>     SAVEPOINT sa_savepoint_1
        #>     INSERT INTO authors (name) VALUES (?)
        #>     RELEASE SAVEPOINT sa_savepoint_1
        #>     ROLLBACK


async def dry_run(engine: AsyncEngine) -> tuple[int, list[str]]:
    """Write in a savepoint, roll everything back: how many rows stayed?"""
    sessions = create_session_factory(engine)
    before = await count(sessions, Author)
    with sql_log(engine) as sql:
        async with sessions() as session:
            async with session.begin_nested():  # a SAVEPOINT comes first
                session.add(Author(name=f"Dry run {before}"))
            await session.rollback()  # keep nothing
    return await count(sessions, Author) - before, sql


# --8<-- [end:demo_savepoint_first]


# --8<-- [start:demo_begin_modes]
async def demo_begin_modes(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    read_sessions = create_read_session_factory(engine)
    with sql_log(engine) as sql:
        async with sessions.begin() as session:  # what SessionDep opens
            session.add(Author(name="Bo"))
        async with read_sessions() as session:  # what ReadSessionDep opens
            await session.scalar(select(func.count()).select_from(Author))
    for statement in sql:
        print(" ".join(statement.split()))  # on one line
        #> BEGIN IMMEDIATE
        #> INSERT INTO authors (name) VALUES (?)
        #> COMMIT
        #> BEGIN DEFERRED
        #> SELECT count(*) AS count_1 FROM authors
        #> ROLLBACK


# --8<-- [end:demo_begin_modes]


# --8<-- [start:read_then_write]
async def read_then_write(
    sessions: Sessions, name: str, between: Callable[[], Awaitable[None]]
) -> str:
    """A request that reads, then writes, in one transaction."""
    try:
        async with sessions.begin() as session:
            await count_authors(session)  # e.g. check a limit first
            await between()  # meanwhile, another request writes
            session.add(Author(name=name))
    except DBAPIError as exc:
        errorname = getattr(exc.orig, "sqlite_errorname", "")
        return f"{exc.orig} ({errorname})"
    return "committed"


async def write_after(sessions: Sessions, name: str, go: asyncio.Event) -> str:
    """Another request: it writes once `go` is set."""
    await go.wait()
    async with sessions.begin() as session:
        session.add(Author(name=name))
    return "committed"


# --8<-- [end:read_then_write]


# --8<-- [start:demo_deferred_trap]
async def demo_deferred_trap(engine: AsyncEngine) -> None:
    writes = create_session_factory(engine)  # BEGIN IMMEDIATE
    deferred = create_read_session_factory(engine)  # BEGIN DEFERRED

    # Deferred: the other request commits between our read and our write.
    has_read = asyncio.Event()
    other = asyncio.create_task(write_after(writes, "Cy", has_read))

    async def other_commits() -> None:
        has_read.set()
        await other

    print("deferred:", await read_then_write(deferred, "Di", other_commits))
    #> deferred: database is locked (SQLITE_BUSY_SNAPSHOT)
    print("other:", await other)
    #> other: committed

    # Immediate: the other request starts between them, and waits for us.
    has_read = asyncio.Event()
    other = asyncio.create_task(write_after(writes, "Ed", has_read))

    async def other_starts() -> None:
        has_read.set()

    print("immediate:", await read_then_write(writes, "Fay", other_starts))
    #> immediate: committed
    print("other:", await other)
    #> other: committed


# --8<-- [end:demo_deferred_trap]


# --8<-- [start:database_errors]
# --8<-- [start:problems]
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
# --8<-- [end:problems]


# --8<-- [start:classify]
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


# --8<-- [end:classify]


# --8<-- [start:constraint_names]
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


# --8<-- [end:constraint_names]


# --8<-- [start:error_response]
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


# --8<-- [end:error_response]
# --8<-- [end:database_errors]


# --8<-- [start:demo_database_errors]
async def demo_database_errors(sessions: Sessions) -> None:
    bad_rows = {
        "unique": Author(name="Ann"),
        "foreign key": Book(title="Orphan", author_id=999),
        "check": Book(title="Blank", author_id=1, pages=0),
        "not null": Book(author_id=1),  # no title
    }
    for kind, row in bad_rows.items():
        try:
            async with sessions.begin() as session:
                session.add(row)
        except DBAPIError as exc:
            reply = database_error_response(classify(exc, Base.metadata))
            detail = json.loads(bytes(reply.body))["detail"]
            print(f"{kind}:", reply.status_code, detail)
            #> unique: 409 name already exists
            #> foreign key: 409 references a row that does not exist
            #> check: 422 ck_books_positive_pages: breaks a check constraint
            #> not null: 422 title: breaks a not null constraint


# --8<-- [end:demo_database_errors]


# --8<-- [start:demo_lazy_load]
async def demo_lazy_load(sessions: Sessions) -> None:
    async with sessions() as session:
        query = select(Author).where(Author.name == "Ann")
        author = (await session.scalars(query)).one()
        with leftovers() as left:
            try:
                print(len(author.books))  # not loaded: a lazy load, no await
            except StatementError as exc:  # raised by the driver adapter
                print("lazy load failed:", type(exc.orig).__name__)
                #> lazy load failed: MissingGreenlet
        print("left behind:", *left)
        #> left behind: coroutine 'Connection.cursor' was never awaited

        book = (await session.scalars(select(Book).limit(1))).one()
        try:
            print(book.author)
        except InvalidRequestError as exc:
            print(short(exc))
            #> 'Book.author' is not available due to lazy='raise'

        author = await get_author_with_books(session, "Ann")
        print([book.title for book in author.books])
        #> ['Dune', 'Emma']


# --8<-- [end:demo_lazy_load]


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


# --8<-- [start:demo_begin]
async def demo_begin(sessions: Sessions) -> None:
    # --8<-- [start:autobegin_trap]
    async with sessions() as session:
        await count_authors(session)  # any statement begins a transaction
        try:
            async with session.begin():
                pass
        except InvalidRequestError as exc:
            print(short(exc))
            #> A transaction is already begun on this Session.
    # --8<-- [end:autobegin_trap]

    async with sessions.begin() as session:  # a new unit of work: begin first
        session.add(Author(name="Gil"))
        print("in transaction:", session.in_transaction())
        #> in transaction: True
    print("authors:", await count(sessions, Author))
    #> authors: 7


async def count_authors(session: AsyncSession) -> int:
    total = await session.scalar(select(func.count()).select_from(Author))
    return int(total or 0)


# --8<-- [end:demo_begin]


# --8<-- [start:demo_expire_on_commit]
async def demo_expire_on_commit(engine: AsyncEngine) -> None:
    naive = async_sessionmaker(engine)  # the default: expire_on_commit=True
    shown, left = await name_after_commit(naive, "Hal")
    print("naive:", shown)
    #> naive: MissingGreenlet
    for line in left:  # as with the lazy load above
        print("  left behind:", line)
        #>   left behind: Exception during reset or similar
        #>   left behind: coroutine 'Connection.cursor' was never awaited

    shown, left = await name_after_commit(create_session_factory(engine), "Ida")
    print("fixed:", shown, left)
    #> fixed: Ida []


async def name_after_commit(
    sessions: Sessions, name: str
) -> tuple[str, list[str]]:
    async with sessions() as session:
        author = Author(name=name)
        session.add(author)
        await session.commit()  # the default expires every attribute
        with leftovers() as left:
            try:
                return author.name, left
            except SQLAlchemyError as exc:  # reading it needs an await
                return type(getattr(exc, "orig", None) or exc).__name__, left


# --8<-- [end:demo_expire_on_commit]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'sessions.db'}"
        app = create_app(url)
        async with lifespan(app):  # the app's engine: tables, sessions
            engine = create_engine(url)  # the demos' own, on the same file
            sessions = create_session_factory(engine)
            await demo_pragmas(engine)
            await demo_commit_timing(app)
            await demo_rollback(app)
            await demo_savepoint_first(url, engine)
            await demo_begin_modes(engine)
            await demo_deferred_trap(engine)
            await demo_database_errors(sessions)
            await demo_lazy_load(sessions)
            await demo_begin(sessions)
            await demo_expire_on_commit(engine)
            await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

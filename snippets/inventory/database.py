"""Engine, sessions, the soft-delete filter, one transaction per request."""

# --8<-- [start:imports]
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Connection, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState

from snippets.inventory.models import Item

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


# --8<-- [start:soft_delete_filter]
class InventorySession(Session):
    """A session whose queries never see soft-deleted items, unless asked."""


# Built once: the option is the same for every query.
LIVE_ITEMS = with_loader_criteria(
    Item, Item.deleted_at.is_(None), include_aliases=True
)


def hide_deleted_items(state: ORMExecuteState) -> None:
    if (
        state.is_select
        and not state.is_column_load
        and not state.is_relationship_load
        and not state.execution_options.get("include_deleted", False)
    ):
        state.statement = state.statement.options(LIVE_ITEMS)


event.listen(InventorySession, "do_orm_execute", hide_deleted_items)


def with_soft_delete(sessions: Sessions) -> Sessions:
    """The foundation's factory, making InventorySessions: the filter on."""
    sessions.configure(sync_session_class=InventorySession)
    return sessions


# --8<-- [end:soft_delete_filter]


# --8<-- [start:one_statement]
class OneStatementSession(InventorySession):
    """A read outside any transaction, which stays one statement."""


class SecondStatementError(RuntimeError):
    """A one-statement session was asked for a second statement."""


def refuse_a_second_statement(state: ORMExecuteState) -> None:
    # One statement sees one snapshot of the database; a second would see
    # another, with no transaction to make them agree.
    if state.session.info.setdefault("statements", 0):
        raise SecondStatementError(
            "a one-statement session reads outside a transaction: a second"
            " statement would see another snapshot; use ReadSessionDep"
        )
    state.session.info["statements"] = 1


event.listen(OneStatementSession, "do_orm_execute", refuse_a_second_statement)


def create_one_statement_engine(
    engine: AsyncEngine, **options: Any
) -> AsyncEngine:
    """The engine's database in autocommit mode: no BEGIN, no ROLLBACK.

    On SQLite a new engine on the same URL, made with `options`; elsewhere
    the same engine and pool (SQLAlchemy's asyncpg adapter sends nothing for
    a rollback outside a transaction).
    """
    if engine.dialect.name != "sqlite":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    # A pool of its own: SQLAlchemy reads "autocommit" from the driver's
    # setting, which the foundation turns on for every SQLite connection
    # (it sends BEGIN itself), so on its engine real rollbacks would go too.
    own = create_engine(
        engine.url.render_as_string(hide_password=False),
        execution_options={"sqlite_begin": None},
        skip_autocommit_rollback=True,  # each one a trip to aiosqlite's thread
        **options,
    )
    event.listen(own.sync_engine, "reset", roll_back_an_open_transaction)
    return own


def roll_back_an_open_transaction(
    dbapi: DBAPIConnection, record: ConnectionPoolEntry, state: PoolResetState
) -> None:
    # The pool's safety net, kept: a SAVEPOINT, or a BEGIN asked for, opens
    # a transaction that must not stay open in the pool.
    if state.terminate_only or not state.asyncio_safe:
        return  # the connection is being closed, or cannot be awaited here
    driver = record.driver_connection  # aiosqlite's: an attribute, no trip
    if driver is not None and driver.in_transaction:
        dbapi.rollback()


def create_one_statement_session_factory(engine: AsyncEngine) -> Sessions:
    """Sessions for one-statement reads, on a one-statement engine."""
    sessions = create_session_factory(engine)
    sessions.configure(sync_session_class=OneStatementSession)
    return sessions


# --8<-- [end:one_statement]


# --8<-- [start:dependency]
async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: Sessions = request.app.state.sessions
    async with sessions.begin() as session:  # commit, or roll back on error
        yield session


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: Sessions = request.app.state.read_sessions
    async with sessions() as session:  # never commits: closing rolls back
        yield session


async def get_one_statement_session(
    request: Request,
) -> AsyncIterator[AsyncSession]:
    sessions: Sessions = request.app.state.one_statement_sessions
    async with sessions() as session:
        yield session


# scope="function": the commit runs as soon as the endpoint returns,
# so a failed commit becomes the response instead of happening after it.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]
# A read that is one statement, outside any transaction (GET /items/{id}).
OneStatementSessionDep = Annotated[
    AsyncSession, Depends(get_one_statement_session)
]
# --8<-- [end:dependency]


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

"""Engine, sessions, the soft-delete filter, one transaction per request."""

# --8<-- [start:imports]
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Connection, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria
from sqlalchemy.pool import ConnectionPoolEntry

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


# --8<-- [start:soft_delete_filter]
class InventorySession(Session):
    """A session whose queries never see soft-deleted items, unless asked."""


def hide_deleted_items(state: ORMExecuteState) -> None:
    if (
        state.is_select
        and not state.is_column_load
        and not state.is_relationship_load
        and not state.execution_options.get("include_deleted", False)
    ):
        state.statement = state.statement.options(
            with_loader_criteria(
                Item, Item.deleted_at.is_(None), include_aliases=True
            )
        )


event.listen(InventorySession, "do_orm_execute", hide_deleted_items)


def with_soft_delete(sessions: Sessions) -> Sessions:
    """The foundation's factory, making InventorySessions: the filter on."""
    sessions.configure(sync_session_class=InventorySession)
    return sessions


# --8<-- [end:soft_delete_filter]


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

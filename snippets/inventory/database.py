"""Engine, sessions, the soft-delete filter, one transaction per request."""

# --8<-- [start:imports]
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import event
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
def create_engine(url: str, pool_size: int = 20) -> AsyncEngine:
    engine = create_async_engine(url, pool_size=pool_size)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", set_sqlite_pragmas)
    return engine


def set_sqlite_pragmas(conn: DBAPIConnection, _: ConnectionPoolEntry) -> None:
    cursor = conn.cursor()
    # A writer waits up to 5 s for the write lock instead of failing at once.
    cursor.execute("PRAGMA busy_timeout = 5000")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")  # readers never wait
    cursor.close()


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


def create_session_factory(
    engine: AsyncEngine,
) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        engine, expire_on_commit=False, sync_session_class=InventorySession
    )


# --8<-- [end:soft_delete_filter]


# --8<-- [start:dependency]
async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions.begin() as session:  # commit, or roll back on error
        yield session


# scope="function": the commit runs before the response is sent, so a
# failed commit becomes the response.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
# --8<-- [end:dependency]

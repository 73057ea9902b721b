"""The inventory service: every recipe of the cookbook in one application.

Serve it: uvicorn snippets.inventory:app (the OpenAPI UI is at /docs).
"""

# --8<-- [start:imports]
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from snippets.inventory.database import (
    create_engine,
    create_one_statement_engine,
    create_one_statement_session_factory,
    create_read_session_factory,
    create_session_factory,
    ping_when_idle,
    with_soft_delete,
)
from snippets.inventory.database_errors import (
    database_error,
    database_unreachable,
    pool_exhausted,
)
from snippets.inventory.errors import InventoryError
from snippets.inventory.http_errors import inventory_error, validation_error
from snippets.inventory.migrate import upgrade_to_head
from snippets.inventory.routers import items, orders
from snippets.inventory.settings import Settings, load_settings

# --8<-- [end:imports]


# --8<-- [start:app]
@asynccontextmanager
async def inventory_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The foundation's lifespan, with the pool size, migrations instead of
    create_all, and the soft-delete filter of this service."""
    settings: Settings = app.state.settings
    engine = create_engine(settings.database_url, pool_size=settings.pool_size)
    ping_when_idle(engine)  # a connection a restart killed is replaced
    async with engine.begin() as conn:
        await upgrade_to_head(conn)  # Alembic, on this connection
    app.state.sessions = with_soft_delete(create_session_factory(engine))
    app.state.read_sessions = with_soft_delete(
        create_read_session_factory(engine)
    )
    one_statement = create_one_statement_engine(
        engine, pool_size=settings.pool_size
    )
    app.state.one_statement_sessions = create_one_statement_session_factory(
        one_statement
    )
    # What start-up built (routes, mappers, the migrations' modules) lives
    # as long as the app: the garbage collector need not walk it again.
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        await engine.dispose()  # close pooled connections on shutdown
        if one_statement.pool is not engine.pool:  # SQLite: a pool of its own
            await one_statement.dispose()


def create_app(database_url: str | None = None) -> FastAPI:
    """The URL defaults to $DATABASE_URL, then to ./inventory.db (SQLite)."""
    app = FastAPI(
        title="Inventory",
        version="1.0.0",
        summary="The Async CRUD Cookbook's reference API",
        lifespan=inventory_lifespan,
    )
    app.state.settings = load_settings(database_url)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(InventoryError, inventory_error)
    app.add_exception_handler(DBAPIError, database_error)
    app.add_exception_handler(PoolTimeoutError, pool_exhausted)
    # asyncpg lets the socket's error through while connecting:
    # ConnectionRefusedError, a DNS failure, a connect timeout are OSErrors.
    app.add_exception_handler(OSError, database_unreachable)
    app.include_router(items.router)
    app.include_router(orders.router)
    return app


app = create_app()
# --8<-- [end:app]

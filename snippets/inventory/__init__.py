"""The inventory service: every recipe of the cookbook in one application.

Serve it: uvicorn snippets.inventory:app (the OpenAPI UI is at /docs).
"""

# --8<-- [start:imports]
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError

from snippets.inventory.database import (
    create_engine,
    create_read_session_factory,
    create_session_factory,
    with_soft_delete,
)
from snippets.inventory.database_errors import database_error
from snippets.inventory.errors import InventoryError
from snippets.inventory.http_errors import inventory_error, validation_error
from snippets.inventory.models import Base
from snippets.inventory.routers import items, orders
from snippets.inventory.settings import Settings, load_settings

# --8<-- [end:imports]


# --8<-- [start:app]
@asynccontextmanager
async def inventory_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The foundation's lifespan, with the pool size and the soft-delete
    filter of this service."""
    settings: Settings = app.state.settings
    engine = create_engine(settings.database_url, pool_size=settings.pool_size)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)  # only missing tables
    app.state.sessions = with_soft_delete(create_session_factory(engine))
    app.state.read_sessions = with_soft_delete(
        create_read_session_factory(engine)
    )
    try:
        yield
    finally:
        await engine.dispose()  # close pooled connections on shutdown


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
    app.include_router(items.router)
    app.include_router(orders.router)
    return app


app = create_app()
# --8<-- [end:app]

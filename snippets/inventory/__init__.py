"""The inventory service: every recipe of the cookbook in one application.

Serve it: uvicorn snippets.inventory:app (the OpenAPI UI is at /docs).
"""

# --8<-- [start:imports]
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from snippets.inventory.database import create_engine, create_session_factory
from snippets.inventory.http_errors import validation_error
from snippets.inventory.models import Base
from snippets.inventory.routers import items, orders
from snippets.inventory.settings import load_settings

# --8<-- [end:imports]


# --8<-- [start:app]
@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = app.state.settings
    engine = create_engine(settings.database_url, settings.pool_size)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)  # only missing tables
    app.state.sessions = create_session_factory(engine)
    try:
        yield
    finally:
        await engine.dispose()


def create_app(database_url: str | None = None) -> FastAPI:
    """The URL defaults to $DATABASE_URL, then to ./inventory.db (SQLite)."""
    app = FastAPI(
        title="Inventory",
        version="1.0.0",
        summary="The Async CRUD Cookbook's reference API",
        lifespan=lifespan,
    )
    app.state.settings = load_settings(database_url)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(items.router)
    app.include_router(orders.router)
    return app


app = create_app()
# --8<-- [end:app]

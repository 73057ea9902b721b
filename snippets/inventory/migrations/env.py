"""Alembic's environment for the inventory service (the async template).

Run by Alembic, never imported: `alembic upgrade head` on the command line,
or `command.upgrade` from the app's lifespan, which lends its connection.
"""

# --8<-- [start:env_imports]
import asyncio

from alembic import context
from sqlalchemy import Connection

from snippets.inventory.database import create_engine
from snippets.inventory.models import Base
from snippets.inventory.settings import load_settings

# --8<-- [end:env_imports]


# --8<-- [start:env]
def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        # Autogenerate and `alembic check` compare the schema with the
        # models, whose MetaData carries NAMING_CONVENTION.
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things: batch mode copies the table.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    # One database URL: the app's own ($DATABASE_URL, else ./inventory.db).
    engine = create_engine(load_settings().database_url)
    async with engine.connect() as connection:
        await connection.run_sync(run_migrations)
    await engine.dispose()


def run_migrations_online() -> None:
    # A running app lends its connection (see migrate.py): asyncio.run()
    # would fail inside its event loop. The command line has no loop yet.
    connection = context.config.attributes.get("connection")
    if connection is None:
        asyncio.run(run_async_migrations())
    else:
        run_migrations(connection)


run_migrations_online()
# --8<-- [end:env]

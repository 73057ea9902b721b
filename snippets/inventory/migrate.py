"""Upgrade the database to the newest revision, from inside the app."""

# --8<-- [start:imports]
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

# --8<-- [end:imports]


# --8<-- [start:migrate]
MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    """The migrations of this package, wherever the process runs from."""
    config = Config(MIGRATIONS / "alembic.ini")
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade_on(connection: Connection, revision: str = "head") -> None:
    """Alembic is synchronous: run it on the caller's connection (env.py
    takes it from `attributes`) instead of a second loop or engine."""
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade_to_head(conn: AsyncConnection) -> None:
    """Every missing revision, in the caller's transaction."""
    await conn.run_sync(upgrade_on)


# --8<-- [end:migrate]

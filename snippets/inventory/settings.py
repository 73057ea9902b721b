"""Settings: where the database lives and the key that signs cursors."""

# --8<-- [start:settings]
import os
import secrets
from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./inventory.db"


@dataclass(frozen=True)
class Settings:
    database_url: str
    # Signs keyset cursors. Set INVENTORY_CURSOR_KEY in production so that
    # cursors survive a restart and work across workers.
    cursor_key: bytes


def load_settings(database_url: str | None = None) -> Settings:
    url = database_url or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    key = os.environ.get("INVENTORY_CURSOR_KEY")
    return Settings(
        database_url=url,
        cursor_key=key.encode() if key else secrets.token_bytes(32),
    )


# --8<-- [end:settings]

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
    # Connections kept open: size it to the requests served at once. A
    # request past it opens an overflow connection, closed when returned;
    # the Performance page measures the cost (`pool_size=5`, the default).
    pool_size: int = 20


def load_settings(database_url: str | None = None) -> Settings:
    url = database_url or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    key = os.environ.get("INVENTORY_CURSOR_KEY")
    return Settings(
        database_url=url,
        cursor_key=key.encode() if key else secrets.token_bytes(32),
        pool_size=positive_int("INVENTORY_POOL_SIZE", default=20),
    )


def positive_int(variable: str, default: int) -> int:
    raw = os.environ.get(variable, str(default))
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{variable} must be a positive integer, not {raw!r}")
    return int(raw)


# --8<-- [end:settings]

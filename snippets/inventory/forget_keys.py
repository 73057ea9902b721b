"""Delete idempotency keys older than KEY_TTL: a job for cron or a scheduler.

Run it: python -m snippets.inventory.forget_keys (DATABASE_URL as the app)
"""

# --8<-- [start:imports]
import asyncio

from snippets.inventory.database import create_engine, create_session_factory
from snippets.inventory.idempotency import forget_old_keys, run_retrying
from snippets.inventory.settings import load_settings

# --8<-- [end:imports]


# --8<-- [start:forget_keys]
async def forget_keys(database_url: str | None = None) -> int:
    """Delete the keys past KEY_TTL in one write transaction; how many."""
    # As the app reads it: this URL, else $DATABASE_URL, else ./inventory.db
    settings = load_settings(database_url)
    engine = create_engine(settings.database_url)
    try:
        # A transaction of its own, run again if the database is busy.
        sessions = create_session_factory(engine)
        return await run_retrying(sessions, forget_old_keys)
    finally:
        await engine.dispose()  # made in this loop, closed in it


async def main() -> None:
    print("expired idempotency keys removed:", await forget_keys())


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:forget_keys]

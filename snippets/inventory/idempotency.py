"""Idempotency keys and retries: the Retries and idempotency page's recipe."""

# --8<-- [start:imports]
import asyncio
import hashlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

from pydantic import BaseModel
from sqlalchemy import delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from snippets.inventory.database import Sessions
from snippets.inventory.database_errors import Problem, classify
from snippets.inventory.errors import KeyMismatchError
from snippets.inventory.models import Base, IdempotencyKey, utcnow

# --8<-- [end:imports]

# --8<-- [start:retry]
logger = logging.getLogger(__name__)
T = TypeVar("T")
Work = Callable[[AsyncSession], Awaitable[T]]


async def run_retrying(
    sessions: Sessions,
    work: Work[T],
    *,
    attempts: int = 5,
    first_delay: float = 0.05,
) -> T:
    """Run `work` in a transaction of its own, again while the database is busy.

    Busy means: SQLite locked, a serialization failure or a deadlock on
    PostgreSQL. Anything else (a unique violation, a bug) is raised at once.
    """
    for attempt in range(1, attempts + 1):
        try:
            async with sessions.begin() as session:  # a fresh transaction
                return await work(session)
        except DBAPIError as exc:
            busy = classify(exc, Base.metadata).kind is Problem.BUSY
            if not busy or attempt == attempts:
                raise  # the handler answers 503 + Retry-After when busy
            logger.warning("database busy, attempt %d of %d", attempt, attempts)
            # Exponential backoff with jitter, so the retries spread out.
            await asyncio.sleep(
                first_delay * 2 ** (attempt - 1) * random.random()
            )
    raise AssertionError("unreachable")


# --8<-- [end:retry]


# --8<-- [start:keys]
KEY_TTL = timedelta(hours=24)  # how long a key is remembered


@dataclass(frozen=True)
class Reply:
    status_code: int
    body: Any


def fingerprint_of(body: BaseModel) -> str:
    """The same JSON value, however its keys are ordered or spaced."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def claim_order_key(
    session: AsyncSession, key: str, fingerprint: str
) -> Reply | None:
    """The page's claim_key, raising this service's KeyMismatchError.

    None if this request is the first with `key`; else the stored reply.
    A concurrent request with the same key waits here until the first one
    commits (its INSERT waits on the key's row), then replays its reply.
    """
    claim = (
        conflict_insert(session, IdempotencyKey)
        .values(key=key, fingerprint=fingerprint, created_at=utcnow())
        .on_conflict_do_nothing()
        .returning(IdempotencyKey.key)
    )
    if await session.scalar(claim) is not None:
        return None
    stored = await session.get_one(IdempotencyKey, key)
    if stored.fingerprint != fingerprint:
        raise KeyMismatchError(key)
    assert stored.status_code is not None  # written with the key, always
    return Reply(stored.status_code, stored.body)


async def store_reply(session: AsyncSession, key: str, reply: Reply) -> None:
    query = (
        update(IdempotencyKey)
        .where(IdempotencyKey.key == key)
        .values(status_code=reply.status_code, body=reply.body)
    )
    await session.execute(query)


async def forget_old_keys(session: AsyncSession) -> int:
    """Delete keys past KEY_TTL (run it from a periodic job)."""
    query = delete(IdempotencyKey).where(
        IdempotencyKey.created_at < utcnow() - KEY_TTL
    )
    result = await session.execute(query)
    return cast(CursorResult[Any], result).rowcount


def conflict_insert(
    session: AsyncSession, model: type[Base]
) -> postgresql.Insert | sqlite.Insert:
    """ON CONFLICT lives in each dialect's own insert()."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


# --8<-- [end:keys]

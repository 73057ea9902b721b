"""Retries and idempotency: errors that retry, requests that must not run twice.

Run it: python -m snippets.idempotency
"""

# --8<-- [start:imports]
import asyncio
import hashlib
import json
import logging
import random
import tempfile
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast

import httpx
from fastapi import APIRouter, Depends, FastAPI, Header, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    JSON,
    CheckConstraint,
    Connection,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    MetaData,
    Numeric,
    String,
    TypeDecorator,
    delete,
    event,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.schema import ColumnCollectionConstraint

# --8<-- [end:imports]


# --8<-- [start:engine]
def create_engine(url: str, **options: Any) -> AsyncEngine:
    engine = create_async_engine(url, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", set_sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", begin_sqlite_transaction)
    return engine


def set_sqlite_pragmas(conn: DBAPIConnection, _: ConnectionPoolEntry) -> None:
    # The driver would send BEGIN late, or not at all: SQLAlchemy sends it.
    conn.isolation_level = None
    cursor = conn.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")  # off by default, per connection
    cursor.execute(
        "PRAGMA journal_mode = WAL"
    )  # readers never wait for writers
    cursor.close()


def begin_sqlite_transaction(conn: Connection) -> None:
    # IMMEDIATE takes the write lock at BEGIN: a transaction that reads and
    # then writes waits its turn instead of failing with "database is locked".
    mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    if mode is not None:  # None: no BEGIN, each statement commits on its own
        conn.exec_driver_sql(f"BEGIN {mode}")


Sessions = async_sessionmaker[AsyncSession]


def create_session_factory(engine: AsyncEngine) -> Sessions:
    # expire_on_commit=False: objects stay readable after a commit instead of
    # reloading on attribute access, which async code cannot do implicitly.
    return async_sessionmaker(engine, expire_on_commit=False)


def create_read_session_factory(engine: AsyncEngine) -> Sessions:
    # A deferred BEGIN on SQLite: reads take no write lock (no-op elsewhere).
    return create_session_factory(
        engine.execution_options(sqlite_begin="DEFERRED")
    )


# --8<-- [end:engine]


# --8<-- [start:base]
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one")
        return value.astimezone(UTC)  # SQLite keeps no offset: store UTC

    def process_result_value(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite: we stored UTC, say so
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# --8<-- [end:base]


# --8<-- [start:models]
class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("balance >= 0", name="balance_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    balance: Mapped[Decimal] = mapped_column(Numeric(12, 2))


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    target_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyKey(Base):
    """A request that ran: its key, what it asked, what it was answered."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of the body
    status_code: Mapped[int | None]  # set in the same transaction
    body: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class OutboxEvent(Base):
    """A message to send, written in the transaction that caused it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    topic: Mapped[str] = mapped_column(String(100))
    payload: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


# --8<-- [end:models]


# --8<-- [start:transfer]
class PaymentError(Exception):
    """Base class: one table maps each subclass to a status code."""


class AccountNotFoundError(PaymentError):
    def __init__(self, account_id: int) -> None:
        super().__init__(f"no account {account_id}")


class InsufficientFundsError(PaymentError):
    def __init__(self, account_id: int) -> None:
        super().__init__(f"account {account_id} has not enough money")


# --8<-- [start:transfer_function]
async def transfer(
    session: AsyncSession, source_id: int, target_id: int, amount: Decimal
) -> Payment:
    """Move money with two atomic UPDATEs; the caller's transaction commits."""
    await debit(session, source_id, amount)
    await credit(session, target_id, amount)
    payment = Payment(source_id=source_id, target_id=target_id, amount=amount)
    session.add(payment)
    await session.flush()
    return payment


# --8<-- [end:transfer_function]
async def debit(
    session: AsyncSession, account_id: int, amount: Decimal
) -> None:
    query = (
        update(Account)
        .where(Account.id == account_id, Account.balance >= amount)
        .values(balance=Account.balance - amount)
        .returning(Account.id)
    )
    if await session.scalar(query) is None:
        if await session.get(Account, account_id) is None:
            raise AccountNotFoundError(account_id)
        raise InsufficientFundsError(account_id)


async def credit(
    session: AsyncSession, account_id: int, amount: Decimal
) -> None:
    query = (
        update(Account)
        .where(Account.id == account_id)
        .values(balance=Account.balance + amount)
        .returning(Account.id)
    )
    if await session.scalar(query) is None:
        raise AccountNotFoundError(account_id)


# --8<-- [end:transfer]


# --8<-- [start:naive_retry]
T = TypeVar("T")
Work = Callable[[AsyncSession], Awaitable[T]]


async def retry_on_same_session(session: AsyncSession, work: Work[T]) -> T:
    """Naive: retry on the request's session, whose transaction is lost."""
    for attempt in range(1, 4):
        try:
            return await work(session)
        except DBAPIError:
            if attempt == 3:
                raise
    raise AssertionError("unreachable")


# --8<-- [end:naive_retry]


# --8<-- [start:retry]


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


# --8<-- [start:lifespan]
@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_engine(app.state.database_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)  # demo: see Migrations
    app.state.sessions = create_session_factory(engine)
    app.state.read_sessions = create_read_session_factory(engine)
    yield
    await engine.dispose()  # close pooled connections on shutdown


# --8<-- [end:lifespan]


# --8<-- [start:dependency]
async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: Sessions = request.app.state.sessions
    async with sessions.begin() as session:  # commit, or roll back on error
        yield session


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: Sessions = request.app.state.read_sessions
    async with sessions() as session:  # never commits: closing rolls back
        yield session


# scope="function": the commit runs as soon as the endpoint returns,
# so a failed commit becomes the response instead of happening after it.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]
# --8<-- [end:dependency]


# --8<-- [start:database_errors]
class Problem(StrEnum):
    UNIQUE = "unique"
    FOREIGN_KEY = "foreign key"
    CHECK = "check"
    NOT_NULL = "not null"
    BUSY = "busy"  # worth a retry: locked, serialization failure, deadlock
    UNAVAILABLE = "unavailable"  # the connection was lost
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class DatabaseProblem:
    kind: Problem
    constraint: str = ""  # the constraint's name, where the database says it
    columns: tuple[str, ...] = ()


SQLSTATES = {
    "23505": Problem.UNIQUE,
    "23503": Problem.FOREIGN_KEY,
    "23514": Problem.CHECK,
    "23502": Problem.NOT_NULL,
    "40001": Problem.BUSY,  # serialization_failure
    "40P01": Problem.BUSY,  # deadlock_detected
    "55P03": Problem.BUSY,  # lock_not_available
}
SQLITE_ERRORS = {
    "SQLITE_CONSTRAINT_UNIQUE": Problem.UNIQUE,
    "SQLITE_CONSTRAINT_PRIMARYKEY": Problem.UNIQUE,
    "SQLITE_CONSTRAINT_FOREIGNKEY": Problem.FOREIGN_KEY,
    "SQLITE_CONSTRAINT_CHECK": Problem.CHECK,
    "SQLITE_CONSTRAINT_NOTNULL": Problem.NOT_NULL,
    "SQLITE_BUSY": Problem.BUSY,
    "SQLITE_BUSY_SNAPSHOT": Problem.BUSY,
    "SQLITE_LOCKED": Problem.BUSY,
}


def classify(exc: DBAPIError, metadata: MetaData) -> DatabaseProblem:
    """What went wrong, by SQLSTATE on PostgreSQL, by error code on SQLite."""
    if exc.connection_invalidated:
        return DatabaseProblem(Problem.UNAVAILABLE)
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is not None:  # PostgreSQL, through asyncpg
        cause = exc.orig.__cause__ if exc.orig else None
        return postgres_problem(sqlstate, cause, metadata)
    errorname = getattr(exc.orig, "sqlite_errorname", "")
    kind = SQLITE_ERRORS.get(errorname, Problem.UNKNOWN)
    detail = str(exc.orig).partition(" constraint failed: ")[2]
    if kind is Problem.CHECK:  # SQLite names a CHECK constraint
        return DatabaseProblem(kind, detail)
    if kind in (Problem.UNIQUE, Problem.NOT_NULL):  # "items.name, items.x"
        table = detail.split(".")[0]
        columns = tuple(part.split(".")[-1] for part in detail.split(", "))
        name = constraint_named_by(metadata, table, columns)
        return DatabaseProblem(
            kind, name if kind is Problem.UNIQUE else "", columns
        )
    return DatabaseProblem(kind)


def postgres_problem(
    sqlstate: str, cause: BaseException | None, metadata: MetaData
) -> DatabaseProblem:
    kind = SQLSTATES.get(sqlstate, Problem.UNKNOWN)
    if kind is Problem.NOT_NULL:
        return DatabaseProblem(kind, "", (getattr(cause, "column_name", ""),))
    name = getattr(cause, "constraint_name", None) or ""
    return DatabaseProblem(kind, name, constraint_columns(metadata, name))


def constraint_columns(metadata: MetaData, name: str) -> tuple[str, ...]:
    found = (cols for _, n, cols in unique_column_sets(metadata) if n == name)
    return next(found, ())


def constraint_named_by(
    metadata: MetaData, table: str, columns: tuple[str, ...]
) -> str:
    sets = unique_column_sets(metadata)
    found = (n for t, n, cols in sets if t == table and cols == columns)
    return next(found, "")


def unique_column_sets(
    metadata: MetaData,
) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(table, name, columns) of each constraint and unique index."""
    for table in metadata.tables.values():
        unique = [*table.constraints, *(i for i in table.indexes if i.unique)]
        for item in unique:
            if isinstance(item, ColumnCollectionConstraint | Index):
                columns = tuple(column.name for column in item.columns)
                yield table.name, str(item.name), columns


logger = logging.getLogger(__name__)
RETRY_AFTER = {"Retry-After": "1"}


def database_error_response(problem: DatabaseProblem) -> JSONResponse:
    fields = ", ".join(problem.columns) or problem.constraint
    match problem.kind:
        case Problem.UNIQUE:
            code, detail = 409, f"{fields} already exists"
        case Problem.FOREIGN_KEY:
            missing = "references a row that does not exist"
            code, detail = 409, f"{fields}: {missing}" if fields else missing
        case Problem.CHECK | Problem.NOT_NULL:
            code, detail = 422, f"{fields}: breaks a {problem.kind} constraint"
        case Problem.BUSY | Problem.UNAVAILABLE:
            return JSONResponse(
                {"detail": "database busy: retry shortly"},
                status_code=503,
                headers=RETRY_AFTER,
            )
        case _:
            logger.error("unclassified database error %s", problem.constraint)
            code, detail = 500, "Internal Server Error"
    return JSONResponse({"detail": detail}, status_code=code)


async def database_error(_: Request, exc: Exception) -> JSONResponse:
    """Registered once, in create_app, for DBAPIError."""
    if not isinstance(exc, DBAPIError):
        raise exc
    return database_error_response(classify(exc, Base.metadata))


# --8<-- [end:database_errors]


# --8<-- [start:keys]
KEY_TTL = timedelta(hours=24)  # how long a key is remembered


@dataclass(frozen=True)
class Reply:
    status_code: int
    body: Any


class KeyReusedError(PaymentError):
    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was used with another body")


def fingerprint_of(body: BaseModel) -> str:
    """The same JSON value, however its keys are ordered or spaced."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def claim_key(
    session: AsyncSession, key: str, fingerprint: str
) -> Reply | None:
    """None if this request is the first with `key`; else the stored reply.

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
        raise KeyReusedError(key)
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


# --8<-- [start:pay_once]
class PaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_id: int = Field(ge=1, le=2**31 - 1)
    target_id: int = Field(ge=1, le=2**31 - 1)
    amount: Decimal = Field(gt=0, lt=10**9, decimal_places=2)


class PaymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    source_id: int
    target_id: int
    amount: Decimal


STATUS: dict[type[PaymentError], int] = {
    AccountNotFoundError: status.HTTP_404_NOT_FOUND,
    InsufficientFundsError: status.HTTP_409_CONFLICT,
    KeyReusedError: 422,
}


async def pay_once(
    session: AsyncSession, key: str | None, payment: PaymentIn
) -> Reply:
    """The payment, its outbox event and its key: one unit of work."""
    # --8<-- [start:claim]
    fingerprint = fingerprint_of(payment)
    if key is not None and (
        stored := await claim_key(session, key, fingerprint)
    ):
        return stored  # the first request's answer, whatever it was
    # --8<-- [end:claim]
    try:
        async with session.begin_nested():  # the money moves, or nothing does
            row = await transfer(
                session, payment.source_id, payment.target_id, payment.amount
            )
            out = PaymentOut.model_validate(row).model_dump(mode="json")
            session.add(OutboxEvent(topic="payment.created", payload=out))
        reply = Reply(status.HTTP_201_CREATED, out)
    except (AccountNotFoundError, InsufficientFundsError) as exc:
        reply = Reply(STATUS[type(exc)], {"detail": str(exc)})  # kept too
    if key is not None:
        await store_reply(session, key, reply)
    return reply


# --8<-- [end:pay_once]


# --8<-- [start:naive_side_effects]
Send = Callable[[OutboxEvent], Awaitable[None]]  # an e-mail, a message


async def pay_and_notify_naive(
    session: AsyncSession, payment: PaymentIn, send: Send
) -> Payment:
    """Send inside the transaction: sent even when the commit fails."""
    row = await transfer(
        session, payment.source_id, payment.target_id, payment.amount
    )
    out = PaymentOut.model_validate(row).model_dump(mode="json")
    await send(OutboxEvent(topic="payment.created", payload=out))
    return row


# --8<-- [end:naive_side_effects]


# --8<-- [start:outbox]
async def dispatch_outbox(
    sessions: Sessions, send: Send, batch: int = 100
) -> int:
    """Send unsent events, oldest first; mark each sent. At least once:
    a crash after `send` and before the commit sends that event again."""
    async with sessions.begin() as session:
        query = (
            select(OutboxEvent)
            .where(OutboxEvent.sent_at.is_(None))
            .order_by(OutboxEvent.id)
            .limit(batch)
            # several dispatchers: each takes rows nobody else holds
            .with_for_update(skip_locked=True)  # SQLite: no-op, one writer
        )
        events = (await session.scalars(query)).all()
        for event_row in events:
            await send(event_row)
            event_row.sent_at = utcnow()
        return len(events)


# --8<-- [end:outbox]


# --8<-- [start:naive_json_change]
async def tag_event_naive(
    session: AsyncSession, event_id: int, tag: str
) -> None:
    event_row = await session.get_one(OutboxEvent, event_id)
    event_row.payload["tag"] = tag  # changed in place: the ORM sees nothing


# --8<-- [end:naive_json_change]


# --8<-- [start:json_change]
async def tag_event(session: AsyncSession, event_id: int, tag: str) -> None:
    event_row = await session.get_one(OutboxEvent, event_id)
    event_row.payload = {**event_row.payload, "tag": tag}  # a new value: saved


# --8<-- [end:json_change]


# --8<-- [start:app]
router = APIRouter()


async def get_session_factory(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


# For a unit of work the route runs (and retries) itself.
SessionFactoryDep = Annotated[Sessions, Depends(get_session_factory)]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x20-\x7e]+$",  # printable ASCII
        description="Send the same key to retry safely; kept 24 hours.",
    ),
]


@router.post(
    "/payments",
    status_code=status.HTTP_201_CREATED,
    responses={404: {}, 409: {}, 422: {}, 503: {}},
    summary="Move money, at most once per Idempotency-Key",
)
async def create_payment(
    payment: PaymentIn,
    sessions: SessionFactoryDep,
    key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def work(session: AsyncSession) -> Reply:
        return await pay_once(session, key, payment)

    reply = await run_retrying(sessions, work)
    return JSONResponse(reply.body, status_code=reply.status_code)


async def payment_error(_: Request, exc: Exception) -> JSONResponse:
    code = next(c for kind, c in STATUS.items() if isinstance(exc, kind))
    return JSONResponse({"detail": str(exc)}, status_code=code)


def create_app(database_url: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.state.database_url = database_url
    app.add_exception_handler(PaymentError, payment_error)
    app.add_exception_handler(DBAPIError, database_error)
    app.include_router(router)
    return app


# --8<-- [end:app]


# --8<-- [start:postgres_races]
Retry = Literal["no", "same session", "run_retrying"]


async def opposite_transfers(sessions: Sessions, retry: Retry) -> list[str]:
    """A->B and B->A at once, each holding its first row: a deadlock."""
    both_debited = asyncio.Barrier(2)
    tries = {1: 0, 2: 0}

    async def a_to_b_or_b_to_a(session: AsyncSession, source: int) -> str:
        target = 3 - source
        tries[source] += 1
        await debit(session, source, Decimal(1))
        if tries[source] == 1:
            await both_debited.wait()  # each now holds the row the other wants
        await credit(session, target, Decimal(1))
        return "ok"

    async def one(source: int) -> str:
        def work(session: AsyncSession) -> Awaitable[str]:
            return a_to_b_or_b_to_a(session, source)

        try:
            if retry == "run_retrying":
                return await run_retrying(sessions, work, first_delay=0)
            async with sessions.begin() as session:
                if retry == "same session":
                    return await retry_on_same_session(session, work)
                return await work(session)
        except DBAPIError as exc:
            return race_outcome(exc)

    return sorted(await asyncio.gather(one(1), one(2)))


async def serializable_conflict(engine: AsyncEngine, retry: Retry) -> list[str]:
    """Two SERIALIZABLE transfers from one account: one must start over."""
    serializable = create_session_factory(
        engine.execution_options(isolation_level="SERIALIZABLE")
    )
    first_read, first_done = asyncio.Event(), asyncio.Event()

    async def second(session: AsyncSession) -> str:
        await session.get(Account, 1)  # the snapshot starts here
        first_read.set()
        await first_done.wait()  # the first transfer commits meanwhile
        await transfer(session, 1, 2, Decimal(1))
        return "ok"

    async def first() -> str:
        await first_read.wait()
        async with serializable.begin() as session:
            await transfer(session, 1, 2, Decimal(1))
        first_done.set()
        return "ok"

    async def run_second() -> str:
        try:
            if retry == "run_retrying":
                return await run_retrying(serializable, second, first_delay=0)
            async with serializable.begin() as session:
                if retry == "same session":
                    return await retry_on_same_session(session, second)
                return await second(session)
        except DBAPIError as exc:
            return race_outcome(exc)

    return sorted(await asyncio.gather(first(), run_second()))


def race_outcome(exc: DBAPIError) -> str:
    """The SQLSTATE and the first line of PostgreSQL's message."""
    message = str(exc.orig).splitlines()[0].split(": ", 1)[-1]
    return f"{getattr(exc.orig, 'sqlstate', '?')} {message}"


# --8<-- [end:postgres_races]


# --8<-- [start:demo_busy]
async def demo_busy(url: str) -> None:
    # A short busy timeout, so that "database is locked" comes fast.
    engine = create_engine(url, connect_args={"timeout": 0.2})
    sessions = create_session_factory(engine)
    holder_started, release = asyncio.Event(), asyncio.Event()

    async def hold_the_write_lock() -> None:
        async with sessions.begin() as session:
            await session.get(Account, 1)  # BEGIN IMMEDIATE: the lock
            holder_started.set()
            await release.wait()

    async def pay(session: AsyncSession) -> Payment:
        release.set()  # from the second attempt on, the lock comes free
        return await transfer(session, 1, 2, Decimal(5))

    holder = asyncio.create_task(hold_the_write_lock())
    await holder_started.wait()
    try:
        async with sessions.begin() as session:
            await transfer(session, 1, 2, Decimal(5))
    except DBAPIError as exc:
        print("no retry:", exc.orig, "->", classify(exc, Base.metadata).kind)
        #> no retry: database is locked -> busy
    payment = await run_retrying(sessions, pay, first_delay=0)
    await holder
    print("run_retrying: payment", payment.id, "once the lock came free")
    #> run_retrying: payment 1 once the lock came free
    await engine.dispose()


# --8<-- [end:demo_busy]


# --8<-- [start:demo_keys]
async def demo_keys(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        pay = {"source_id": 1, "target_id": 2, "amount": "30.00"}
        again = {"amount": "30.00", "target_id": 2, "source_id": 1}  # same
        for body in (pay, again):
            reply = await c.post("/payments", json=body, headers=key("k-1"))
            print(reply.status_code, reply.json())
            #> 201 {'id': 3, 'source_id': 1, 'target_id': 2, 'amount': '30.00'}
            #> 201 {'id': 3, 'source_id': 1, 'target_id': 2, 'amount': '30.00'}
        other = {**pay, "amount": "31.00"}
        reply = await c.post("/payments", json=other, headers=key("k-1"))
        print(reply.status_code, reply.json())
        #> 422 {'detail': "Idempotency-Key 'k-1' was used with another body"}

        too_much = {**pay, "amount": "1000.00"}
        for _ in range(2):  # a 4xx is an answer too: replayed, not re-run
            reply = await c.post("/payments", json=too_much, headers=key("k-2"))
            print(reply.status_code, reply.json())
            #> 409 {'detail': 'account 1 has not enough money'}
            #> 409 {'detail': 'account 1 has not enough money'}

        same = [
            c.post("/payments", json=pay, headers=key("k-3")) for _ in range(20)
        ]  # twenty requests (`[c.post(...)] * 20` would send one)
        replies = await asyncio.gather(*same)
        ids = {reply.json()["id"] for reply in replies}
        print(
            "20 at once:", {r.status_code for r in replies}, "payment ids:", ids
        )
        #> 20 at once: {201} payment ids: {4}


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


# --8<-- [end:demo_keys]


# --8<-- [start:demo_json]
async def demo_json(sessions: Sessions) -> None:
    for tag_it in (tag_event_naive, tag_event):
        async with sessions.begin() as session:
            await tag_it(session, 1, "vip")
        async with sessions() as session:
            event_row = await session.get_one(OutboxEvent, 1)
            print(tag_it.__name__, "->", event_row.payload.get("tag"))
            #> tag_event_naive -> None
            #> tag_event -> vip


# --8<-- [end:demo_json]


# --8<-- [start:demo_outbox]
class CrashError(Exception):
    """The process dies: nothing after this line runs."""


async def demo_outbox(sessions: Sessions) -> None:
    sent: list[str] = []

    async def send(event_row: OutboxEvent) -> None:  # an e-mail, a message
        sent.append(f"{event_row.topic} #{event_row.payload['id']}")

    pay = PaymentIn(source_id=2, target_id=1, amount=Decimal(1))
    try:
        async with sessions.begin() as session:
            await pay_and_notify_naive(session, pay, send)
            raise CrashError  # the commit never happens
    except CrashError:
        print("naive, rolled back, yet sent:", sent)
        #> naive, rolled back, yet sent: ['payment.created #2']

    sent.clear()
    try:
        async with sessions.begin() as session:
            await pay_once(session, None, pay)  # the event is a row
            raise CrashError
    except CrashError:
        sent_now = await dispatch_outbox(sessions, send)
        print("outbox, rolled back, sent:", sent_now)
        #> outbox, rolled back, sent: 0

    async with sessions.begin() as session:
        await pay_once(session, None, pay)  # committed ...
    # ... and the process dies before anything is sent: the row waits.
    print("next dispatcher run sends:", await dispatch_outbox(sessions, send))
    #> next dispatcher run sends: 1
    print(sent, "then:", await dispatch_outbox(sessions, send))
    #> ['payment.created #2'] then: 0


# --8<-- [end:demo_outbox]


# --8<-- [start:main]
async def seed_accounts(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        session.add_all(
            [
                Account(id=1, owner="Ann", balance=Decimal(100)),
                Account(id=2, owner="Bo", balance=Decimal(100)),
            ]
        )


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'payments.db'}"
        app = create_app(url)
        async with lifespan(app):
            await seed_accounts(app.state.sessions)
            await demo_busy(url)
            await demo_outbox(app.state.sessions)
            await demo_json(app.state.sessions)
            await demo_keys(app)


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

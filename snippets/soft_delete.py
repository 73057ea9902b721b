"""Soft delete: a deleted_at marker, one global filter, restore, trash, purge.

Run it: python -m snippets.soft_delete
"""

# --8<-- [start:imports]
import asyncio
import logging
import tempfile
import textwrap
from collections.abc import (
    AsyncIterator,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import httpx
from fastapi import APIRouter, Depends, FastAPI, Query, Request, status
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
)
from sqlalchemy import (
    Connection,
    DateTime,
    Dialect,
    Executable,
    ForeignKey,
    Index,
    MetaData,
    String,
    delete,
    event,
    false,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    ORMExecuteState,
    Session,
    mapped_column,
    relationship,
    selectinload,
    with_loader_criteria,
)
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.schema import ColumnCollectionConstraint
from sqlalchemy.types import TypeDecorator

# --8<-- [end:imports]


# --8<-- [start:utc_datetime]
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


def to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError("out of range in UTC") from None


def iso_utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()  # "+00:00", never "Z"


# In: an offset is required, and the value is turned to UTC.
# Out: ISO 8601 with "+00:00".
UTCTimestamp = Annotated[
    AwareDatetime,
    AfterValidator(to_utc),
    PlainSerializer(iso_utc, return_type=str, when_used="json"),
]
# --8<-- [end:utc_datetime]


# --8<-- [start:models]
# Constraint names the error classifier and Alembic can rely on.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class SoftDeleteMixin:
    """deleted_at IS NULL: a live row. A timestamp: in the trash since then."""

    deleted_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, default=None
    )


class Category(Base):
    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    items: Mapped[list["Item"]] = relationship(lazy="raise", order_by="Item.id")


class Item(SoftDeleteMixin, Base):
    __tablename__ = "items"
    __table_args__ = (
        # A name is unique among live rows only. The index's WHERE is the
        # very predicate the global filter adds, so queries can use it.
        Index(
            "uq_items_live_name",
            "name",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    category_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id"))


# --8<-- [end:models]


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


# --8<-- [start:setup]
async def create_database(url: str) -> AsyncEngine:
    """An engine on a new database: the tables, a category, three items."""
    engine = create_engine(url)
    async with engine.begin() as conn:  # one transaction
        await conn.run_sync(Base.metadata.create_all)
        new_category = insert(Category).values(name="Lighting")
        lighting = await conn.scalar(new_category.returning(Category.id))
        names = ("Lamp", "Desk", "Chair")
        rows = [{"name": name, "category_id": lighting} for name in names]
        await conn.execute(insert(Item), rows)
    return engine


class SentSQL(NamedTuple):
    statement: str
    parameters: Sequence[object] | Mapping[str, object]


@contextmanager
def capture_sql(engine: AsyncEngine) -> Iterator[list[SentSQL]]:
    """Collect the SQL the engine sends while the block runs."""
    sent: list[SentSQL] = []

    def record(
        *,
        statement: str,
        parameters: Sequence[object] | Mapping[str, object],
        **_: object,
    ) -> None:
        sent.append(SentSQL(statement, parameters))

    target, name = engine.sync_engine, "before_cursor_execute"
    event.listen(target, name, record, named=True)
    try:
        yield sent
    finally:
        event.remove(target, name, record)


def sql_lines(statement: str) -> list[str]:
    """A statement as SQLAlchemy wrote it, its lines wrapped to fit a page."""
    return [
        wrapped
        for line in statement.splitlines()
        for wrapped in textwrap.wrap(line.strip(), 60, subsequent_indent="  ")
    ]


# --8<-- [end:setup]


# --8<-- [start:naive_clock]
class NaiveStamp(Base):
    """A deletion time as the popular tutorials store it."""

    __tablename__ = "naive_stamps"

    id: Mapped[int] = mapped_column(primary_key=True)
    deleted_at: Mapped[datetime] = mapped_column(DateTime)  # no time zone


def naive_utcnow() -> datetime:
    return datetime.utcnow()  # noqa: DTZ003 - naive, deprecated in 3.12


# --8<-- [end:naive_clock]


# --8<-- [start:demo_naive_clock]
async def demo_naive_clock(sessions: Sessions) -> None:
    month_ago = naive_utcnow() - timedelta(days=30)
    async with sessions.begin() as session:
        session.add(NaiveStamp(id=1, deleted_at=month_ago))
    async with sessions() as session:
        stamp = await session.get(NaiveStamp, 1)
        assert stamp is not None
        print("tzinfo:", stamp.deleted_at.tzinfo)
        #> tzinfo: None
        try:
            print(stamp.deleted_at < utcnow() - timedelta(days=7))
        except TypeError as error:  # what a purge job meets
            print("TypeError:", error)
            #> TypeError: can't compare offset-naive and offset-aware datetimes
        session.add(Item(name="Clock", deleted_at=naive_utcnow()))
        try:
            await session.flush()  # UTCDateTime refuses it before any SQL
        except StatementError as error:
            print(f"{type(error.orig).__name__}: {error.orig}")
            #> ValueError: naive datetime: pass an aware one


# --8<-- [end:demo_naive_clock]


# --8<-- [start:naive]
async def naive_soft_delete(session: AsyncSession, item_id: int) -> None:
    item = await session.get(Item, item_id)
    if item:  # a missing id: nothing happens, nobody is told
        item.deleted_at = utcnow()  # deleted twice: the first date is lost


async def naive_list_items(session: AsyncSession) -> Sequence[Item]:
    query = select(Item).where(Item.deleted_at.is_(None)).order_by(Item.id)
    return (await session.scalars(query)).all()  # the only filtered read


async def naive_get_item(session: AsyncSession, item_id: int) -> Item | None:
    return await session.get(Item, item_id)


async def naive_count_items(session: AsyncSession) -> int:
    return await session.scalar(select(func.count(Item.id))) or 0


async def naive_rename_item(
    session: AsyncSession, item_id: int, name: str
) -> None:
    item = await session.get(Item, item_id)
    if item:
        item.name = name


# --8<-- [end:naive]


# --8<-- [start:demo_naive]
async def demo_naive(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        await naive_soft_delete(session, 1)  # the Lamp goes to the trash
    async with sessions.begin() as session:
        print("list:", [item.name for item in await naive_list_items(session)])
        #> list: ['Desk', 'Chair']
        lamp = await naive_get_item(session, 1)
        assert lamp is not None
        count = await naive_count_items(session)
        print("get(1):", lamp.name, "| count:", count)
        #> get(1): Lamp | count: 3
        query = select(Category).options(selectinload(Category.items))
        category = (await session.scalars(query)).one()
        print("category:", [item.name for item in category.items])
        #> category: ['Lamp', 'Desk', 'Chair']
        await naive_rename_item(session, 1, "Lamp (edited)")
        first = lamp.deleted_at
        await naive_soft_delete(session, 1)  # again: no error
        await naive_soft_delete(session, 99)  # no such item: no error
        print("first deleted_at overwritten:", lamp.deleted_at != first)
        #> first deleted_at overwritten: True
    async with sessions() as session:
        lamp = await naive_get_item(session, 1)
        print("a deleted row was edited:", lamp and lamp.name)
        #> a deleted row was edited: Lamp (edited)


# --8<-- [end:demo_naive]


# --8<-- [start:global_filter]
class SoftDeleteSession(Session):
    """A Session whose SELECTs skip soft-deleted rows unless told otherwise."""


@event.listens_for(SoftDeleteSession, "do_orm_execute")
def skip_deleted_rows(state: ORMExecuteState) -> None:
    if (
        state.is_select
        # not for a refresh of an object already held, nor for relationship
        # loads: those follow the statement that loaded the parent
        and not state.is_column_load
        and not state.is_relationship_load
        and not state.execution_options.get("include_deleted", False)
    ):
        state.statement = state.statement.options(
            with_loader_criteria(
                SoftDeleteMixin,  # every mapped class that has deleted_at
                lambda cls: cls.deleted_at.is_(None),
                include_aliases=True,  # aliased(Item) and self-joins too
            )
        )


def skipping_deleted(sessions: Sessions) -> Sessions:
    """The foundation's session factory, its sessions filtered."""
    sessions.configure(sync_session_class=SoftDeleteSession)
    return sessions


# --8<-- [end:global_filter]


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


# --8<-- [start:crud]
class ItemNotFound(LookupError):
    """No such item, or not in the state the operation needs."""


class NameTaken(ValueError):
    """Another live item already has this name."""


LIVE_NAME = "uq_items_live_name"  # the partial unique index, by its name


@contextmanager
def name_must_be_free(message: str) -> Iterator[None]:
    """The live-name index's violation, as NameTaken; anything else as is."""
    try:
        yield
    except IntegrityError as exc:
        if classify(exc, Base.metadata).constraint == LIVE_NAME:
            raise NameTaken(message) from exc
        raise


async def get_item(session: AsyncSession, item_id: int) -> Item:
    # A SELECT, not session.get(): it always reaches the database, filtered.
    item = await session.scalar(select(Item).where(Item.id == item_id))
    if item is None:
        raise ItemNotFound(f"no live item {item_id}")
    return item


async def create_item(
    session: AsyncSession, name: str, category_id: int | None = None
) -> Item:
    item = Item(name=name, category_id=category_id)
    session.add(item)
    with name_must_be_free(f"a live item is named {name!r}"):
        await session.flush()
    return item


async def soft_delete_item(
    session: AsyncSession, item_id: int, *, now: datetime | None = None
) -> None:
    statement = (
        update(Item)
        .where(Item.id == item_id, Item.deleted_at.is_(None))  # live only
        .values(deleted_at=now if now is not None else utcnow())
        .returning(Item.id)
    )
    if await session.scalar(statement) is None:
        raise ItemNotFound(f"no live item {item_id}")


async def restore_item(session: AsyncSession, item_id: int) -> Item:
    statement = (
        update(Item)
        .where(Item.id == item_id, Item.deleted_at.is_not(None))  # trash only
        .values(deleted_at=None)
        .returning(Item)
    )
    with name_must_be_free(f"item {item_id}: its name is taken"):
        item = await session.scalar(statement)
    if item is None:
        raise ItemNotFound(f"no deleted item {item_id}")
    return item


async def list_trash(
    session: AsyncSession, *, limit: int = 50, offset: int = 0
) -> Sequence[Item]:
    query = (
        select(Item)
        .where(Item.deleted_at.is_not(None))
        .order_by(Item.deleted_at.desc(), Item.id)
        .limit(limit)
        .offset(offset)
        .execution_options(include_deleted=True)  # the one opt-in
    )
    return (await session.scalars(query)).all()


async def purge_deleted(
    session: AsyncSession,
    *,
    older_than: timedelta,
    now: datetime | None = None,
) -> list[int]:
    """Delete for good the rows in the trash for longer than older_than."""
    if older_than < timedelta(0):
        raise ValueError("older_than must not be negative")
    cutoff = (now if now is not None else utcnow()) - older_than
    statement = delete(Item).where(Item.deleted_at < cutoff)  # NULL: never
    ids = await session.scalars(statement.returning(Item.id))
    return sorted(ids)


# --8<-- [end:crud]


# --8<-- [start:demo_global_filter]
async def demo_global_filter(engine: AsyncEngine, sessions: Sessions) -> None:
    async with sessions.begin() as session:
        await soft_delete_item(session, 1)  # the Lamp goes to the trash
    async with sessions() as session:
        with capture_sql(engine) as sent:
            every_item = select(Item).order_by(Item.id)
            items = (await session.scalars(every_item)).all()
        print([item.name for item in items])
        #> ['Desk', 'Chair']
        for line in sql_lines(sent[-1].statement):
            print(line)
            #> SELECT items.id, items.name, items.category_id,
            #>   items.deleted_at
            #> FROM items
            #> WHERE items.deleted_at IS NULL ORDER BY items.id
        print("get(1):", await session.get(Item, 1))
        #> get(1): None
        count = select(func.count()).select_from(Item)
        print("count:", await session.scalar(count))
        #> count: 2
        with capture_sql(engine) as sent:
            with_items = select(Category).options(selectinload(Category.items))
            category = (await session.scalars(with_items)).one()
        print("category:", [item.name for item in category.items])
        #> category: ['Desk', 'Chair']
        for line in sql_lines(sent[-1].statement):
            print(line)
            #> SELECT items.category_id, items.id, items.name,
            #>   items.deleted_at
            #> FROM items
            #> WHERE items.category_id IN (?) AND items.deleted_at IS NULL
            #>   ORDER BY items.id
        with capture_sql(engine) as sent:
            joined = select(Category.name).join(Category.items)
            rows = await session.scalars(joined.where(Item.name == "Lamp"))
        print("join:", rows.all())
        #> join: []
        for line in sql_lines(sent[-1].statement):
            print(line)
            #> SELECT categories.name
            #> FROM categories JOIN items ON categories.id =
            #>   items.category_id AND items.deleted_at IS NULL
            #> WHERE items.name = ?


# --8<-- [end:demo_global_filter]


# --8<-- [start:demo_opt_in]
async def demo_opt_in(sessions: Sessions) -> None:
    async with sessions() as session:
        query = select(Item.name).order_by(Item.id)
        query = query.execution_options(include_deleted=True)
        print("everything:", (await session.scalars(query)).all())
        #> everything: ['Lamp', 'Desk', 'Chair']
        options = {"include_deleted": True}
        lamp = await session.get(Item, 1, execution_options=options)
        assert lamp is not None
        assert lamp.deleted_at is not None
        print("the Lamp, deleted in", lamp.deleted_at.tzinfo)
        #> the Lamp, deleted in UTC
        print("trash:", [item.name for item in await list_trash(session)])
        #> trash: ['Lamp']


# --8<-- [end:demo_opt_in]


# --8<-- [start:demo_identity_map]
async def demo_identity_map(engine: AsyncEngine, sessions: Sessions) -> None:
    async with sessions() as session:  # rolled back at the end
        desk = await get_item(session, 2)
        await soft_delete_item(session, 2)
        with capture_sql(engine) as sent:
            again = await session.get(Item, 2)  # found in the identity map
        print("leaked:", again is desk, "| SQL sent:", len(sent))
        #> leaked: True | SQL sent: 0
        try:
            await get_item(session, 2)
        except ItemNotFound as exc:
            print("get_item:", exc)
            #> get_item: no live item 2
        fresh = await session.get(Item, 2, populate_existing=True)
        print("get(populate_existing=True):", fresh)
        #> get(populate_existing=True): None


# --8<-- [end:demo_identity_map]


# --8<-- [start:demo_not_found]
async def demo_not_found(engine: AsyncEngine, sessions: Sessions) -> None:
    async with sessions() as session:
        options = {"include_deleted": True}
        lamp = await session.get(Item, 1, execution_options=options)
        assert lamp is not None
        deleted_at = lamp.deleted_at
        for item_id in (1, 99):  # 1 is in the trash, 99 never existed
            try:
                with capture_sql(engine) as sent:
                    await soft_delete_item(session, item_id)
            except ItemNotFound as exc:
                print(exc)
                #> no live item 1
                #> no live item 99
        for line in sql_lines(sent[-1].statement):
            print(line)
            #> UPDATE items SET deleted_at=? WHERE items.id = ? AND
            #>   items.deleted_at IS NULL RETURNING id
        await session.refresh(lamp)
        print("deleted_at kept:", lamp.deleted_at == deleted_at)
        #> deleted_at kept: True


# --8<-- [end:demo_not_found]


# --8<-- [start:demo_unique]
async def demo_unique(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        lamp = await create_item(session, "Lamp", category_id=1)
        print("a new Lamp:", lamp.id, "(the old one is in the trash)")
        #> a new Lamp: 4 (the old one is in the trash)
    async with sessions() as session:
        try:
            await create_item(session, "Lamp", category_id=1)
        except NameTaken as exc:
            print(exc)
            #> a live item is named 'Lamp'
    async with sessions() as session:
        try:
            await restore_item(session, 1)
        except NameTaken as exc:
            print(exc)
            #> item 1: its name is taken
    async with sessions() as session:
        try:
            await restore_item(session, 2)
        except ItemNotFound as exc:
            print(exc)
            #> no deleted item 2
    async with sessions.begin() as session:
        await soft_delete_item(session, 4)
        old_lamp = await restore_item(session, 1)
        print("restored:", old_lamp.id, old_lamp.name, old_lamp.deleted_at)
        #> restored: 1 Lamp None
        trash = await list_trash(session)
        print("trash:", [(item.id, item.name) for item in trash])
        #> trash: [(4, 'Lamp')]


# --8<-- [end:demo_unique]


# --8<-- [start:demo_purge]
async def demo_purge(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        long_ago = utcnow() - timedelta(days=40)
        await soft_delete_item(session, 3, now=long_ago)  # the Chair
        purged = await purge_deleted(session, older_than=timedelta(days=30))
        print("purged:", purged)
        #> purged: [3]
        trash = await list_trash(session)
        print("trash:", [(item.id, item.name) for item in trash])
        #> trash: [(4, 'Lamp')]


# --8<-- [end:demo_purge]


# --8<-- [start:query_plan]
async def query_plan(
    engine: AsyncEngine, session: AsyncSession, query: Executable
) -> list[str]:
    """The plan of the SQL the session really sends for the query."""
    with capture_sql(engine) as sent:
        await session.execute(query)
    statement, parameters = sent[-1]
    sqlite = engine.dialect.name == "sqlite"
    explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
    conn = await session.connection()
    rows = await conn.exec_driver_sql(explain + statement, parameters)
    return [row[-1] for row in rows]


# --8<-- [end:query_plan]


# --8<-- [start:demo_plan]
async def demo_plan(engine: AsyncEngine, sessions: Sessions) -> None:
    async with sessions() as session:
        live = select(Item).where(Item.name == "Lamp")
        print(*await query_plan(engine, session, live))
        #> SEARCH items USING INDEX uq_items_live_name (name=?)
        every = live.execution_options(include_deleted=True)
        print(*await query_plan(engine, session, every))
        #> SCAN items
        by_name = select(Item).order_by(Item.name)
        print(*await query_plan(engine, session, by_name))
        #> SCAN items USING INDEX uq_items_live_name


# --8<-- [end:demo_plan]


# --8<-- [start:flag_model]
class Note(Base):
    """A boolean flag, as many tutorials write soft delete."""

    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    is_deleted: Mapped[bool] = mapped_column(
        default=False, server_default=false()
    )


LIVE_NOTES = Note.is_deleted == false()  # one expression: index and queries
Index(
    "ix_notes_live_title",
    Note.title,
    sqlite_where=LIVE_NOTES,
    postgresql_where=LIVE_NOTES,
)
# --8<-- [end:flag_model]


# --8<-- [start:demo_flag_trap]
async def demo_flag_trap(engine: AsyncEngine, sessions: Sessions) -> None:
    async with sessions() as session:
        for where in (LIVE_NOTES, Note.is_deleted.is_(False)):
            print("WHERE", where.compile(engine.sync_engine))
            #> WHERE notes.is_deleted = 0
            #> WHERE notes.is_deleted IS 0
        good = select(Note).where(LIVE_NOTES).order_by(Note.title)
        print(*await query_plan(engine, session, good), sep="; ")
        #> SCAN notes USING INDEX ix_notes_live_title
        bad = select(Note).where(Note.is_deleted.is_(False))
        bad = bad.order_by(Note.title)
        print(*await query_plan(engine, session, bad), sep="; ")
        #> SCAN notes; USE TEMP B-TREE FOR ORDER BY


# --8<-- [end:demo_flag_trap]


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


# --8<-- [start:app]
class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    deleted_at: UTCTimestamp | None


ItemId = Annotated[int, PathParam(ge=1, le=2**31 - 1)]  # an INTEGER column
Responses = dict[int | str, dict[str, object]]  # OpenAPI: documented errors
NOT_FOUND: Responses = {404: {"description": "No such live (or deleted) item"}}
CONFLICT: Responses = {409: {"description": "A live item has this name"}}
router = APIRouter()


@router.post("/items", status_code=status.HTTP_201_CREATED, responses=CONFLICT)
async def create_one(body: ItemIn, session: SessionDep) -> ItemOut:
    return ItemOut.model_validate(await create_item(session, body.name))


@router.get("/items/deleted")  # before /items/{item_id}
async def get_trash(
    session: ReadSessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**6)] = 0,
) -> list[ItemOut]:
    trash = await list_trash(session, limit=limit, offset=offset)
    return [ItemOut.model_validate(item) for item in trash]


@router.get("/items/{item_id}", responses=NOT_FOUND)
async def get_one(item_id: ItemId, session: ReadSessionDep) -> ItemOut:
    return ItemOut.model_validate(await get_item(session, item_id))


@router.delete("/items/{item_id}", status_code=204, responses=NOT_FOUND)
async def delete_one(item_id: ItemId, session: SessionDep) -> None:
    await soft_delete_item(session, item_id)


@router.post("/items/{item_id}/restore", responses=NOT_FOUND | CONFLICT)
async def restore_one(item_id: ItemId, session: SessionDep) -> ItemOut:
    return ItemOut.model_validate(await restore_item(session, item_id))


# --8<-- [end:app]


# --8<-- [start:create_app]
STATUS: dict[type[Exception], int] = {ItemNotFound: 404, NameTaken: 409}


async def domain_error(_: Request, exc: Exception) -> JSONResponse:
    code = next(c for kind, c in STATUS.items() if isinstance(exc, kind))
    return JSONResponse({"detail": str(exc)}, status_code=code)


@asynccontextmanager
async def soft_delete_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The foundation's lifespan, with sessions that skip deleted rows."""
    engine = create_engine(app.state.database_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)  # demo: see Migrations
    reads = create_read_session_factory(engine)
    app.state.sessions = skipping_deleted(create_session_factory(engine))
    app.state.read_sessions = skipping_deleted(reads)
    yield
    await engine.dispose()


def create_app(database_url: str) -> FastAPI:
    app = FastAPI(lifespan=soft_delete_lifespan)
    app.state.database_url = database_url
    for kind in STATUS:  # the data layer's errors, one table
        app.add_exception_handler(kind, domain_error)
    app.add_exception_handler(DBAPIError, database_error)  # the rest
    app.include_router(router)
    return app


# --8<-- [end:create_app]


# --8<-- [start:demo_http]
def summary(reply: httpx.Response) -> str:
    if not reply.content:
        return ""
    data = reply.json()
    if isinstance(data, list):
        return str([item["name"] for item in data])
    if "detail" in data:
        return str(data["detail"])
    return f"id={data['id']} name={data['name']}"


async def demo_http(url: str) -> None:
    app = create_app(url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t"
        ) as client:
            for method, path, body in [
                ("POST", "/items", {"name": "Lamp"}),
                ("DELETE", "/items/1", None),
                ("DELETE", "/items/1", None),
                ("GET", "/items/1", None),
                ("POST", "/items", {"name": "Lamp"}),
                ("POST", "/items/1/restore", None),
                ("GET", "/items/deleted", None),
            ]:
                reply = await client.request(method, path, json=body)
                shown = f"{reply.status_code} {summary(reply)}".rstrip()
                print(method, path, "->", shown)
                #> POST /items -> 201 id=1 name=Lamp
                #> DELETE /items/1 -> 204
                #> DELETE /items/1 -> 404 no live item 1
                #> GET /items/1 -> 404 no live item 1
                #> POST /items -> 201 id=2 name=Lamp
                #> POST /items/1/restore -> 409 item 1: its name is taken
                #> GET /items/deleted -> 200 ['Lamp']


# --8<-- [end:demo_http]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:

        def url(name: str) -> str:
            return f"sqlite+aiosqlite:///{Path(tmp) / name}"

        naive = await create_database(url("naive.db"))
        naive_sessions = create_session_factory(naive)
        await demo_naive_clock(naive_sessions)
        await demo_naive(naive_sessions)
        await naive.dispose()

        engine = await create_database(url("soft_delete.db"))
        sessions = skipping_deleted(create_session_factory(engine))
        await demo_global_filter(engine, sessions)
        await demo_opt_in(sessions)
        await demo_identity_map(engine, sessions)
        await demo_not_found(engine, sessions)
        await demo_unique(sessions)
        await demo_purge(sessions)
        await demo_plan(engine, sessions)
        await demo_flag_trap(engine, sessions)
        await engine.dispose()

        await demo_http(url("app.db"))


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

"""Optimistic locking: every concurrent write counts, or is refused out loud.

Run it: python -m snippets.locking
"""

# --8<-- [start:imports]
import asyncio
import re
import tempfile
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
)
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import httpx
from fastapi import (
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Request,
    Response,
    status,
)
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import CursorResult, String, event, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import (
    DBAPIConnection,
    DBAPICursor,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.pool import ConnectionPoolEntry

# --8<-- [end:imports]


# --8<-- [start:models]
class Base(DeclarativeBase):
    pass


class Counter(Base):
    """What most tutorials write: no record of which state a write saw."""

    __tablename__ = "counters"

    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int] = mapped_column(default=0)


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    stock: Mapped[int] = mapped_column(default=0)
    version: Mapped[int] = mapped_column()

    # The ORM sets version = 1 on INSERT, and adds "AND version = <the version
    # it loaded>" to every UPDATE it flushes, which also sets version + 1.
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


# --8<-- [end:models]


# --8<-- [start:engine]
def create_engine(url: str, pool_size: int = 5) -> AsyncEngine:
    engine = create_async_engine(url, pool_size=pool_size)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", set_sqlite_pragmas)
    return engine


def set_sqlite_pragmas(conn: DBAPIConnection, _: ConnectionPoolEntry) -> None:
    cursor = conn.cursor()
    cursor.execute("PRAGMA journal_mode = WAL")  # readers do not block writers
    cursor.execute("PRAGMA busy_timeout = 5000")  # wait 5 s for the write lock
    cursor.close()


def create_session_factory(
    engine: AsyncEngine,
) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


Sessions = async_sessionmaker[AsyncSession]
# --8<-- [end:engine]


# --8<-- [start:record_sql]
@contextmanager
def recorded_sql(engine: AsyncEngine) -> Iterator[list[str]]:
    """Collect every SQL statement the engine sends, as the driver gets it."""
    statements: list[str] = []

    def record(
        conn: Connection, cursor: DBAPICursor, statement: str, *_: object
    ) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def clauses(statements: list[str], verb: str) -> list[str]:
    """The first statement that starts with `verb`, a line per clause."""
    statement = next(s for s in statements if s.startswith(verb))
    one_line = " ".join(statement.split())
    return re.sub(
        r" (SET|FROM|WHERE|RETURNING) ", r"\n\1 ", one_line
    ).splitlines()


# --8<-- [end:record_sql]


# --8<-- [start:naive]
async def add_one_naive(session: AsyncSession, counter_id: int) -> None:
    counter = await session.get(Counter, counter_id)  # SELECT: value = 0
    if counter is None:
        raise LookupError(counter_id)
    counter.value += 1  # sent at commit: SET value = 1, whatever is stored


# --8<-- [end:naive]


# --8<-- [start:race]
Writer = Callable[[asyncio.Barrier], Awaitable[None]]
WRITERS = 50


async def race(writer: Writer, writers: int = WRITERS) -> None:
    """Start `writers` copies of `writer` at once, sharing one barrier."""
    barrier = asyncio.Barrier(writers)
    await asyncio.gather(*(writer(barrier) for _ in range(writers)))


def naive_writer(
    sessions: Sessions,
    counter_id: int,
    outcomes: list[str],
    add_one: Callable[[AsyncSession, int], Awaitable[None]] = add_one_naive,
) -> Writer:
    turn = asyncio.Lock()  # shared by every copy of the writer below

    async def writer(barrier: asyncio.Barrier) -> None:
        async with sessions() as session:
            await add_one(session, counter_id)
            await barrier.wait()  # every writer has read before any writes
            async with turn:  # then they write one at a time: the best case
                await session.commit()
        outcomes.append("ok")

    return writer


async def create_counter(sessions: Sessions) -> int:
    async with sessions.begin() as session:
        counter = Counter(value=0)
        session.add(counter)
        await session.flush()
        return counter.id


async def read_counter(sessions: Sessions, counter_id: int) -> int:
    async with sessions() as session:
        value = await session.scalar(
            select(Counter.value).where(Counter.id == counter_id)
        )
        return int(value or 0)


# --8<-- [end:race]


# --8<-- [start:demo_lost_update]
async def demo_lost_update(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    counter_id = await create_counter(sessions)
    outcomes: list[str] = []
    with recorded_sql(engine) as sql:
        await race(naive_writer(sessions, counter_id, outcomes))
    value = await read_counter(sessions, counter_id)
    print(outcomes.count("ok"), "writers succeeded, counter =", value)
    #> 50 writers succeeded, counter = 1
    for line in clauses(sql, "UPDATE"):
        print(line)
        #> UPDATE counters
        #> SET value=?
        #> WHERE counters.id = ?


# --8<-- [end:demo_lost_update]


# --8<-- [start:errors]
class ItemNotFoundError(Exception):
    def __init__(self, item_id: int) -> None:
        super().__init__(f"item {item_id} does not exist")
        self.item_id = item_id


class VersionConflictError(Exception):
    def __init__(self, item_id: int, version: int) -> None:
        super().__init__(f"item {item_id} is no longer at version {version}")
        self.item_id = item_id
        self.version = version


WRITABLE = frozenset({"name", "stock"})  # never the id, never the version


def writable(changes: Mapping[str, object]) -> Mapping[str, object]:
    if unknown := changes.keys() - WRITABLE:
        raise ValueError(f"not writable: {sorted(unknown)}")
    return changes


# --8<-- [end:errors]


# --8<-- [start:version_id_col]
async def get_item(session: AsyncSession, item_id: int) -> Item:
    item = await session.get(Item, item_id)
    if item is None:
        raise ItemNotFoundError(item_id)
    return item


async def update_item(
    session: AsyncSession,
    item_id: int,
    version: int,
    changes: Mapping[str, object],
) -> Item:
    """Apply `changes` if the item is still at `version`, the one read."""
    item = await get_item(session, item_id)
    if item.version != version:  # changed before we even loaded it
        raise VersionConflictError(item_id, version)
    for field, value in writable(changes).items():
        setattr(item, field, value)
    try:
        await session.flush()  # UPDATE ... WHERE id = ? AND version = ?
    except StaleDataError as exc:  # changed between our SELECT and UPDATE
        raise VersionConflictError(item_id, version) from exc
    return item


# --8<-- [end:version_id_col]


# --8<-- [start:naive_cas]
async def update_item_naive_cas(
    session: AsyncSession,
    item_id: int,
    version: int,
    changes: Mapping[str, object],
) -> int:
    """The popular version: zero rows always means a conflict."""
    result = await session.execute(
        update(Item)
        .where(Item.id == item_id, Item.version == version)
        .values(**writable(changes), version=Item.version + 1)
    )
    if cast(CursorResult[Any], result).rowcount == 0:
        raise VersionConflictError(item_id, version)  # or it never existed
    return version + 1


# --8<-- [end:naive_cas]


# --8<-- [start:compare_and_swap]
async def update_item_cas(
    session: AsyncSession,
    item_id: int,
    version: int,
    changes: Mapping[str, object],
) -> int:
    """The same by hand: one UPDATE that matches only the version read."""
    result = await session.execute(
        update(Item)
        .where(Item.id == item_id, Item.version == version)
        .values(**writable(changes), version=Item.version + 1)
    )
    if cast(CursorResult[Any], result).rowcount == 1:
        return version + 1
    # --8<-- [start:tell_apart]
    # 0 rows: tell "no such item" (404) from "someone else wrote" (409).
    found = await session.scalar(select(Item.id).where(Item.id == item_id))
    if found is None:
        raise ItemNotFoundError(item_id)
    raise VersionConflictError(item_id, version)
    # --8<-- [end:tell_apart]


# --8<-- [end:compare_and_swap]


# --8<-- [start:create_item]
Update = Callable[
    [AsyncSession, int, int, Mapping[str, object]], Awaitable[object]
]


async def create_item(sessions: Sessions, name: str, stock: int = 0) -> int:
    async with sessions.begin() as session:
        item = Item(name=name, stock=stock)
        session.add(item)
        await session.flush()
        return item.id


async def read_item_row(sessions: Sessions, item_id: int) -> Item:
    async with sessions() as session:
        return await get_item(session, item_id)


async def failure(
    sessions: Sessions, update_fn: Update, item_id: int, version: int
) -> str:
    """The name of the error an update raises, or "ok"."""
    try:
        async with sessions.begin() as session:
            await update_fn(session, item_id, version, {"stock": 0})
    except (ItemNotFoundError, VersionConflictError) as exc:
        return type(exc).__name__
    return "ok"


# --8<-- [end:create_item]


# --8<-- [start:demo_version_check]
async def demo_version_check(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    item_id = await create_item(sessions, "lamp", stock=10)
    with recorded_sql(engine) as sql:
        async with sessions.begin() as session:
            item = await update_item(session, item_id, 1, {"stock": 7})
    print("stock", item.stock, "version", item.version)
    #> stock 7 version 2
    for line in clauses(sql, "UPDATE"):
        print(line)
        #> UPDATE items
        #> SET stock=?, version=?
        #> WHERE items.id = ? AND items.version = ?

    with recorded_sql(engine) as sql:
        async with sessions.begin() as session:
            version = await update_item_cas(session, item_id, 2, {"stock": 6})
    print("version", version)
    #> version 3
    for line in clauses(sql, "UPDATE"):
        print(line)
        #> UPDATE items
        #> SET stock=?, version=(items.version + ?)
        #> WHERE items.id = ? AND items.version = ?

    for update_fn in (update_item, update_item_cas):
        stale = await failure(sessions, update_fn, item_id, version=1)
        missing = await failure(sessions, update_fn, 999, version=1)
        print(f"{update_fn.__name__}:", stale, missing)
        #> update_item: VersionConflictError ItemNotFoundError
        #> update_item_cas: VersionConflictError ItemNotFoundError


# --8<-- [end:demo_version_check]


# --8<-- [start:demo_refused]
def checked_writer(
    sessions: Sessions, item_id: int, update_fn: Update, outcomes: list[str]
) -> Writer:
    turn = asyncio.Lock()

    async def writer(barrier: asyncio.Barrier) -> None:
        async with sessions() as session:
            item = await get_item(session, item_id)
            await barrier.wait()  # every writer has read version 1
            async with turn:
                changes = {"stock": item.stock + 1}
                try:
                    await update_fn(session, item_id, item.version, changes)
                    await session.commit()
                    outcomes.append("ok")
                except VersionConflictError:
                    await session.rollback()  # SQLite: frees the write lock
                    outcomes.append("conflict")

    return writer


async def demo_refused(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    item_id = await create_item(sessions, "refused")
    outcomes: list[str] = []
    await race(checked_writer(sessions, item_id, update_item, outcomes))
    item = await read_item_row(sessions, item_id)
    ok, refused = outcomes.count("ok"), outcomes.count("conflict")
    print(f"{ok} ok, {refused} refused, stock = {item.stock}")
    #> 1 ok, 49 refused, stock = 1


# --8<-- [end:demo_refused]


# --8<-- [start:retry]
T = TypeVar("T")


async def retry_on_conflict(
    sessions: Sessions,
    work: Callable[[AsyncSession], Awaitable[T]],
    attempts: int = 10,
) -> T:
    """Run `work` in a fresh transaction until it commits without conflict."""
    for _ in range(attempts - 1):
        try:
            async with sessions.begin() as session:
                return await work(session)
        except VersionConflictError:
            continue  # another writer won: read again, apply again
    async with sessions.begin() as session:
        return await work(session)  # the last attempt lets its conflict out


# --8<-- [end:retry]


# --8<-- [start:demo_retry]
FEW_WRITERS = 10


def retrying_writer(
    sessions: Sessions, item_id: int, update_fn: Update, writers: int
) -> Writer:
    async def writer(barrier: asyncio.Barrier) -> None:
        waited = False

        async def add_one(session: AsyncSession) -> None:
            nonlocal waited
            item = await get_item(session, item_id)
            if not waited:  # first attempt: wait until every writer has read
                waited = True
                await barrier.wait()
            changes = {"stock": item.stock + 1}
            await update_fn(session, item_id, item.version, changes)

        # Each failure means another writer succeeded: `writers` attempts
        # are always enough.
        await retry_on_conflict(sessions, add_one, attempts=writers)

    return writer


async def demo_retry(engine: AsyncEngine, writers: int = FEW_WRITERS) -> None:
    sessions = create_session_factory(engine)
    item_id = await create_item(sessions, "retried")
    await race(
        retrying_writer(sessions, item_id, update_item, writers), writers
    )
    item = await read_item_row(sessions, item_id)
    print(f"{writers} writers, stock = {item.stock}")
    #> 10 writers, stock = 10


# --8<-- [end:demo_retry]


# --8<-- [start:atomic]
async def add_stock_atomic(
    session: AsyncSession, item_id: int, amount: int
) -> int:
    """No read: the database adds to what it has. The version still goes up,
    so a client holding an older ETag learns that the item changed."""
    stock: int | None = await session.scalar(
        update(Item)
        .where(Item.id == item_id)
        .values(stock=Item.stock + amount, version=Item.version + 1)
        .returning(Item.stock)
    )
    if stock is None:
        raise ItemNotFoundError(item_id)
    return stock


# --8<-- [end:atomic]


# --8<-- [start:demo_atomic]
def atomic_writer(sessions: Sessions, item_id: int) -> Writer:
    async def writer(barrier: asyncio.Barrier) -> None:
        await barrier.wait()  # nothing to read: all write at once
        async with sessions.begin() as session:
            await add_stock_atomic(session, item_id, 1)

    return writer


async def demo_atomic(engine: AsyncEngine, writers: int = FEW_WRITERS) -> None:
    sessions = create_session_factory(engine)
    item_id = await create_item(sessions, "atomic")
    with recorded_sql(engine) as sql:
        await race(atomic_writer(sessions, item_id), writers)
    item = await read_item_row(sessions, item_id)
    print("stock =", item.stock, "version =", item.version)
    #> stock = 10 version = 11
    for line in clauses(sql, "UPDATE"):
        print(line)
        #> UPDATE items
        #> SET stock=(items.stock + ?), version=(items.version + ?)
        #> WHERE items.id = ?
        #> RETURNING stock


# --8<-- [end:demo_atomic]


# --8<-- [start:for_update]
async def add_one_locked(session: AsyncSession, counter_id: int) -> None:
    """PostgreSQL: lock the row as you read it; other writers wait here."""
    query = select(Counter).where(Counter.id == counter_id).with_for_update()
    counter = (await session.scalars(query)).one()
    counter.value += 1


# --8<-- [end:for_update]


# --8<-- [start:demo_for_update]
async def demo_for_update(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    counter_id = await create_counter(sessions)
    with recorded_sql(engine) as sql:
        async with sessions.begin() as session:
            await add_one_locked(session, counter_id)
    for line in clauses(sql, "SELECT"):
        print(line)
        #> SELECT counters.id, counters.value
        #> FROM counters
        #> WHERE counters.id = ?


# --8<-- [end:demo_for_update]


# --8<-- [start:app]
MAX_INT = 2**31 - 1
ItemId = Annotated[int, PathParam(ge=1, le=MAX_INT)]
ETAG = re.compile(r'"([0-9]{1,10})"')  # a strong ETag: "<version>"


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    stock: int
    version: int


class ItemPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=100)
    stock: int | None = Field(None, ge=0, le=MAX_INT)
    version: int | None = Field(None, ge=1, le=MAX_INT)  # if no If-Match

    @field_validator("name", "stock", "version", mode="before")
    @classmethod
    def reject_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may be omitted, but not null")
        return value


Responses = dict[int | str, dict[str, Any]]
NOT_FOUND: Responses = {404: {"description": "No such item"}}
PATCH_ERRORS: Responses = {
    **NOT_FOUND,
    409: {"description": "The version in the body is not the current one"},
    412: {"description": "If-Match names no current version"},
    428: {"description": "Neither If-Match nor a version was sent"},
}


def etag(version: int) -> str:
    return f'"{version}"'


def version_from_if_match(value: str) -> int:
    if value.strip() == "*":  # "any version": proves nothing was read
        raise HTTPException(
            status.HTTP_428_PRECONDITION_REQUIRED,
            'send the ETag you read: If-Match: "<version>"',
        )
    match = ETAG.fullmatch(value.strip())
    if match is None or int(match.group(1)) > MAX_INT:
        raise HTTPException(
            status.HTTP_412_PRECONDITION_FAILED, "If-Match matches no version"
        )
    return int(match.group(1))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_engine(app.state.database_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    app.state.sessions = create_session_factory(engine)
    yield
    await engine.dispose()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: Sessions = request.app.state.sessions
    async with sessions.begin() as session:  # commit, or rollback on error
        yield session


Session = Annotated[AsyncSession, Depends(get_session, scope="function")]


def create_app(database_url: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.state.database_url = database_url
    app.add_exception_handler(ItemNotFoundError, not_found)
    app.add_exception_handler(VersionConflictError, conflict)

    @app.get("/items/{item_id}", responses=NOT_FOUND)
    async def read_item(
        item_id: ItemId, session: Session, response: Response
    ) -> ItemOut:
        item = await get_item(session, item_id)
        response.headers["ETag"] = etag(item.version)
        return ItemOut.model_validate(item)

    @app.patch("/items/{item_id}", responses=PATCH_ERRORS)
    async def patch_item(
        item_id: ItemId,
        patch: ItemPatch,
        session: Session,
        response: Response,
        if_match: Annotated[str | None, Header()] = None,
    ) -> ItemOut:
        changes = patch.model_dump(exclude_unset=True, exclude={"version"})
        if if_match is not None:
            version = version_from_if_match(if_match)
            try:
                item = await update_item(session, item_id, version, changes)
            except VersionConflictError as exc:
                raise HTTPException(
                    status.HTTP_412_PRECONDITION_FAILED,
                    "the item changed since you read it: GET it again",
                ) from exc
        elif patch.version is not None:  # a stale body version: 409
            item = await update_item(session, item_id, patch.version, changes)
        else:
            raise HTTPException(
                status.HTTP_428_PRECONDITION_REQUIRED,
                'send If-Match: "<version>" (the ETag you read)',
            )
        response.headers["ETag"] = etag(item.version)
        return ItemOut.model_validate(item)

    return app


async def not_found(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status.HTTP_404_NOT_FOUND)


async def conflict(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status.HTTP_409_CONFLICT)


# --8<-- [end:app]


# --8<-- [start:demo_http]
def show(reply: httpx.Response) -> str:
    tag = reply.headers.get("ETag", "-")
    body = reply.json()
    detail = body.get("detail") if "detail" in body else body.get("stock")
    return f"{reply.status_code} ETag={tag} {detail}"


async def demo_http(app: FastAPI) -> None:
    item_id = await create_item(app.state.sessions, "desk", stock=10)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        url = f"/items/{item_id}"
        alice = await c.get(url)
        bob = await c.get(url)
        print("both read:", show(alice), "|", show(bob))
        #> both read: 200 ETag="1" 10 | 200 ETag="1" 10

        sold_3 = {"If-Match": alice.headers["ETag"]}
        print(
            "alice:",
            show(await c.patch(url, json={"stock": 7}, headers=sold_3)),
        )
        #> alice: 200 ETag="2" 7
        sold_2 = {"If-Match": bob.headers["ETag"]}
        print(
            "bob:", show(await c.patch(url, json={"stock": 8}, headers=sold_2))
        )
        #> bob: 412 ETag=- the item changed since you read it: GET it again
        bob = await c.get(url)
        sold_2 = {"If-Match": bob.headers["ETag"]}
        print(
            "bob:", show(await c.patch(url, json={"stock": 5}, headers=sold_2))
        )
        #> bob: 200 ETag="3" 5

        print(show(await c.patch(url, json={"stock": 1})))
        #> 428 ETag=- send If-Match: "<version>" (the ETag you read)
        print(show(await c.patch(url, json={"stock": 1, "version": 1})))
        #> 409 ETag=- item 5 is no longer at version 1
        missing = await c.patch(
            "/items/99", json={}, headers={"If-Match": '"1"'}
        )
        print(show(missing))
        #> 404 ETag=- item 99 does not exist


# --8<-- [end:demo_http]


# --8<-- [start:begin_immediate]
def begin_immediate(engine: AsyncEngine) -> AsyncEngine:
    """SQLite: take the write lock when a transaction begins (the SQLAlchemy
    docs' recipe for aiosqlite), so a read-modify-write runs alone."""

    @event.listens_for(engine.sync_engine, "connect")
    def no_implicit_begin(
        conn: DBAPIConnection, _: ConnectionPoolEntry
    ) -> None:
        conn.isolation_level = None  # pysqlite stops sending its own BEGIN

    @event.listens_for(engine.sync_engine, "begin")
    def emit_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


# --8<-- [end:begin_immediate]


# --8<-- [start:demo_sqlite_locks]
def short(exc: Exception) -> str:
    """The first line of an error message, without the SQL and doc link."""
    return str(exc).splitlines()[0]


async def demo_database_is_locked(url: str) -> None:
    engine = create_engine(url)
    bump = update(Counter).values(value=Counter.value + 1)
    async with engine.connect() as holder, engine.connect() as impatient:
        await impatient.exec_driver_sql("PRAGMA busy_timeout = 0")
        await holder.execute(bump)  # holds the write lock until it commits
        try:
            await impatient.execute(bump)
        except OperationalError as exc:
            print(short(exc))
            #> (sqlite3.OperationalError) database is locked
        await impatient.rollback()
        await holder.commit()  # the lock is free again
        await impatient.execute(bump)
        await impatient.commit()
        print("after the commit: ok")
        #> after the commit: ok
    await engine.dispose()


def locked_writer(
    sessions: Sessions,
    counter_id: int,
    add_one: Callable[[AsyncSession, int], Awaitable[None]] = add_one_naive,
) -> Writer:
    async def writer(barrier: asyncio.Barrier) -> None:
        await barrier.wait()  # all start together; the lock orders them
        async with sessions.begin() as session:
            await add_one(session, counter_id)

    return writer


async def demo_begin_immediate(url: str, writers: int = FEW_WRITERS) -> None:
    engine = begin_immediate(create_engine(url, pool_size=writers))
    sessions = create_session_factory(engine)
    counter_id = await create_counter(sessions)
    with recorded_sql(engine) as sql:
        async with sessions.begin() as session:
            await add_one_naive(session, counter_id)
    for statement in sql:
        print(statement.splitlines()[0].strip())
        #> BEGIN IMMEDIATE
        #> SELECT counters.id, counters.value
        #> UPDATE counters SET value=? WHERE counters.id = ?
    await race(locked_writer(sessions, counter_id), writers)
    print("counter =", await read_counter(sessions, counter_id))
    #> counter = 11
    await engine.dispose()


# --8<-- [end:demo_sqlite_locks]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'locking.db'}"
        app = create_app(url)
        async with lifespan(app):  # creates the tables
            engine = create_engine(url, pool_size=WRITERS)
            await demo_lost_update(engine)
            await demo_version_check(engine)
            await demo_refused(engine)
            await demo_retry(engine)
            await demo_atomic(engine)
            await demo_for_update(engine)
            await engine.dispose()
            await demo_http(app)
            await demo_database_is_locked(url)
            await demo_begin_immediate(url)


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

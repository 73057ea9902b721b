"""Pagination: offset pages with a total, keyset pages with signed cursors.

Run it: python -m snippets.pagination
"""

# --8<-- [start:imports]
import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    HTTPException,
    Query,
    Request,
    status,
)
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    PlainSerializer,
)
from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Dialect,
    Index,
    MetaData,
    Numeric,
    Row,
    Select,
    String,
    TypeDecorator,
    and_,
    event,
    false,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry

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


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    category: Mapped[str] = mapped_column(String(50))
    # None: "price on request"
    price: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# --8<-- [end:models]


# --8<-- [start:keyset]
@dataclass(frozen=True)
class OrderKey:
    """One column of an ORDER BY. The rule: NULL sorts below every value."""

    column: ColumnElement[Any]
    descending: bool = False
    nullable: bool = False

    def order_by(self) -> ColumnElement[Any]:
        if self.descending:
            order = self.column.desc()
            return order.nulls_last() if self.nullable else order
        order = self.column.asc()
        return order.nulls_first() if self.nullable else order

    def reversed(self) -> "OrderKey":
        return OrderKey(self.column, not self.descending, self.nullable)


def after(
    keys: Sequence[OrderKey], values: Sequence[Any]
) -> ColumnElement[bool]:
    """Rows strictly after `values` in the order of `keys`."""
    branches = []
    for i, (key, value) in enumerate(zip(keys, values, strict=True)):
        ties = [equals(k, v) for k, v in zip(keys[:i], values[:i], strict=True)]
        branches.append(and_(*ties, beyond(key, value)))
    return or_(*branches)


def equals(key: OrderKey, value: Any) -> ColumnElement[bool]:
    return key.column.is_(None) if value is None else key.column == value


def beyond(key: OrderKey, value: Any) -> ColumnElement[bool]:
    if value is None:  # NULL is lowest: after it come the values, ascending
        if key.descending or not key.nullable:
            return false()
        return key.column.is_not(None)
    if not key.descending:
        above: ColumnElement[bool] = key.column > value
        return above
    below: ColumnElement[bool] = key.column < value
    if key.nullable:
        return or_(below, key.column.is_(None))
    return below


def before(
    keys: Sequence[OrderKey], values: Sequence[Any]
) -> ColumnElement[bool]:
    """Rows strictly before `values`: `after` in the reversed order."""
    return after([key.reversed() for key in keys], values)


# --8<-- [end:keyset]


# --8<-- [start:indexes]
# One index per order the API offers, each ending in the primary key, read
# forwards or backwards. NULL sorts lowest: SQLite's own order, which its
# CREATE INDEX cannot change; PostgreSQL is told NULLS FIRST. Scanned
# backwards, either index gives DESC NULLS LAST: the reversed order.
for index in (
    Index("ix_items_price", Item.price, Item.id),
    Index("ix_items_category", Item.category.desc(), Item.price, Item.id),
):
    index.ddl_if(dialect="sqlite")
for index in (
    Index("ix_items_price", Item.price.nulls_first(), Item.id),
    Index(
        "ix_items_category",
        Item.category.desc(),
        Item.price.nulls_first(),
        Item.id,
    ),
):
    index.ddl_if(dialect="postgresql")
Index("ix_items_created_at", Item.created_at, Item.id)  # NOT NULL: both
# --8<-- [end:indexes]


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
async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: Sessions = request.app.state.read_sessions
    async with sessions() as session:  # never commits: closing rolls back
        yield session


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]
# --8<-- [end:dependency]


# --8<-- [start:schemas]
class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    category: str
    price: Decimal | None
    created_at: UTCTimestamp


class OffsetPage(BaseModel):
    items: list[ItemOut]
    total: int
    limit: int
    offset: int


class KeysetPage(BaseModel):
    items: list[ItemOut]
    next_cursor: str | None  # null: this is the last page
    prev_cursor: str | None  # null: this is the first page


# --8<-- [end:schemas]


# --8<-- [start:naive]
router = APIRouter()


@router.get("/naive/items")
async def list_items_naive(
    session: ReadSessionDep,
    limit: Annotated[int, Query(le=100)] = 20,  # no lower bound
    offset: int = 0,  # no bounds at all
) -> list[ItemOut]:
    query = select(Item).offset(offset).limit(limit)  # no ORDER BY
    rows = await session.scalars(query)
    return [ItemOut.model_validate(row) for row in rows]


# --8<-- [end:naive]


# --8<-- [start:sorts]
# The orders the API offers. The primary key always goes last, in the
# direction of the key before it, so that one index serves the whole order.
SortName = Literal["price", "-price", "-category,price", "-created_at"]
PRICE = OrderKey(Item.price.expression, nullable=True)
SORTS: dict[SortName, tuple[OrderKey, ...]] = {
    "price": (PRICE, OrderKey(Item.id.expression)),
    "-price": (PRICE.reversed(), OrderKey(Item.id.expression, True)),
    "-category,price": (
        OrderKey(Item.category.expression, descending=True),
        PRICE,
        OrderKey(Item.id.expression),
    ),
    "-created_at": (
        OrderKey(Item.created_at.expression, descending=True),
        OrderKey(Item.id.expression, descending=True),
    ),
}


def filtered(category: str | None) -> Select[Item]:
    query = select(Item)
    if category is not None:
        query = query.where(Item.category == category)
    return query


# --8<-- [end:sorts]


# --8<-- [start:naive_null_order]
def naive_price_page(values: Sequence[Any] | None) -> Select[Item]:
    """The rule's after(), with the database's own NULL placement."""
    query = select(Item).order_by(Item.price, Item.id)  # no NULLS FIRST
    if values is not None:
        query = query.where(after(SORTS["price"], values))
    return query.limit(10)


# --8<-- [end:naive_null_order]


# --8<-- [start:offset_page]
MAX_OFFSET = 10_000  # deeper pages: use the keyset endpoint


async def offset_page(
    session: AsyncSession,
    *,
    sort: SortName,
    category: str | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[Item], int]:
    query = filtered(category)
    count = select(func.count()).select_from(query.subquery())
    # The total rides on every row: one statement, one round trip, and the
    # count and the page read the same snapshot.
    page = query.add_columns(count.scalar_subquery())
    ordered = page.order_by(*(key.order_by() for key in SORTS[sort]))
    rows = (await session.execute(ordered.limit(limit).offset(offset))).all()
    if rows:
        return [item for item, _ in rows], rows[0][1]
    # Past the last page no row carries the total: count on its own.
    return [], await session.scalar(count) or 0


# --8<-- [end:offset_page]


# --8<-- [start:keyset_seek]
def seek_after(
    keys: Sequence[OrderKey], values: Sequence[Any]
) -> ColumnElement[bool]:
    """after(), with the range on the first key that lets an index seek."""
    condition = after(keys, values)
    first, value = keys[0], values[0]
    if value is None or (first.descending and first.nullable):
        return condition  # its rows are not one range of the first key
    if first.descending:
        return and_(first.column <= value, condition)
    return and_(first.column >= value, condition)


# --8<-- [end:keyset_seek]


# --8<-- [start:cursor]
class BadCursor(ValueError):
    """The cursor was not made by this server for this query."""


MAX_CURSOR_LENGTH = 1_000
CursorValue = int | str | Decimal | datetime | None


@dataclass(frozen=True)
class Cursor:
    values: list[CursorValue]  # the sort values of a row on the page
    backwards: bool = False  # True: the page before that row


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded, altchars=b"-_", validate=True)


def dump_value(value: CursorValue) -> object:
    """JSON has no Decimal or datetime: tag them, so they come back as such."""
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError("naive datetime: cursors carry instants")
        return {"utc": iso_utc(value)}
    return value


def load_value(data: Any) -> CursorValue:
    if isinstance(data, dict):
        if "decimal" in data:
            return Decimal(data["decimal"])
        return datetime.fromisoformat(data["utc"])
    value: CursorValue = data
    return value


def encode_cursor(
    key: bytes, bound_to: dict[str, str | None], cursor: Cursor
) -> str:
    payload = json.dumps(
        {
            "q": bound_to,
            "v": [dump_value(value) for value in cursor.values],
            "b": cursor.backwards,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    signature = hmac.digest(key, payload, hashlib.sha256)
    return f"{b64(payload)}.{b64(signature)}"


def decode_cursor(
    key: bytes, cursor: str, bound_to: dict[str, str | None], size: int
) -> Cursor:
    if not cursor:
        raise BadCursor("empty cursor")
    if len(cursor) > MAX_CURSOR_LENGTH or cursor.count(".") != 1:
        raise BadCursor("malformed cursor")
    encoded_payload, encoded_signature = cursor.split(".")
    try:
        payload, signature = unb64(encoded_payload), unb64(encoded_signature)
    except ValueError as exc:  # bad base64, or characters outside ASCII
        raise BadCursor("malformed cursor") from exc
    expected = hmac.digest(key, payload, hashlib.sha256)
    if not hmac.compare_digest(signature, expected):
        raise BadCursor("cursor signature does not match")
    data = json.loads(payload)  # signed by us: well formed
    if data["q"] != bound_to:
        raise BadCursor("cursor was made for another sort or filter")
    if len(data["v"]) != size:
        raise BadCursor("cursor does not fit this sort")
    return Cursor([load_value(value) for value in data["v"]], data["b"])


# --8<-- [end:cursor]


# --8<-- [start:keyset_page]
@dataclass(frozen=True)
class KeysetRows:
    items: Sequence[Item]
    next: Cursor | None  # the page after, if there is one
    prev: Cursor | None  # the page before, if there may be one


async def rows_after(
    session: AsyncSession,
    query: Select[Item],
    keys: Sequence[OrderKey],
    values: Sequence[CursorValue] | None,
    limit: int,
) -> Sequence[Row[Any]]:
    """Up to limit + 1 rows after `values`: each an Item and its sort values."""
    ordered = query.add_columns(*(key.column for key in keys)).order_by(
        *(key.order_by() for key in keys)
    )
    if values is not None:
        ordered = ordered.where(seek_after(keys, values))
    return (await session.execute(ordered.limit(limit + 1))).all()


async def keyset_page(
    session: AsyncSession,
    *,
    sort: SortName,
    category: str | None,
    limit: int,
    cursor: Cursor | None,
) -> KeysetRows:
    keys, query = SORTS[sort], filtered(category)
    if cursor is not None and cursor.backwards:
        reverse = [key.reversed() for key in keys]
        rows = await rows_after(session, query, reverse, cursor.values, limit)
        if not rows:  # the rows before it are gone: start from the first
            return await keyset_page(
                session, sort=sort, category=category, limit=limit, cursor=None
            )
        page = rows[:limit][::-1]  # read backwards, shown in order
        more_before = len(rows) > limit
        return KeysetRows(
            [row[0] for row in page],
            Cursor(list(page[-1][1:])),
            Cursor(list(page[0][1:]), True) if more_before else None,
        )
    values = None if cursor is None else cursor.values
    rows = await rows_after(session, query, keys, values, limit)
    page = rows[:limit]
    more_after = len(rows) > limit  # then this is not the last page
    return KeysetRows(
        [row[0] for row in page],
        Cursor(list(page[-1][1:])) if more_after else None,
        Cursor(list(page[0][1:]), True) if cursor and page else None,
    )


# --8<-- [end:keyset_page]


# --8<-- [start:app]
Limit = Annotated[int, Query(ge=1, le=100)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
Category = Annotated[str | None, Query(min_length=1, max_length=50)]


def get_cursor_key(request: Request) -> bytes:
    key: bytes = request.app.state.cursor_key  # set by create_app
    return key


CursorKey = Annotated[bytes, Depends(get_cursor_key)]


@router.get("/items")
async def list_items(
    session: ReadSessionDep,
    limit: Limit = 20,
    offset: Offset = 0,
    sort: SortName = "price",
    category: Category = None,
) -> OffsetPage:
    rows, total = await offset_page(
        session, sort=sort, category=category, limit=limit, offset=offset
    )
    items = [ItemOut.model_validate(row) for row in rows]
    return OffsetPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/items/keyset",
    responses={status.HTTP_400_BAD_REQUEST: {"description": "Bad cursor"}},
)
async def list_items_keyset(
    *,
    session: ReadSessionDep,
    cursor_key: CursorKey,
    limit: Limit = 20,
    sort: SortName = "price",
    category: Category = None,
    cursor: str | None = None,
) -> KeysetPage:
    bound_to = {"sort": sort, "category": category}
    try:
        position = (
            None
            if cursor is None
            else decode_cursor(cursor_key, cursor, bound_to, len(SORTS[sort]))
        )
    except BadCursor as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    page = await keyset_page(
        session, sort=sort, category=category, limit=limit, cursor=position
    )

    def encoded(to: Cursor | None) -> str | None:
        return None if to is None else encode_cursor(cursor_key, bound_to, to)

    return KeysetPage(
        items=[ItemOut.model_validate(item) for item in page.items],
        next_cursor=encoded(page.next),
        prev_cursor=encoded(page.prev),
    )


def create_app(database_url: str, cursor_key: bytes) -> FastAPI:
    """cursor_key: a secret of 32 random bytes, from your settings."""
    app = FastAPI(lifespan=lifespan)
    app.state.database_url = database_url
    app.state.cursor_key = cursor_key
    app.include_router(router)
    return app


# --8<-- [end:app]


# --8<-- [start:helpers]
CATEGORIES = ("books", "games", "tools")
PRICES = ("", "5.00", "5.00", "12.00", "3.00", "5.00")  # ties, and NULLs
START = datetime(2026, 3, 1, tzinfo=UTC)


def sample_items(count: int) -> list[Item]:
    return [
        Item(
            name=f"item-{n:02d}",
            category=CATEGORIES[n % len(CATEGORIES)],
            price=Decimal(price) if (price := PRICES[n % 6]) else None,
            created_at=START + timedelta(hours=n // 4),  # 4 share an hour
        )
        for n in range(1, count + 1)
    ]


async def explain(session: AsyncSession, query: Select[Any]) -> list[str]:
    conn = await session.connection()
    # Our own statement, rendered with its values inline (LIMIT 20).
    literal = {"literal_binds": True}
    sql = query.compile(dialect=conn.dialect, compile_kwargs=literal)
    if conn.dialect.name == "sqlite":
        plan = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")
        return [row["detail"] for row in plan.mappings()]
    plan = await conn.exec_driver_sql(f"EXPLAIN (COSTS OFF) {sql}")
    return list(plan.scalars())


def client_for(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


# --8<-- [end:helpers]


# --8<-- [start:demo_naive_bounds]
async def demo_naive_bounds(app: FastAPI) -> None:
    async with client_for(app) as client:
        naive = await client.get("/naive/items", params={"limit": -1})
        print("naive ?limit=-1:", naive.status_code, len(naive.json()), "rows")
        #> naive ?limit=-1: 200 30 rows
        fixed = await client.get("/items", params={"limit": -1})
        error = fixed.json()["detail"][0]
        print("fixed ?limit=-1:", fixed.status_code, error["loc"])
        #> fixed ?limit=-1: 422 ['query', 'limit']
        print(error["msg"])
        #> Input should be greater than or equal to 1


# --8<-- [end:demo_naive_bounds]


# --8<-- [start:demo_unstable_order]
async def demo_unstable_order(sessions: Sessions) -> None:
    unordered = select(Item).limit(4)
    ordered = unordered.order_by(Item.id)
    reverse, forward = (
        text(f"PRAGMA reverse_unordered_selects = {flag}") for flag in "10"
    )
    async with sessions() as session:
        for query in (unordered, ordered):
            page_1 = [i.id for i in await session.scalars(query.offset(0))]
            # the plan changes between two requests (an index, an upgrade...)
            await session.execute(reverse)
            page_2 = [i.id for i in await session.scalars(query.offset(4))]
            await session.execute(forward)
            label = "ORDER BY id" if query is ordered else "no ORDER BY"
            print(f"{label}: page 1 {page_1}, page 2 {page_2}")
            #> no ORDER BY: page 1 [1, 2, 3, 4], page 2 [26, 25, 24, 23]
            #> ORDER BY id: page 1 [1, 2, 3, 4], page 2 [5, 6, 7, 8]


# --8<-- [end:demo_unstable_order]


# --8<-- [start:demo_offset]
async def demo_offset(app: FastAPI) -> None:
    pages: list[dict[str, str | int]] = [
        {"limit": 4},
        {"limit": 4, "offset": 28},
        {"limit": 4, "offset": 100},
        {"limit": 4, "category": "games"},
    ]
    async with client_for(app) as client:
        for params in pages:
            page = (await client.get("/items", params=params)).json()
            ids = [item["id"] for item in page["items"]]
            print(params, "->", ids, "total", page["total"])
            #> {'limit': 4} -> [6, 12, 18, 24] total 30
            #> {'limit': 4, 'offset': 28} -> [21, 27] total 30
            #> {'limit': 4, 'offset': 100} -> [] total 30
            #> {'limit': 4, 'category': 'games'} -> [4, 10, 16, 22] total 10


# --8<-- [end:demo_offset]


# --8<-- [start:demo_keyset]
async def demo_keyset(app: FastAPI) -> None:
    async with client_for(app) as client:
        params: dict[str, str | int] = {"limit": 6, "sort": "-price"}
        while True:
            page = (await client.get("/items/keyset", params=params)).json()
            print(" ".join(f"{i['id']}:{i['price']}" for i in page["items"]))
            #> 27:12.00 21:12.00 15:12.00 9:12.00 3:12.00 29:5.00
            #> 26:5.00 25:5.00 23:5.00 20:5.00 19:5.00 17:5.00
            #> 14:5.00 13:5.00 11:5.00 8:5.00 7:5.00 5:5.00
            #> 2:5.00 1:5.00 28:3.00 22:3.00 16:3.00 10:3.00
            #> 4:3.00 30:None 24:None 18:None 12:None 6:None
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]


# --8<-- [end:demo_keyset]


# --8<-- [start:demo_back_and_forth]
def hour_and_id(item: dict[str, Any]) -> str:
    return f"{item['created_at'][11:13]}h:{item['id']}"


async def demo_back_and_forth(app: FastAPI) -> None:
    async with client_for(app) as client:
        params: dict[str, str | int] = {"limit": 5, "sort": "-created_at"}
        page: dict[str, Any] = {}
        for move in ("first", "next", "next", "prev", "prev"):
            if move != "first":
                params["cursor"] = page[f"{move}_cursor"]
            page = (await client.get("/items/keyset", params=params)).json()
            shown = " ".join(hour_and_id(item) for item in page["items"])
            ends = [end for end in ("prev", "next") if page[f"{end}_cursor"]]
            print(f"{move:>5}: {shown}  ({', '.join(ends)})")
            #> first: 07h:30 07h:29 07h:28 06h:27 06h:26  (next)
            #>  next: 06h:25 06h:24 05h:23 05h:22 05h:21  (prev, next)
            #>  next: 05h:20 04h:19 04h:18 04h:17 04h:16  (prev, next)
            #>  prev: 06h:25 06h:24 05h:23 05h:22 05h:21  (prev, next)
            #>  prev: 07h:30 07h:29 07h:28 06h:27 06h:26  (next)


# --8<-- [end:demo_back_and_forth]


# --8<-- [start:demo_bad_cursors]
async def demo_bad_cursors(app: FastAPI) -> None:
    async with client_for(app) as client:
        first = await client.get("/items/keyset", params={"limit": 2})
        cursor = first.json()["next_cursor"]
        payload, signature = cursor.split(".")
        data = json.loads(unb64(payload))
        data["v"][-1] = 1  # try to jump back to the row with id 1
        forged = b64(json.dumps(data).encode())
        for params in (
            {"cursor": ""},
            {"cursor": "not-a-cursor"},
            {"cursor": f"{forged}.{signature}"},
            {"cursor": cursor, "sort": "-price"},
            {"cursor": cursor, "category": "books"},
        ):
            reply = await client.get("/items/keyset", params=params)
            print(reply.status_code, reply.json()["detail"])
            #> 400 empty cursor
            #> 400 malformed cursor
            #> 400 cursor signature does not match
            #> 400 cursor was made for another sort or filter
            #> 400 cursor was made for another sort or filter


# --8<-- [end:demo_bad_cursors]


# --8<-- [start:demo_explain]
def page_query(sort: SortName, category: str | None) -> Select[Item]:
    keys = SORTS[sort]
    return filtered(category).order_by(*(k.order_by() for k in keys)).limit(20)


async def demo_explain(sessions: Sessions) -> None:
    five = Decimal("5.00")
    queries = {
        "offset 500, price": page_query("price", None).offset(500),
        "keyset, price": page_query("price", None).where(
            seek_after(SORTS["price"], [five, 17])
        ),
        "keyset, price, category=games": page_query("price", "games").where(
            seek_after(SORTS["price"], [five, 17])
        ),
        "keyset, -category,price": page_query("-category,price", None).where(
            seek_after(SORTS["-category,price"], ["games", five, 17])
        ),
    }
    async with sessions() as session:
        plans = {
            label: await explain(session, q) for label, q in queries.items()
        }
    lines = []
    for label, plan in plans.items():
        lines += [f"{label}:", *plan]
    for line in lines:
        print(line)
        #> offset 500, price:
        #> SCAN items USING INDEX ix_items_price
        #> keyset, price:
        #> SEARCH items USING INDEX ix_items_price (price>?)
        #> keyset, price, category=games:
        #> SEARCH items USING INDEX ix_items_category (category=? AND price>?)
        #> keyset, -category,price:
        #> SEARCH items USING INDEX ix_items_category (category<?)


# --8<-- [end:demo_explain]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'pagination.db'}"
        # Demo only: a real app reads its key from settings, so that
        # cursors survive a restart and every worker accepts them.
        app = create_app(url, cursor_key=secrets.token_bytes(32))
        async with lifespan(app):
            async with app.state.sessions.begin() as session:
                session.add_all(sample_items(30))
            await demo_naive_bounds(app)
            await demo_unstable_order(app.state.read_sessions)
            await demo_offset(app)
            await demo_keyset(app)
            await demo_back_and_forth(app)
            await demo_bad_cursors(app)
            await demo_explain(app.state.read_sessions)


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

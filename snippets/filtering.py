"""Filtering: typed optional filters, bound parameters, indexes that serve them.

Run it: python -m snippets.filtering
"""

# --8<-- [start:imports]
import asyncio
import tempfile
import unicodedata
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import httpx
from fastapi import Depends, FastAPI, Query, Request
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Dialect,
    Index,
    MetaData,
    Select,
    String,
    Text,
    TypeDecorator,
    event,
    insert,
    literal,
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
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

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
def fold(text: str) -> str:
    """The search form of a text: Unicode-normalized and case-folded."""
    return unicodedata.normalize("NFKC", text).casefold()


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
    __table_args__ = (
        # equality filters first, then the sort key, then the tiebreaker
        Index(
            "ix_items_listing",
            "status",
            "category",
            "created_at",
            "id",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    name_search: Mapped[str] = mapped_column(Text)  # fold(name), see below
    category: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20))
    price: Mapped[int]  # in cents
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @validates("name")
    def _keep_name_search(self, _: str, name: str) -> str:
        self.name_search = fold(name)
        return name


# --8<-- [end:models]


# --8<-- [start:naive_model]
class NaiveItem(Base):
    """What many tutorials write: an index on status, a plain tz column."""

    __tablename__ = "naive_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), index=True)
    price: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --8<-- [end:naive_model]


# --8<-- [start:naive_filter]
async def filter_items_naive(
    session: AsyncSession,
    category: str | None,
    max_price: int | None,
    q: str | None,
) -> Sequence[Item]:
    query = select(Item)
    if category:  # "" is falsy: the filter silently disappears
        query = query.where(Item.category == category)
    if max_price:  # so is 0
        query = query.where(Item.price <= max_price)
    if q:  # % and _ in q are wildcards
        query = query.where(Item.name.ilike(f"%{q}%"))
    query = query.order_by(Item.created_at.desc(), Item.id.desc())
    return (await session.scalars(query)).all()


# --8<-- [end:naive_filter]


# --8<-- [start:filters]
MAX_PRICE = 1_000_000_000  # cents: a bound keeps huge numbers out of SQL

Status = Literal["draft", "active", "archived"]
T = TypeVar("T")


def no_nul(text: str) -> str:
    if "\x00" in text:  # PostgreSQL refuses NUL in text: reject it here
        raise PydanticCustomError("nul_character", "NUL is not allowed")
    return text


Label = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=50),
    AfterValidator(no_nul),
]
SearchText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(no_nul),
]
Price = Annotated[int, Field(ge=0, le=MAX_PRICE)]
AnyOf = Annotated[list[T], Field(min_length=1, max_length=20)]


class ItemFilter(BaseModel):
    """Every filter is optional; None means "not filtered"."""

    model_config = ConfigDict(extra="forbid")  # ?stauts=x is a 422

    status: AnyOf[Status] | None = None  # ?status=a&status=b: a or b
    category: AnyOf[Label] | None = None
    min_price: Price | None = None  # inclusive
    max_price: Price | None = None  # inclusive
    q: SearchText | None = None  # case-insensitive substring of the name
    created_after: UTCTimestamp | None = None  # inclusive
    created_before: UTCTimestamp | None = None  # exclusive

    @field_validator("max_price")
    @classmethod
    def max_not_below_min(
        cls, value: int | None, info: ValidationInfo
    ) -> int | None:
        low = info.data.get("min_price")
        if value is not None and low is not None and value < low:
            raise PydanticCustomError("range", "must be >= min_price")
        return value

    @field_validator("created_before")
    @classmethod
    def end_after_start(
        cls, value: datetime | None, info: ValidationInfo
    ) -> datetime | None:
        start = info.data.get("created_after")
        if value is not None and start is not None and value <= start:
            raise PydanticCustomError("range", "must be after created_after")
        return value


class ItemQuery(ItemFilter):
    limit: int = Field(default=20, ge=1, le=100)


# --8<-- [end:filters]


# --8<-- [start:search]
def escape_like(text: str, escape: str = "/") -> str:
    """Make %, _ and the escape character match themselves in LIKE."""
    for char in (escape, "%", "_"):
        text = text.replace(char, escape + char)
    return text


def name_contains(q: str) -> ColumnElement[bool]:
    """Case-insensitive for ASCII on SQLite, for all letters on PostgreSQL."""
    return Item.name.ilike(f"%{escape_like(q)}%", escape="/")


def name_search_contains(q: str) -> ColumnElement[bool]:
    """Case-insensitive for every letter, on both databases."""
    return Item.name_search.contains(fold(q), autoescape=True)


# --8<-- [end:search]


# --8<-- [start:conditions]
def item_conditions(f: ItemFilter) -> list[ColumnElement[bool]]:
    """One condition per filter given; `is not None`, never truthiness."""
    conditions: list[ColumnElement[bool]] = []
    if f.status is not None:
        conditions.append(Item.status.in_(f.status))
    if f.category is not None:
        conditions.append(Item.category.in_(f.category))
    if f.min_price is not None:
        conditions.append(Item.price >= f.min_price)
    if f.max_price is not None:
        conditions.append(Item.price <= f.max_price)
    if f.q is not None:
        conditions.append(name_search_contains(f.q))
    if f.created_after is not None:
        conditions.append(Item.created_at >= f.created_after)
    if f.created_before is not None:
        conditions.append(Item.created_at < f.created_before)
    return conditions


def newest_first(query: Select[Item]) -> Select[Item]:
    return query.order_by(Item.created_at.desc(), Item.id.desc())


async def list_items(session: AsyncSession, q: ItemQuery) -> Sequence[Item]:
    query = select(Item).where(*item_conditions(q)).limit(q.limit)
    return (await session.scalars(newest_first(query))).all()


# --8<-- [end:conditions]


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


# --8<-- [start:app]
class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    category: str
    status: str
    price: int
    created_at: UTCTimestamp


def create_app(database_url: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.state.database_url = database_url

    @app.get("/items")
    async def get_items(
        query: Annotated[ItemQuery, Query()], session: ReadSessionDep
    ) -> list[ItemOut]:
        items = await list_items(session, query)
        return [ItemOut.model_validate(item) for item in items]

    @app.get("/naive/items")
    async def get_items_naive(
        session: ReadSessionDep,
        category: str | None = None,
        max_price: int | None = None,
        q: str | None = None,
    ) -> list[ItemOut]:
        items = await filter_items_naive(session, category, max_price, q)
        return [ItemOut.model_validate(item) for item in items]

    return app


# --8<-- [end:app]


# --8<-- [start:seed]
def at(day: int, hour: int) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


SEED = [
    # name, category, status, price (cents), created_at
    ("Free sticker", "stationery", "active", 0, at(1, 8)),
    ("Tea cup", "kitchen", "active", 450, at(1, 9)),
    ("50% off mug", "kitchen", "draft", 800, at(1, 10)),
    ("500 ml bottle", "kitchen", "archived", 1200, at(2, 0)),
    ("snake_case poster", "stationery", "active", 1500, at(2, 12)),
    ("Élan vase", "decor", "active", 2500, at(3, 0)),
]


async def add_seed_items(session: AsyncSession) -> None:
    for name, category, status, price, created_at in SEED:
        item = Item(name=name, category=category, status=status, price=price)
        item.created_at = created_at
        session.add(item)


def client_for(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


def names(reply: httpx.Response) -> list[str]:
    return [item["name"] for item in reply.json()]


def show(reply: httpx.Response) -> object:
    """The names of the items found, or the 422's first error."""
    if reply.status_code != 200:
        error = reply.json()["detail"][0]
        where = ".".join(str(part) for part in error["loc"])
        return f"{reply.status_code} {where}: {error['msg']}"
    return names(reply)


# --8<-- [end:seed]


# --8<-- [start:demo_falsy]
async def demo_falsy(app: FastAPI) -> None:
    async with client_for(app) as c:
        free = {"max_price": 0}
        print(len(names(await c.get("/naive/items", params=free))))
        #> 6
        print(show(await c.get("/items", params=free)))
        #> ['Free sticker']
        empty = {"category": ""}
        print(len(names(await c.get("/naive/items", params=empty))))
        #> 6
        print(show(await c.get("/items", params=empty)))
        #> 422 query.category.0: String should have at least 1 character
        typo = {"categroy": "kitchen"}
        print(show(await c.get("/items", params=typo)))
        #> 422 query.categroy: Extra inputs are not permitted


# --8<-- [end:demo_falsy]


# --8<-- [start:demo_in_and_ranges]
async def demo_in_and_ranges(app: FastAPI) -> None:
    async with client_for(app) as c:
        any_of = {"status": ["draft", "archived"]}  # ?status=draft&status=...
        print(show(await c.get("/items", params=any_of)))
        #> ['500 ml bottle', '50% off mug']
        between = {"min_price": 450, "max_price": 1200}  # both inclusive
        print(show(await c.get("/items", params=between)))
        #> ['500 ml bottle', '50% off mug', 'Tea cup']
        upside_down = {"min_price": 1200, "max_price": 450}
        print(show(await c.get("/items", params=upside_down)))
        #> 422 query.max_price: must be >= min_price
        print(show(await c.get("/items", params={"status": "ACTIVE"})))
        #> 422 query.status.0: Input should be 'draft', 'active' or 'archived'


# --8<-- [end:demo_in_and_ranges]


# --8<-- [start:demo_search]
async def demo_search(app: FastAPI) -> None:
    async with client_for(app) as c:
        for q in ("50%", "_"):
            naive = names(await c.get("/naive/items", params={"q": q}))
            fixed = names(await c.get("/items", params={"q": q}))
            print(f"{q!r}: naive {len(naive)}, fixed {fixed}")
            #> '50%': naive 2, fixed ['50% off mug']
            #> '_': naive 6, fixed ['snake_case poster']
        hostile = {"q": "' OR 1=1 --"}
        print(show(await c.get("/items", params=hostile)))
        #> []


# --8<-- [end:demo_search]


# --8<-- [start:demo_bound]
def demo_bound_parameters() -> None:
    f = ItemFilter(q="' OR 1=1 --", status=["active"], max_price=0)
    query = select(Item.id).where(*item_conditions(f))
    compiled = query.compile(compile_kwargs={"render_postcompile": True})
    where = str(compiled).split("WHERE ")[1]
    for condition in where.split(" AND "):
        print(condition)
        #> items.status IN (:status_1_1)
        #> items.price <= :price_1
        #> (items.name_search LIKE '%' || :name_search_1 || '%' ESCAPE '/')
    print(compiled.params)
    #> {'price_1': 0, 'name_search_1': "' or 1=1 --", 'status_1_1': 'active'}


# --8<-- [end:demo_bound]


# --8<-- [start:demo_timezones]
async def demo_timezones(app: FastAPI) -> None:
    paris = timezone(timedelta(hours=1))
    ten_in_paris = datetime(2026, 3, 1, 10, tzinfo=paris)  # 09:00 UTC
    async with app.state.sessions() as session:
        for model in (NaiveItem, Item):
            session.add(
                model(
                    name="clock",
                    category="decor",
                    status="draft",
                    price=100,
                    created_at=ten_in_paris,
                )
            )
            await session.flush()
            query = select(model.created_at).where(model.name == "clock")
            stored = await session.scalar(query)
            print(f"{model.__name__}:", stored.isoformat())
            #> NaiveItem: 2026-03-01T10:00:00
            #> Item: 2026-03-01T09:00:00+00:00
        await session.rollback()  # keep the demo data as it was
    async with client_for(app) as c:
        window = {
            "created_after": ten_in_paris.isoformat(),  # inclusive
            "created_before": "2026-03-02T00:00:00Z",  # exclusive
        }
        print(show(await c.get("/items", params=window)))
        #> ['50% off mug', 'Tea cup']
        naive_time = {"created_after": "2026-03-01T09:00:00"}
        print(show(await c.get("/items", params=naive_time)))
        #> 422 query.created_after: Input should have timezone info


# --8<-- [end:demo_timezones]


# --8<-- [start:demo_unicode]
async def demo_unicode(app: FastAPI) -> None:
    async with app.state.sessions() as session:
        for left, right in (("E", "e"), ("É", "é")):
            same = await session.scalar(select(literal(left).ilike(right)))
            print(f"{left!r} ILIKE {right!r}:", same)
            #> 'E' ILIKE 'e': True
            #> 'É' ILIKE 'é': False
        for condition in (name_contains("élan"), name_search_contains("ÉLAN")):
            found = await session.scalars(select(Item.name).where(condition))
            print(found.all())
            #> []
            #> ['Élan vase']


# --8<-- [end:demo_unicode]


# --8<-- [start:explain]
class Explain(Executable, ClauseElement):
    """EXPLAIN a query, with its parameters bound like any other query."""

    inherit_cache = False

    def __init__(self, query: Select[Any]) -> None:
        self.query = query


@compiles(Explain, "sqlite")
def _explain_sqlite(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN QUERY PLAN " + compiler.process(element.query, **kw)


@compiles(Explain, "postgresql")
def _explain_pg(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN (COSTS OFF) " + compiler.process(element.query, **kw)


async def bound_plan(session: AsyncSession, query: Select[Any]) -> list[str]:
    """The plan of the query, its parameters bound as the app binds them."""
    conn = await session.connection()
    rows = (await conn.execute(Explain(query))).all()
    return [str(row[-1]) for row in rows]  # the text column of each row


def newest_in(model: type[Item] | type[NaiveItem]) -> Select[Any]:
    """The page most listings ask for: one status, one category, newest."""
    return (
        select(model)
        .where(model.status == "active", model.category == "cat2")
        .order_by(model.created_at.desc(), model.id.desc())
        .limit(20)
    )


# --8<-- [end:explain]


# --8<-- [start:demo_indexes]
def many_rows(count: int) -> list[dict[str, Any]]:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return [
        {
            "name": f"item {n}",
            "category": f"cat{n % 5}",
            "status": ("draft", "active", "archived")[n % 3],
            "price": n % 5000,
            "created_at": start + timedelta(minutes=n),
        }
        for n in range(count)
    ]


async def add_many_rows(session: AsyncSession, count: int) -> None:
    rows = many_rows(count)
    await session.execute(insert(NaiveItem), rows)
    for row in rows:  # a bulk INSERT skips @validates: fill it here
        row["name_search"] = fold(row["name"])
    await session.execute(insert(Item), rows)
    await session.execute(text("ANALYZE"))  # statistics for the planner


async def demo_indexes(app: FastAPI) -> None:
    async with app.state.sessions.begin() as session:
        await add_many_rows(session, 1500)
    async with app.state.sessions() as session:
        naive = await bound_plan(session, newest_in(NaiveItem))
        fixed = await bound_plan(session, newest_in(Item))
    for line in naive:
        print(line)
        #> SEARCH naive_items USING INDEX ix_naive_items_status (status=?)
        #> USE TEMP B-TREE FOR ORDER BY
    for line in fixed:
        print(line)
        #> SEARCH items USING INDEX ix_items_listing (status=? AND category=?)


# --8<-- [end:demo_indexes]


# --8<-- [start:main]
async def tell_story(app: FastAPI) -> None:
    async with app.state.sessions.begin() as session:
        await add_seed_items(session)
    await demo_falsy(app)
    await demo_in_and_ranges(app)
    await demo_search(app)
    demo_bound_parameters()
    await demo_timezones(app)
    await demo_unicode(app)
    await demo_indexes(app)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(f"sqlite+aiosqlite:///{Path(tmp) / 'filtering.db'}")
        async with lifespan(app):
            await tell_story(app)


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

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
from pathlib import Path
from typing import Annotated, Literal

import httpx
from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    ColumnElement,
    Index,
    Select,
    String,
    and_,
    false,
    func,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    InstrumentedAttribute,
    Mapped,
    mapped_column,
)

# --8<-- [end:imports]


# --8<-- [start:models]
class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    category: Mapped[str] = mapped_column(String(50))
    price: Mapped[int | None]  # in cents; None: "price on request"


# --8<-- [end:models]


# --8<-- [start:indexes]
# One index per order the API offers, each ending in the primary key. NULL
# prices come first in both directions (see "NULL-safe keys"). SQLite reads
# one index both ways for that and takes no NULLS FIRST in CREATE INDEX;
# PostgreSQL stores NULLs where the index says, so it gets one per direction.
for index in (
    Index("ix_price", Item.price, Item.id),
    Index("ix_category_price", Item.category.desc(), Item.price, Item.id),
):
    index.ddl_if(dialect="sqlite")
for index in (
    Index("ix_price", Item.price.nulls_first(), Item.id),
    Index(
        "ix_price_desc",
        Item.price.desc().nulls_first(),
        Item.id.desc(),
    ),
    Index(
        "ix_category_price",
        Item.category.desc(),
        Item.price.nulls_first(),
        Item.id,
    ),
):
    index.ddl_if(dialect="postgresql")
# --8<-- [end:indexes]


# --8<-- [start:engine]
@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_async_engine(app.state.database_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    app.state.engine = engine
    app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
    yield
    await engine.dispose()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:  # reads only: nothing to commit
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]
# --8<-- [end:engine]


# --8<-- [start:schemas]
class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    category: str
    price: int | None


class OffsetPage(BaseModel):
    items: list[ItemOut]
    total: int
    limit: int
    offset: int


class KeysetPage(BaseModel):
    items: list[ItemOut]
    next_cursor: str | None


# --8<-- [end:schemas]


# --8<-- [start:naive]
def add_naive_routes(app: FastAPI) -> None:
    @app.get("/naive/items")
    async def list_items_naive(
        session: Session,
        limit: Annotated[int, Query(le=100)] = 20,  # no lower bound
        offset: int = 0,  # no bounds at all
    ) -> list[ItemOut]:
        query = select(Item).offset(offset).limit(limit)  # no ORDER BY
        rows = await session.scalars(query)
        return [ItemOut.model_validate(row) for row in rows]


# --8<-- [end:naive]


# --8<-- [start:sorts]
@dataclass(frozen=True)
class Key:
    column: InstrumentedAttribute[int | str | None]
    descending: bool = False
    nullable: bool = False

    def order_by(self) -> ColumnElement[int | str | None]:
        order = self.column.desc() if self.descending else self.column.asc()
        return order.nulls_first() if self.nullable else order


# The orders the API offers. The primary key always goes last, in the
# direction of the key before it, so that one index serves the whole order.
SortName = Literal["price", "-price", "-category,price"]
SORTS: dict[SortName, tuple[Key, ...]] = {
    "price": (
        Key(Item.price, nullable=True),
        Key(Item.id),
    ),
    "-price": (
        Key(Item.price, descending=True, nullable=True),
        Key(Item.id, descending=True),
    ),
    "-category,price": (
        Key(Item.category, descending=True),
        Key(Item.price, nullable=True),
        Key(Item.id),
    ),
}


def filtered(category: str | None) -> Select[Item]:
    query = select(Item)
    if category is not None:
        query = query.where(Item.category == category)
    return query


# --8<-- [end:sorts]


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
    total = await session.scalar(
        select(func.count()).select_from(query.subquery())
    )
    ordered = query.order_by(*(key.order_by() for key in SORTS[sort]))
    rows = await session.scalars(ordered.limit(limit).offset(offset))
    return rows.all(), total or 0


# --8<-- [end:offset_page]


# --8<-- [start:keyset_predicate]
CursorValue = int | str | None


def after(
    keys: Sequence[Key], values: Sequence[CursorValue]
) -> ColumnElement[bool]:
    """Rows strictly after `values` in the order of `keys`, NULLs first."""
    branches = []
    for i, (key, value) in enumerate(zip(keys, values, strict=True)):
        ties = [equals(k, v) for k, v in zip(keys[:i], values[:i], strict=True)]
        branches.append(and_(*ties, beyond(key, value)))
    condition = or_(*branches)
    first, value = keys[0], values[0]
    if value is not None:  # a range on the first key lets the index seek
        bound = (
            first.column <= value if first.descending else first.column >= value
        )
        condition = and_(bound, condition)
    return condition


def equals(key: Key, value: CursorValue) -> ColumnElement[bool]:
    return key.column.is_(None) if value is None else key.column == value


def beyond(key: Key, value: CursorValue) -> ColumnElement[bool]:
    if value is None:  # NULLs come first: every non-NULL value is beyond
        return key.column.is_not(None) if key.nullable else false()
    return key.column < value if key.descending else key.column > value


# --8<-- [end:keyset_predicate]


# --8<-- [start:cursor]
class BadCursor(ValueError):
    """The cursor was not made by this server for this query."""


MAX_CURSOR_LENGTH = 1_000


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded, altchars=b"-_", validate=True)


def encode_cursor(
    key: bytes, bound_to: dict[str, str | None], values: list[CursorValue]
) -> str:
    payload = json.dumps(
        {"q": bound_to, "v": values}, separators=(",", ":"), sort_keys=True
    ).encode()
    signature = hmac.digest(key, payload, hashlib.sha256)
    return f"{b64(payload)}.{b64(signature)}"


def decode_cursor(
    key: bytes, cursor: str, bound_to: dict[str, str | None], size: int
) -> list[CursorValue]:
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
    values: list[CursorValue] = data["v"]
    if len(values) != size:
        raise BadCursor("cursor does not fit this sort")
    return values


# --8<-- [end:cursor]


# --8<-- [start:keyset_page]
async def keyset_page(
    session: AsyncSession,
    *,
    sort: SortName,
    category: str | None,
    limit: int,
    after_values: Sequence[CursorValue] | None,
) -> tuple[Sequence[Item], list[CursorValue] | None]:
    keys = SORTS[sort]
    query = filtered(category).order_by(*(key.order_by() for key in keys))
    if after_values is not None:
        query = query.where(after(keys, after_values))
    rows = (await session.scalars(query.limit(limit + 1))).all()
    if len(rows) <= limit:  # nothing beyond this page: it is the last
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], [getattr(last, key.column.key) for key in keys]


# --8<-- [end:keyset_page]


# --8<-- [start:app]
Limit = Annotated[int, Query(ge=1, le=100)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
Category = Annotated[str | None, Query(min_length=1, max_length=50)]


def create_app(database_url: str, cursor_key: bytes) -> FastAPI:
    """cursor_key: a secret of 32 random bytes, from your settings."""
    app = FastAPI(lifespan=lifespan)
    app.state.database_url = database_url
    add_naive_routes(app)

    @app.get("/items")
    async def list_items(
        session: Session,
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

    @app.get(
        "/items/keyset",
        responses={status.HTTP_400_BAD_REQUEST: {"description": "Bad cursor"}},
    )
    async def list_items_keyset(
        session: Session,
        limit: Limit = 20,
        sort: SortName = "price",
        category: Category = None,
        cursor: str | None = None,
    ) -> KeysetPage:
        bound_to = {"sort": sort, "category": category}
        size = len(SORTS[sort])
        try:
            values = (
                None
                if cursor is None
                else decode_cursor(cursor_key, cursor, bound_to, size)
            )
        except BadCursor as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
        rows, last = await keyset_page(
            session,
            sort=sort,
            category=category,
            limit=limit,
            after_values=values,
        )
        next_cursor = (
            None if last is None else encode_cursor(cursor_key, bound_to, last)
        )
        items = [ItemOut.model_validate(row) for row in rows]
        return KeysetPage(items=items, next_cursor=next_cursor)

    return app


# --8<-- [end:app]


# --8<-- [start:helpers]
CATEGORIES = ("books", "games", "tools")
PRICES = (None, 500, 500, 1200, 300, 500)  # many equal values, and NULLs


def sample_items(count: int) -> list[Item]:
    return [
        Item(
            name=f"item-{n:02d}",
            category=CATEGORIES[n % len(CATEGORIES)],
            price=PRICES[n % len(PRICES)],
        )
        for n in range(1, count + 1)
    ]


async def explain(session: AsyncSession, query: Select[Item]) -> list[str]:
    """SQLite's plan for a query, one line per step."""
    conn = await session.connection()
    sql = query.compile(conn.engine, compile_kwargs={"literal_binds": True})
    plan = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")
    return [str(step["detail"]) for step in plan.mappings()]


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
async def demo_unstable_order(engine: AsyncEngine) -> None:
    unordered = select(Item).limit(4)
    ordered = unordered.order_by(Item.id)
    async with engine.connect() as conn:
        for query in (unordered, ordered):
            page_1 = [row.id for row in await conn.execute(query.offset(0))]
            # the plan changes between two requests (an index, an upgrade...)
            await conn.exec_driver_sql("PRAGMA reverse_unordered_selects = ON")
            page_2 = [row.id for row in await conn.execute(query.offset(4))]
            await conn.exec_driver_sql("PRAGMA reverse_unordered_selects = OFF")
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
        params: dict[str, str | int] = {"limit": 8, "sort": "-price"}
        while True:
            page = (await client.get("/items/keyset", params=params)).json()
            print(" ".join(f"{i['id']}:{i['price']}" for i in page["items"]))
            #> 30:None 24:None 18:None 12:None 6:None 27:1200 21:1200 15:1200
            #> 9:1200 3:1200 29:500 26:500 25:500 23:500 20:500 19:500
            #> 17:500 14:500 13:500 11:500 8:500 7:500 5:500 2:500
            #> 1:500 28:300 22:300 16:300 10:300 4:300
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]


# --8<-- [end:demo_keyset]


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


async def demo_explain(sessions: async_sessionmaker[AsyncSession]) -> None:
    by_price, mixed = SORTS["-price"], SORTS["-category,price"]
    queries = {
        "offset 500, -price": page_query("-price", None).offset(500),
        "keyset, -price": page_query("-price", None).where(
            after(by_price, [500, 17])
        ),
        "keyset, -price, category=games": page_query("-price", "games").where(
            after(by_price, [500, 17])
        ),
        "keyset, -category,price": page_query("-category,price", None).where(
            after(mixed, ["games", 500, 17])
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
        #> offset 500, -price:
        #> SCAN items USING INDEX ix_price
        #> keyset, -price:
        #> SEARCH items USING INDEX ix_price (price<?)
        #> keyset, -price, category=games:
        #> SEARCH items USING INDEX ix_category_price (category=? AND price<?)
        #> keyset, -category,price:
        #> SEARCH items USING INDEX ix_category_price (category<?)


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
            await demo_unstable_order(app.state.engine)
            await demo_offset(app)
            await demo_keyset(app)
            await demo_bad_cursors(app)
            await demo_explain(app.state.sessions)


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

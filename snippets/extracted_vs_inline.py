"""Extracted CRUD functions vs logic inline in endpoints, for the same resource.

Run it: python -m snippets.extracted_vs_inline
"""

# --8<-- [start:imports]
import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Numeric, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# --8<-- [end:imports]


# --8<-- [start:model]
class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    stock: Mapped[int] = mapped_column(default=0)
    cost: Mapped[Decimal] = mapped_column(Numeric(10, 2), default=0)  # internal


# --8<-- [end:model]


# --8<-- [start:schemas]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Price = Annotated[Decimal, Field(ge=0, max_digits=10, decimal_places=2)]
Stock = Annotated[int, Field(ge=0, le=2**31 - 1)]


class ItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown fields -> 422

    name: Name
    price: Price
    stock: Stock = 0


class ItemUpdate(BaseModel):
    """The writable fields, all optional: a PATCH sends only what changes."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    price: Price | None = None
    stock: Stock | None = None

    @field_validator("name", "price", "stock", mode="before")
    @classmethod
    def reject_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may be omitted, but not null")
        return value


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    price: Decimal
    stock: int


# --8<-- [end:schemas]


# --8<-- [start:errors]
class ItemNotFoundError(Exception):
    def __init__(self, item_id: int) -> None:
        super().__init__(f"item {item_id} not found")


class DuplicateNameError(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"an item named {name!r} already exists")


# --8<-- [end:errors]


# --8<-- [start:crud]
async def create_item(session: AsyncSession, data: ItemCreate) -> Item:
    item = Item(**data.model_dump())
    session.add(item)
    await flush_unique(session, item.name)
    return item


async def get_item(session: AsyncSession, item_id: int) -> Item:
    item = await session.get(Item, item_id)
    if item is None:
        raise ItemNotFoundError(item_id)
    return item


async def update_item(
    session: AsyncSession, item_id: int, changes: ItemUpdate
) -> Item:
    item = await get_item(session, item_id)
    # Only the fields the client sent, and only fields ItemUpdate declares.
    for field, value in changes.model_dump(exclude_unset=True).items():
        setattr(item, field, value)
    await flush_unique(session, item.name)
    return item


async def list_items(session: AsyncSession) -> list[Item]:
    return list(await session.scalars(select(Item).order_by(Item.id)))


async def delete_item(session: AsyncSession, item_id: int) -> None:
    item = await get_item(session, item_id)
    await session.delete(item)
    await session.flush()


async def flush_unique(session: AsyncSession, name: str) -> None:
    # The unique constraint is the truth, also under concurrent requests.
    try:
        await session.flush()
    except IntegrityError as exc:
        raise DuplicateNameError(name) from exc


# --8<-- [end:crud]


# --8<-- [start:sessions]
@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_async_engine(app.state.database_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
    yield
    await engine.dispose()


async def unit_of_work(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions.begin() as session:
        yield session  # commits after the endpoint, before the response


async def plain_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session  # the endpoint commits, or nothing is stored


UnitOfWork = Annotated[AsyncSession, Depends(unit_of_work, scope="function")]
PlainSession = Annotated[AsyncSession, Depends(plain_session)]
# --8<-- [end:sessions]


# --8<-- [start:extracted_endpoints]
extracted = APIRouter(prefix="/items", tags=["extracted"])


@extracted.post("", status_code=status.HTTP_201_CREATED)
async def post_item(data: ItemCreate, session: UnitOfWork) -> ItemOut:
    return ItemOut.model_validate(await create_item(session, data))


@extracted.post("/batch", status_code=status.HTTP_201_CREATED)
async def post_items(
    batch: list[ItemCreate], session: UnitOfWork
) -> list[ItemOut]:
    items = [await create_item(session, data) for data in batch]
    return [ItemOut.model_validate(item) for item in items]


@extracted.get("")
async def read_items(session: UnitOfWork) -> list[ItemOut]:
    return [ItemOut.model_validate(item) for item in await list_items(session)]


@extracted.get("/{item_id}")
async def read_item(item_id: int, session: UnitOfWork) -> ItemOut:
    return ItemOut.model_validate(await get_item(session, item_id))


@extracted.patch("/{item_id}")
async def patch_item(
    item_id: int, changes: ItemUpdate, session: UnitOfWork
) -> ItemOut:
    return ItemOut.model_validate(await update_item(session, item_id, changes))


@extracted.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_item(item_id: int, session: UnitOfWork) -> None:
    await delete_item(session, item_id)


# --8<-- [end:extracted_endpoints]


# --8<-- [start:error_handlers]
async def not_found(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status.HTTP_404_NOT_FOUND)


async def conflict(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status.HTTP_409_CONFLICT)


# --8<-- [end:error_handlers]


# --8<-- [start:inline_endpoints]
inline = APIRouter(prefix="/inline/items", tags=["inline"])


@inline.post("", status_code=status.HTTP_201_CREATED)
async def post_item_inline(data: ItemCreate, session: PlainSession) -> ItemOut:
    taken = select(Item.id).where(Item.name == data.name)
    if await session.scalar(taken) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, "name already exists")
    item = Item(**data.model_dump())
    session.add(item)
    await session.commit()
    return ItemOut.model_validate(item)


@inline.post("/batch", status_code=status.HTTP_201_CREATED)
async def post_items_inline(
    batch: list[ItemCreate], session: PlainSession
) -> list[ItemOut]:
    # Reusing the endpoint means reusing its commit: one per item.
    return [await post_item_inline(data, session) for data in batch]


@inline.get("/{item_id}")
async def read_item_inline(item_id: int, session: PlainSession) -> ItemOut:
    item = await session.get(Item, item_id)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "item not found")
    return ItemOut.model_validate(item)


# --8<-- [end:inline_endpoints]


# --8<-- [start:naive_patch]
@inline.patch("/{item_id}")
async def patch_item_naive(
    item_id: int, changes: dict[str, Any], session: PlainSession
) -> ItemOut:
    item = await session.get(Item, item_id)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "item not found")
    for key, value in changes.items():
        setattr(item, key, value)  # any key: id, cost, typos...
    await session.commit()
    return ItemOut.model_validate(item)


# --8<-- [end:naive_patch]


# --8<-- [start:naive_response]
@inline.get("/{item_id}/raw")
async def read_item_raw(  # type: ignore[no-untyped-def]  # noqa: ANN201
    item_id: int, session: PlainSession
):  # no return type, so no response model
    return await session.get(Item, item_id)


# --8<-- [end:naive_response]


# --8<-- [start:app]
def create_app(database_url: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.state.database_url = database_url
    app.include_router(extracted)
    app.include_router(inline)
    app.add_exception_handler(ItemNotFoundError, not_found)
    app.add_exception_handler(DuplicateNameError, conflict)
    return app


# --8<-- [end:app]


# --8<-- [start:helpers]
@asynccontextmanager
async def client_for(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test"
        ) as client:
            yield client


def show(reply: httpx.Response) -> str:
    shown = f"{reply.request.method} {reply.status_code}"
    if reply.status_code == 422:  # the fields and the kinds of error
        errors = reply.json()["detail"]
        fields = [error["loc"][-1] for error in errors]
        kinds = sorted({error["type"] for error in errors})
        return f"{shown} {fields} {kinds}"
    return f"{shown} {reply.json()}" if reply.content else shown


async def stored_names(client: httpx.AsyncClient) -> list[str]:
    return [item["name"] for item in (await client.get("/items")).json()]


# --8<-- [end:helpers]


# --8<-- [start:demo_status_codes]
async def demo_status_codes(client: httpx.AsyncClient) -> None:
    pen = {"name": "Pen", "price": "1.50", "stock": 10}
    print(show(await client.post("/items", json=pen)))
    #> POST 201 {'id': 1, 'name': 'Pen', 'price': '1.50', 'stock': 10}
    print(show(await client.post("/items", json=pen)))
    #> POST 409 {'detail': "an item named 'Pen' already exists"}
    print(show(await client.post("/items", json={"name": "", "price": "1"})))
    #> POST 422 ['name'] ['string_too_short']
    print(show(await client.get("/items/42")))
    #> GET 404 {'detail': 'item 42 not found'}
    print(show(await client.patch("/items/1", json={"stock": 7})))
    #> PATCH 200 {'id': 1, 'name': 'Pen', 'price': '1.50', 'stock': 7}
    print(show(await client.delete("/items/1")))
    #> DELETE 204
    print(show(await client.delete("/items/1")))
    #> DELETE 404 {'detail': 'item 1 not found'}


# --8<-- [end:demo_status_codes]


# --8<-- [start:demo_composition]
async def demo_composition(client: httpx.AsyncClient) -> None:
    batch = [
        {"name": "Ink", "price": "3.00"},
        {"name": "Ink", "price": "3.00"},  # duplicate: the batch must fail
    ]
    reply = await client.post("/items/batch", json=batch)
    print("extracted:", reply.status_code, await stored_names(client))
    #> extracted: 409 []

    reply = await client.post("/inline/items/batch", json=batch)
    print("inline:", reply.status_code, await stored_names(client))
    #> inline: 409 ['Ink']


# --8<-- [end:demo_composition]


# --8<-- [start:demo_mass_assignment]
async def demo_mass_assignment(client: httpx.AsyncClient) -> None:
    cup = await client.post("/items", json={"name": "Cup", "price": "4"})
    url = f"/items/{cup.json()['id']}"
    hostile = {"id": 99, "cost": "0", "nmae": "Mug"}
    print(show(await client.patch(f"/inline{url}", json=hostile)))
    #> PATCH 200 {'id': 99, 'name': 'Cup', 'price': '4.00', 'stock': 0}
    print(show(await client.get(url)))
    #> GET 404 {'detail': 'item 2 not found'}

    print(show(await client.patch("/items/99", json=hostile)))
    #> PATCH 422 ['id', 'cost', 'nmae'] ['extra_forbidden']
    reply = await client.patch("/items/99", json={"name": None})
    print(reply.status_code, reply.json()["detail"][0]["msg"])
    #> 422 Value error, may be omitted, but not null


# --8<-- [end:demo_mass_assignment]


# --8<-- [start:demo_response_model]
async def demo_response_model(client: httpx.AsyncClient) -> None:
    mug = await client.post("/items", json={"name": "Mug", "price": "4.10"})
    url = f"/items/{mug.json()['id']}"
    raw = (await client.get(f"/inline{url}/raw")).json()
    print(dict(sorted(raw.items())))  # sorted: its key order is not fixed
    #> {'cost': 0.0, 'id': 100, 'name': 'Mug', 'price': 4.1, 'stock': 0}
    print((await client.get(url)).json())
    #> {'id': 100, 'name': 'Mug', 'price': '4.10', 'stock': 0}


# --8<-- [end:demo_response_model]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(f"sqlite+aiosqlite:///{Path(tmp) / 'items.db'}")
        async with client_for(app) as client:
            await demo_status_codes(client)
            await demo_composition(client)
            await demo_mass_assignment(client)
            await demo_response_model(client)


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

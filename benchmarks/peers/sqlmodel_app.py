"""The FastAPI tutorial's SQL pattern (SQLModel), made async.

FastAPI's "SQL (Relational) Databases" tutorial (docs_src/sql_databases/
tutorial002_an_py310.py) is synchronous: a `Session(engine)` per request as
a dependency, `session.get(Hero, hero_id)`, and
`session.exec(select(Hero).offset(offset).limit(limit)).all()` with no
ORDER BY and no total, responses validated into a `HeroPublic` model. Here the
same code with SQLModel's `AsyncSession` and an async engine, each call
awaited, and the reference API's pool size (20 connections).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query
from sqlalchemy import DateTime, Index
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///./sqlmodel.db")


class ItemBase(SQLModel):
    name: str = Field(max_length=200)
    category: str = Field(max_length=50)
    status: str = Field(max_length=10)
    price: Decimal = Field(max_digits=11, decimal_places=2)
    stock: int
    version: int = 1
    created_at: datetime = Field(sa_type=DateTime(timezone=True), index=True)
    updated_at: datetime = Field(sa_type=DateTime(timezone=True))


class Item(ItemBase, table=True):
    __tablename__ = "items"

    id: int | None = Field(default=None, primary_key=True)
    deleted_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class ItemPublic(ItemBase):
    id: int


Index(
    "uq_items_live_name",
    Item.name,
    unique=True,
    sqlite_where=Item.deleted_at.is_(None),  # type: ignore[union-attr]
    postgresql_where=Item.deleted_at.is_(None),  # type: ignore[union-attr]
)
Index("ix_items_category", Item.category, Item.id)

engine = create_async_engine(DATABASE_URL, pool_size=20)


async def create_db_and_tables() -> None:
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)


async def get_session() -> AsyncIterator[AsyncSession]:
    async with AsyncSession(engine) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await create_db_and_tables()
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/items/", response_model=list[ItemPublic])
async def read_items(
    session: SessionDep,
    offset: int = 0,
    limit: Annotated[int, Query(le=100)] = 100,
) -> list[Item]:
    items = await session.exec(select(Item).offset(offset).limit(limit))
    return list(items.all())


@app.get("/items/{item_id}", response_model=ItemPublic)
async def read_item(item_id: int, session: SessionDep) -> Item:
    item = await session.get(Item, item_id)
    if not item:
        raise HTTPException(status_code=404, detail="Item not found")
    return item


metadata = SQLModel.metadata
table = Item.__table__

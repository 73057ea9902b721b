"""FastCRUD's generated router, written as its docs write it.

From FastCRUD's "Automatic Endpoint Creation with crud_router"
(docs/usage/endpoint.md): an engine, a session dependency that yields one
session per request, tables created in the lifespan, and `crud_router` with
the model and its create/update schemas. Two departures, both for fairness:
no `echo=True` (logging every statement would measure the logger), and the
pool the reference API uses (20 connections, not SQLAlchemy's 5).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal

from fastapi import FastAPI
from fastcrud import crud_router
from pydantic import BaseModel
from sqlalchemy import DateTime, Index, Numeric, String
from sqlalchemy.ext.asyncio import (
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///./fastcrud.db")


class Base(DeclarativeBase):
    pass


class Item(Base):
    """The reference API's `items` table: same columns, same indexes."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(10))
    price: Mapped[Decimal] = mapped_column(Numeric(11, 2))
    stock: Mapped[int]
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


Index(
    "uq_items_live_name",
    Item.name,
    unique=True,
    sqlite_where=Item.deleted_at.is_(None),
    postgresql_where=Item.deleted_at.is_(None),
)
Index("ix_items_category", Item.category, Item.id)


class CreateItemSchema(BaseModel):
    name: str
    category: str
    status: str = "draft"
    price: Decimal
    stock: int = 0


class UpdateItemSchema(BaseModel):
    name: str | None = None
    category: str | None = None
    status: str | None = None
    price: Decimal | None = None
    stock: int | None = None


engine = create_async_engine(DATABASE_URL, pool_size=20)
async_session = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def get_session() -> AsyncIterator[AsyncSession]:
    async with async_session() as session:
        yield session


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)
item_router = crud_router(
    session=get_session,
    model=Item,
    create_schema=CreateItemSchema,
    update_schema=UpdateItemSchema,
    path="/items",
    tags=["Items"],
)
app.include_router(item_router)

metadata = Base.metadata
table = Item.__table__

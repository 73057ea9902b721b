"""A large items table, built with the fast bulk path of each backend."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from itertools import islice

from sqlalchemy import DateTime, Numeric, String, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from benchmarks.common import Config

CATEGORIES = [f"category-{i:02d}" for i in range(20)]
STATUSES = ["draft", "active", "archived", "active", "active"]
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    category: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(10))
    price: Mapped[float] = mapped_column(Numeric(10, 2))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def rows(n: int) -> Iterator[tuple[int, str, str, str, float, datetime]]:
    rng = random.Random(42)  # the same table on every run
    for i in range(1, n + 1):
        yield (
            i,
            f"item-{rng.randrange(10**9):09d}",
            rng.choice(CATEGORIES),
            rng.choice(STATUSES),
            round(rng.uniform(1, 1000), 2),
            EPOCH + timedelta(seconds=rng.randrange(10**7)),
        )


def sqlite_pragmas(conn: object, _: object) -> None:
    cursor = conn.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()


@asynccontextmanager
async def items_table(
    config: Config, backend: str, n: int
) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh items table of n rows (no secondary index)."""
    if backend == "sqlite":
        path = config.workdir / "items.db"
        for leftover in config.workdir.glob("items.db*"):
            leftover.unlink()
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    else:
        assert config.postgres_url
        engine = create_async_engine(config.postgres_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        source = rows(n)
        while chunk := list(islice(source, 20_000)):
            if backend == "sqlite":
                await driver.executemany(
                    "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)",
                    [(*r[:5], r[5].isoformat(" ")) for r in chunk],
                )
            else:
                columns = ["id", "name", "category", "status", "price", "created_at"]
                await driver.copy_records_to_table(
                    "items", records=chunk, columns=columns
                )
    await analyze(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


async def analyze(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE"))


async def create_index(engine: AsyncEngine, name: str, columns: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE INDEX {name} ON items ({columns})"))
    await analyze(engine)


async def drop_index(engine: AsyncEngine, name: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP INDEX {name}"))

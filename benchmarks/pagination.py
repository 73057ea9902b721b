"""Pagination: the cost of one page of 50 versus depth, OFFSET versus keyset.

Over a 1M-row table sorted by (price, id) with an index on (price, id). The
keyset page seeks to the last key of the previous page; OFFSET reads and
discards every row before the page.

    python -m benchmarks.pagination [--quick]
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from benchmarks.common import Config, Result, Timer, main, measure
from benchmarks.dataset import Item, create_index, items_table

PAGE = 50
ORDER = (Item.price, Item.id)


def offset_page(depth: int) -> Any:
    return select(Item).order_by(*ORDER).offset(depth).limit(PAGE)


def keyset_page(after: tuple[Any, int] | None) -> Any:
    query = select(Item).order_by(*ORDER).limit(PAGE)
    if after is not None:
        query = query.where(tuple_(*ORDER) > tuple_(*after))
    return query


async def key_before(conn: AsyncConnection, depth: int) -> tuple[Any, int] | None:
    if depth == 0:
        return None
    query = select(*ORDER).order_by(*ORDER).offset(depth - 1).limit(1)
    row = (await conn.execute(query)).one()
    return (row[0], row[1])


async def page_ms(
    conn: AsyncConnection, query: Any, repeats: int
) -> tuple[float, list[float]]:
    async def once() -> float:
        timer = Timer()
        rows = (await conn.execute(query)).all()
        assert len(rows) == PAGE
        return timer.seconds * 1000

    await once()  # warm the cache: every run measures the same steady state
    return await measure(repeats, once)


async def run(config: Config) -> list[Result]:
    n = config.size(1_000_000, 5_000)
    depths = [0, 10_000, 100_000, 500_000] if not config.quick else [0, 1_000, 4_000]
    backends = ["sqlite"] + (["postgresql"] if config.postgres_url else [])
    results: list[Result] = []
    for backend in backends:
        async with items_table(config, backend, n) as engine:
            await create_index(engine, "ix_items_price_id", "price, id")
            async with engine.connect() as conn:
                for kind in ("keyset", "offset"):
                    first = None
                    for depth in depths:
                        if kind == "offset":
                            query = offset_page(depth)
                        else:
                            query = keyset_page(await key_before(conn, depth))
                        value, runs = await page_ms(conn, query, config.repeats)
                        if depth == 0:
                            first = value  # ratios: to the first page
                        assert first is not None
                        results.append(
                            Result(
                                "pagination",
                                backend,
                                f"{kind} depth {depth:,}",
                                "ms",
                                value,
                                runs,
                                {"kind": kind, "depth": depth, "rows": n},
                                ratio=value / first,
                            )
                        )
    return results


if __name__ == "__main__":
    main("pagination", run)

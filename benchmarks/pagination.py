"""Pagination: the cost of one page of 50 versus depth, OFFSET versus keyset.

Over a 1M-row table sorted by (price, id), NULLs first (NULL sorts lowest),
with the index the recipe gives that order. The keyset page is the recipe's
own NULL-safe predicate (`snippets.pagination.seek_after`: the foundation's
`after` plus the range an index can seek) from the last key of the previous
page; OFFSET reads and discards every row before the page.

    python -m benchmarks.pagination [--quick]
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from benchmarks.common import Config, Result, Timer, main, measure, traced_peak
from benchmarks.dataset import Item, create_index, items_table
from snippets.pagination import OrderKey, seek_after

PAGE = 50
KEYS = (  # the recipe's "price"
    OrderKey(Item.price.expression, nullable=True),
    OrderKey(Item.id.expression),
)
ORDER = [key.order_by() for key in KEYS]
INDEX = {"sqlite": "price, id", "postgresql": "price NULLS FIRST, id"}


def offset_page(depth: int) -> Any:
    return select(Item).order_by(*ORDER).offset(depth).limit(PAGE)


def keyset_page(cursor: list[Any] | None) -> Any:
    query = select(Item).order_by(*ORDER).limit(PAGE)
    if cursor is not None:
        query = query.where(seek_after(KEYS, cursor))
    return query


async def key_before(conn: AsyncConnection, depth: int) -> list[Any] | None:
    if depth == 0:
        return None
    columns = [key.column for key in KEYS]
    query = select(*columns).order_by(*ORDER).offset(depth - 1).limit(1)
    return list((await conn.execute(query)).one())


async def page_ms(
    conn: AsyncConnection, query: Any, repeats: int
) -> tuple[float, list[float], float]:
    """Median and runs in ms, and the peak Python memory of one page (MB)."""

    async def once() -> float:
        timer = Timer()
        rows = (await conn.execute(query)).all()
        assert len(rows) == PAGE
        return timer.seconds * 1000

    await once()  # warm the cache: every run measures the same steady state
    median, runs = await measure(repeats, once)
    with traced_peak() as peak:  # after the timed runs: tracing is slow
        await once()
    return median, runs, peak[0]


async def run(config: Config) -> list[Result]:
    n = config.size(1_000_000, 5_000)
    depths = [0, 10_000, 100_000, 500_000] if not config.quick else [0, 1_000, 4_000]
    backends = ["sqlite"] + (["postgresql"] if config.postgres_url else [])
    results: list[Result] = []
    for backend in backends:
        async with items_table(config, backend, n) as engine:
            await create_index(engine, "ix_items_price_id", INDEX[backend])
            async with engine.connect() as conn:
                for kind in ("keyset", "offset"):
                    first = None
                    for depth in depths:
                        if kind == "offset":
                            query = offset_page(depth)
                        else:
                            query = keyset_page(await key_before(conn, depth))
                        value, runs, peak_mb = await page_ms(
                            conn, query, config.repeats
                        )
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
                                peak_mb=peak_mb,
                                ratio=value / first,
                            )
                        )
    return results


if __name__ == "__main__":
    main("pagination", run)

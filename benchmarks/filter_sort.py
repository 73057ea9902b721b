"""Filtering + sorting: one page of a filtered, sorted list, by index.

`WHERE category = ? AND status = ? ORDER BY price, id LIMIT 50` over 1M rows:
no secondary index, an index on the low-cardinality `status` alone, and the
recommended composite index that serves both the filter and the sort.

    python -m benchmarks.filter_sort [--quick]
"""

from __future__ import annotations

from sqlalchemy import select

from benchmarks.common import Config, Result, Timer, main, measure
from benchmarks.dataset import Item, create_index, drop_index, items_table

QUERY = (
    select(Item)
    .where(Item.category == "category-07", Item.status == "active")
    .order_by(Item.price, Item.id)
    .limit(50)
)
INDEXES = [
    ("no index", None, None),
    ("index on status", "ix_items_status", "status"),
    (
        "index on (category, status, price, id)",
        "ix_items_filter_sort",
        "category, status, price, id",
    ),
]


async def run(config: Config) -> list[Result]:
    n = config.size(1_000_000, 5_000)
    backends = ["sqlite"] + (["postgresql"] if config.postgres_url else [])
    results: list[Result] = []
    for backend in backends:
        async with items_table(config, backend, n) as engine:
            baseline = None
            for case, name, columns in INDEXES:
                if name and columns:
                    await create_index(engine, name, columns)
                async with engine.connect() as conn:

                    async def once() -> float:
                        timer = Timer()
                        rows = (await conn.execute(QUERY)).all()
                        assert len(rows) == 50
                        return timer.seconds * 1000

                    await once()
                    value, runs = await measure(config.repeats, once)
                if name:
                    await drop_index(engine, name)
                baseline = baseline or value
                results.append(
                    Result(
                        "filter_sort",
                        backend,
                        case,
                        "ms",
                        value,
                        runs,
                        {"rows": n},
                        ratio=value / baseline,
                    )
                )
    return results


if __name__ == "__main__":
    main("filter_sort", run)

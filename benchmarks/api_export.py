"""API export: peak memory and speed of the reference API's GET /items/export.

The route itself, called in process through ASGI (`snippets.inventory`): the
body's chunks are counted and dropped as they are sent, as a server writing
to a socket would. Peak memory is the Python heap's peak during one export
(tracemalloc, measured after the timed runs): flat if the route streams, and
growing with the rows if it built the file first.

    python -m benchmarks.api_export [--quick]
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from fastapi import FastAPI
from sqlalchemy import insert

from benchmarks.common import Config, Result, Timer, main, measure, traced_peak
from snippets.inventory import create_app
from snippets.inventory.models import Base, Item, utcnow


async def fresh_app(config: Config, backend: str) -> FastAPI:
    if backend == "sqlite":
        path = config.workdir / "api_export.db"
        path.unlink(missing_ok=True)
        url = f"sqlite+aiosqlite:///{path}"
    else:
        assert config.postgres_url is not None
        url = config.postgres_url
    return create_app(url)


async def seed(app: FastAPI, rows: int) -> None:
    sessions = app.state.sessions
    engine = sessions.kw["bind"]
    async with engine.begin() as conn:  # start from empty tables
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    now = utcnow()
    for start in range(0, rows, 10_000):
        async with sessions.begin() as session:
            await session.execute(
                insert(Item),
                [
                    {
                        "name": f"item {n}",
                        "category": f"c{n % 10}",
                        "status": "active",
                        "price": Decimal("12.50"),
                        "stock": n % 100,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for n in range(start, min(start + 10_000, rows))
                ],
            )


async def export(app: FastAPI, fmt: str) -> int:
    """GET /items/export through ASGI; the size of the body, not kept."""
    size = 0
    done = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()  # the client stays until the end
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal size
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message
        if message["type"] == "http.response.body":
            size += len(message.get("body", b""))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items/export",
        "raw_path": b"/items/export",
        "query_string": f"format={fmt}".encode(),
        "root_path": "",
        "headers": [(b"host", b"t")],
        "server": ("t", 80),
        "client": ("c", 1),
        "app": app,
    }
    try:
        await app(scope, receive, send)
    finally:
        done.set()
    return size


async def one_size(config: Config, backend: str, rows: int) -> list[Result]:
    app = await fresh_app(config, backend)
    results = []
    async with app.router.lifespan_context(app):
        await seed(app, rows)
        for fmt in ("csv", "ndjson"):

            async def once(fmt: str = fmt) -> float:
                timer = Timer()
                await export(app, fmt)
                return rows / timer.seconds

            value, runs = await measure(config.repeats, once)
            with traced_peak() as peak:  # after the timed runs: tracing is slow
                size = await export(app, fmt)
            results.append(
                Result(
                    "api_export",
                    backend,
                    f"GET /items/export?format={fmt}, {rows:,} rows",
                    "rows/s",
                    value,
                    runs,
                    {"format": fmt, "rows": rows, "body_mb": size / 2**20},
                    peak_mb=peak[0],
                )
            )
    return results


async def run(config: Config) -> list[Result]:
    sizes = [1_000, 2_000] if config.quick else [10_000, 100_000]
    backends = ["sqlite"] + (["postgresql"] if config.postgres_url else [])
    results: list[Result] = []
    for backend in backends:
        for rows in sizes:
            results += await one_size(config, backend, rows)
    return results


if __name__ == "__main__":
    main("api_export", run)

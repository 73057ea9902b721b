"""The reference API under database faults: never a 500."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from snippets.inventory import create_app
from snippets.inventory.database import (
    create_engine,
    create_read_session_factory,
)


async def terminate_every_backend(url: str) -> int:
    """What a restart does to the app's connections, without the restart."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            killed = await conn.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            return int(killed or 0)
    finally:
        await engine.dispose()


async def test_terminating_every_backend_under_load_never_answers_500(
    postgres_url: str,
):
    """20 clients, mixed load (reads, keyset, PATCH with If-Match, orders);
    every backend terminated twice meanwhile; then the API serves again."""
    app = create_app(postgres_url)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    statuses: Counter[int] = Counter()
    milestones = {100: asyncio.Event(), 200: asyncio.Event()}
    # Each client's requests 7 and 12 wait for a termination to be done, so
    # requests always follow each one, however fast the others ran.
    terminations = {7: asyncio.Event(), 12: asyncio.Event()}
    terminated: list[int] = []
    done = 0
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        ids = []
        for i in range(5):
            reply = await client.post(
                "/items",
                json={
                    "name": f"Item {i}",
                    "category": "kitchen",
                    "price": "12.50",
                    "status": "active",
                    "stock": 100_000,
                },
            )
            assert reply.status_code == 201, reply.text
            ids.append(reply.json()["id"])

        async def one(i: int) -> httpx.Response:
            item_id = ids[i % len(ids)]
            match i % 4:
                case 0:
                    return await client.get(f"/items/{item_id}")
                case 1:
                    return await client.get("/items/keyset", params={"limit": 3})
                case 2:
                    read = await client.get(f"/items/{item_id}")
                    if read.status_code != 200:
                        return read
                    return await client.patch(
                        f"/items/{item_id}",
                        json={"price": "13.00"},
                        headers={"If-Match": read.headers["ETag"]},
                    )
                case _:
                    line = {"item_id": item_id, "quantity": 1}
                    return await client.post(
                        "/orders", json={"customer": "Ada", "lines": [line]}
                    )

        async def run_client(number: int) -> None:
            nonlocal done
            for k in range(15):
                if k in terminations:
                    await terminations[k].wait()
                statuses[(await one(number * 15 + k)).status_code] += 1
                done += 1
                if done in milestones:
                    milestones[done].set()

        async def terminator() -> None:
            for milestone, termination in zip(
                milestones.values(), terminations.values(), strict=True
            ):
                await milestone.wait()
                terminated.append(await terminate_every_backend(postgres_url))
                termination.set()

        await asyncio.gather(terminator(), *(run_client(c) for c in range(20)))
        after = await client.get(f"/items/{ids[0]}")  # recovered by itself
    assert all(terminated), terminated
    assert after.status_code == 200
    assert statuses[500] == 0, statuses
    assert sum(statuses.values()) == 300


async def test_a_refused_connection_answers_503_with_retry_after(database_url: str):
    """The database restarts after start-up: connecting is refused."""
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(database_url)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        down = create_engine(f"postgresql+asyncpg://app@127.0.0.1:{port}/app")
        app.state.read_sessions = create_read_session_factory(down)
        try:
            reply = await client.get("/items")
        finally:
            await down.dispose()
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "1"


async def test_an_exhausted_pool_answers_503_with_retry_after(
    database_url: str, monkeypatch
):
    """Every connection is taken for longer than pool_timeout."""
    app = create_app(database_url)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        one = create_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
        app.state.read_sessions = create_read_session_factory(one)
        try:
            async with one.connect() as held:  # the only connection
                await held.exec_driver_sql("SELECT 1")
                reply = await client.get("/items")
        finally:
            await one.dispose()
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "1"

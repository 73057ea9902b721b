"""The reference API under uvicorn: requests per second against the limit.

The limit is a route with no database, served by the same process in the same
run (`/bench/const/{id}`): what uvicorn + FastAPI cost alone. The load comes
from a small asyncio HTTP/1.1 client in another process, over keep-alive
connections on 127.0.0.1 (httpx itself saturates near 600 req/s here, which
would measure the client, not the server).

    python -m benchmarks.api [--quick]
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import Config, Result, main

ENDPOINTS = [
    ("limit: no-DB route", "/bench/const/7"),
    ("GET /items/{id}", "/items/7"),
    ("GET /items?limit=20", "/items?limit=20"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    database_url: str, port: int, pool_size: int = 20, freeze_gc: bool = True
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "INVENTORY_POOL_SIZE": str(pool_size),
        "BENCH_UNFREEZE_GC": "0" if freeze_gc else "1",
    }
    command = [sys.executable, "-m", "benchmarks.api_server", str(port)]
    server = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the API server did not start")


async def request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
) -> int:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status


async def load(port: int, path: str, connections: int, seconds: float) -> float:
    raw = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    done = 0
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop:
                if await request(reader, writer, raw) == 200:
                    done += 1
                else:
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    if errors:
        raise RuntimeError(f"{errors} requests to {path} failed")
    return done / (time.perf_counter() - started)


def load_in_process(port: int, path: str, connections: int, seconds: float) -> float:
    """Run the client in its own process, so it does not share the server's."""
    code = (
        "import asyncio, sys; from benchmarks.api import load; "
        f"print(asyncio.run(load({port}, {path!r}, {connections}, {seconds})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


def seed(port: int, count: int) -> None:
    import httpx

    items = [
        {"name": f"item {i}", "category": "tools", "price": "9.99", "stock": 10}
        for i in range(count)
    ]
    reply = httpx.post(f"http://127.0.0.1:{port}/items/bulk", json={"items": items})
    reply.raise_for_status()


async def run(config: Config) -> list[Result]:
    backends = ["sqlite"] + (["postgresql"] if config.postgres_url else [])
    results: list[Result] = []
    for backend in backends:
        if backend == "sqlite":
            for leftover in config.workdir.glob("api.db*"):
                leftover.unlink()
            url = f"sqlite+aiosqlite:///{config.workdir / 'api.db'}"
        else:
            assert config.postgres_url
            url = config.postgres_url
            await reset_postgres(url)
        seconds = 0.3 if config.quick else 2.0
        port = free_port()
        servers = [start_server(url, port)]
        try:
            seed(port, 1000)
            cases = [(case, path, port) for case, path in ENDPOINTS]
            for case, options in VARIANTS.items():
                port = free_port()
                servers.append(start_server(url, port, **options))
                cases.append((case, "/items/7", port))
            # Round-robin: each run visits every case in turn, so a machine
            # that slows down for a while slows every case, not one.
            runs: dict[str, list[float]] = {case: [] for case, _, _ in cases}
            for _ in range(config.repeats):
                for case, path, port in cases:
                    rate = load_in_process(port, path, CONNECTIONS, seconds)
                    runs[case].append(rate)
        finally:
            for server in servers:
                stop(server)
        limit = median(runs[ENDPOINTS[0][0]])
        for case, path, _ in cases:
            extra = {"path": path, "connections": CONNECTIONS, "seconds": seconds}
            value = median(runs[case])
            results.append(
                Result(
                    "api",
                    backend,
                    case,
                    "req/s",
                    value,
                    runs[case],
                    extra,
                    ratio=value / limit,
                )
            )
    return results


# The same read on servers started otherwise: with SQLAlchemy's default pool
# (5 connections, and overflow connections closed when returned: an
# undersized pool), then without the lifespan's gc.freeze().
VARIANTS: dict[str, dict[str, Any]] = {
    "GET /items/{id}, pool_size=5": {"pool_size": 5},
    "GET /items/{id}, without gc.freeze()": {"freeze_gc": False},
}


CONNECTIONS = 20


def median(runs: list[float]) -> float:
    return sorted(runs)[len(runs) // 2]


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    server.wait(timeout=10)


async def reset_postgres(url: str) -> None:
    """An empty database: the API's lifespan migrates it from scratch.

    Alembic's own table goes too: left behind (another benchmark drops the
    API's tables with `drop_all`), it would say the schema is at head.
    """
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from snippets.inventory.models import Base

    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await engine.dispose()


if __name__ == "__main__":
    main("api", run)

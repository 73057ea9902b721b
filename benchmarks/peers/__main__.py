"""The reference API beside its peers: requests per second, same reads.

Every app (see `APPS`) gets its own database with the same table shape and
the same rows (1,000 live items and one soft-deleted), and runs in its own
uvicorn process (one worker, asyncio loop). The load comes from another
process: 20 keep-alive connections, as in `benchmarks/api.py`. Round-robin:
each run visits every app in turn (starting from a different one each run),
so a machine that slows down for a while slows every app, not one.

Before the first measurement each app is asked once what it returns: whether
its list carries a total, whether it hides the soft-deleted row, whether its
item has an ETag. These go into the results beside the figures.

    python -m benchmarks.peers [--quick]

On PostgreSQL each app gets a sibling database of COOKBOOK_BENCH_POSTGRES_URL
(`<name>_peer_<module>`), dropped at the end. A peer whose package is missing
(the `bench` extra) is skipped in quick mode and refused otherwise.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from sqlalchemy import Table, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks.api import free_port, load
from benchmarks.common import Config, Result, main
from benchmarks.peers import APPS, DELETED_ID, App

CONNECTIONS = 20
ITEMS = 1000
ROUTES = ["no-DB route", "GET /items/{id}", "list of 20"]


def available(config: Config) -> list[App]:
    apps = []
    for app in APPS:
        module = (app.distribution or "").replace("-", "_")
        if app.distribution is None or find_spec(module) is not None:
            apps.append(app)
        elif config.quick:
            print(f"skipped {app.name}: `{app.distribution}` is not installed")
        else:
            raise SystemExit(
                f"{app.distribution} is missing: install the bench extra "
                "(`make bench` does)"
            )
    return apps


def paths(app: App) -> dict[str, str]:
    return dict(
        zip(ROUTES, ["/bench/const/7", app.item_path, app.list_path], strict=True)
    )


def rows() -> list[dict[str, Any]]:
    """The same rows for every app; the last one soft-deleted."""
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        {
            "name": f"item {i}",
            "category": "tools",
            "status": "active",
            "price": Decimal("9.99"),
            "stock": 10,
            "version": 1,
            "created_at": moment,
            "updated_at": moment,
            "deleted_at": moment if i == ITEMS else None,
        }
        for i in range(ITEMS + 1)
    ]


async def prepare(app: App, backend: str, config: Config) -> str:
    """A fresh database for one app, with its table and the rows; its URL."""
    if backend == "sqlite":
        path = config.workdir / f"peer_{app.module}.db"
        for leftover in config.workdir.glob(f"{path.name}*"):
            leftover.unlink()
        url = f"sqlite+aiosqlite:///{path}"
    else:
        assert config.postgres_url
        url = await recreate_database(config.postgres_url, app.module)
    await seed(app.module, url)
    return url


async def seed(module: str, url: str) -> None:
    # The module's own engine is never used here: only its table, and its
    # own way to create the schema where it has one (the reference API
    # migrates with Alembic).
    peer = importlib.import_module(f"benchmarks.peers.{module}")
    table: Table = peer.table
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        create_schema = getattr(peer, "create_schema", None)
        if create_schema is not None:
            await create_schema(conn)
        else:
            await conn.run_sync(table.metadata.drop_all)
            await conn.run_sync(table.metadata.create_all)
        await conn.execute(insert(table), rows())
    await engine.dispose()


def sibling(url: str, module: str) -> tuple[str, str]:
    parsed = make_url(url)
    name = f"{parsed.database}_peer_{module}"
    return name, parsed.set(database=name).render_as_string(hide_password=False)


async def recreate_database(url: str, module: str) -> str:
    name, target = sibling(url, module)
    await drop_database(url, module)
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()
    return target


async def drop_database(url: str, module: str) -> None:
    name, _ = sibling(url, module)
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


def start(app: App, url: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.peers.server", app.module, str(port)]
    server = subprocess.Popen(command, env={**os.environ, "DATABASE_URL": url})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{app.name} exited with {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server, port
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"{app.name} did not start")


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    server.wait(timeout=30)


def get(port: int, path: str) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), None


def inspect(app: App, port: int) -> dict[str, Any]:
    """What the app's two reads return, checked, and what they guarantee."""
    status, headers, item = get(port, app.item_path)
    assert status == 200, (app.name, status)
    assert item["id"] == 7, (app.name, item)
    assert item["name"] == "item 6", (app.name, item)
    assert Decimal(str(item["price"])) == Decimal("9.99"), (app.name, item)
    status, _, page = get(port, app.list_path)
    assert status == 200, (app.name, status)
    listed = page if isinstance(page, list) else page.get("items", page.get("data"))
    assert len(listed) == 20, (app.name, len(listed))
    total = None
    if isinstance(page, dict):
        total = page.get("total", page.get("total_count"))
    deleted, _, _ = get(port, f"/items/{DELETED_ID}")
    return {
        "total": total,  # None: the list has no total
        "ordered_by_id": [i["id"] for i in listed] == list(range(1, 21)),
        "hides_deleted": deleted == 404,
        "etag": "etag" in {key.lower() for key in headers},
        "transaction": app.transaction,
        "version": metadata.version(app.distribution) if app.distribution else None,
    }


def cpu_seconds(pid: int) -> float | None:
    """CPU time a process has used so far (all its threads), where /proc has it.

    Requests per second on a shared machine move with everything else that
    runs; the server's own CPU time per request moves much less.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load_each(
    port: int, pid: int, paths: list[str], seconds: float, warm_up: float
) -> list[tuple[float, float | None]]:
    """Per path: requests/s and the server's CPU µs per request."""
    for path in paths:
        await load(port, path, CONNECTIONS, warm_up)
    figures = []
    for path in paths:
        before = cpu_seconds(pid)
        started = time.perf_counter()
        rate = await load(port, path, CONNECTIONS, seconds)
        after = cpu_seconds(pid)
        served = rate * (time.perf_counter() - started)
        cpu = None
        if before is not None and after is not None:
            cpu = (after - before) / served * 1e6
        figures.append((rate, cpu))
    return figures


def load_in_client(
    port: int, pid: int, paths: list[str], seconds: float, warm_up: float
) -> list[tuple[float, float | None]]:
    """One client process for every path: it never shares the server's."""
    code = (
        "import asyncio, json; from benchmarks.peers.__main__ import load_each; "
        f"print(json.dumps(asyncio.run(load_each({port}, {pid}, {paths!r}, "
        f"{seconds}, {warm_up}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return [(rate, cpu) for rate, cpu in json.loads(out.stdout)]


async def run(config: Config) -> list[Result]:
    apps = available(config)
    backends = ["sqlite"] + (["postgresql"] if config.postgres_url else [])
    seconds = 0.2 if config.quick else 2.0
    warm_up = 0.05 if config.quick else 0.5
    results: list[Result] = []
    for backend in backends:
        urls = {app.name: await prepare(app, backend, config) for app in apps}
        facts: dict[str, dict[str, Any]] = {}
        runs: dict[tuple[str, str], list[float]] = {}
        cpus: dict[tuple[str, str], list[float | None]] = {}
        try:
            for turn in range(config.repeats):
                for app in apps[turn % len(apps) :] + apps[: turn % len(apps)]:
                    server, port = start(app, urls[app.name])
                    try:
                        if app.name not in facts:
                            facts[app.name] = inspect(app, port)
                        figures = load_in_client(
                            port,
                            server.pid,
                            list(paths(app).values()),
                            seconds,
                            warm_up,
                        )
                        for route, (rate, cpu) in zip(ROUTES, figures, strict=True):
                            runs.setdefault((app.name, route), []).append(rate)
                            cpus.setdefault((app.name, route), []).append(cpu)
                    finally:
                        stop(server)
        finally:
            if backend == "postgresql":
                assert config.postgres_url
                for app in apps:
                    await drop_database(config.postgres_url, app.module)
        for app in apps:
            limit = sorted(runs[app.name, ROUTES[0]])[config.repeats // 2]
            for route, path in paths(app).items():
                measured = runs[app.name, route]
                value = sorted(measured)[len(measured) // 2]
                params = {
                    "app": app.name,
                    "route": route,
                    "path": path,
                    "connections": CONNECTIONS,
                    "seconds": seconds,
                    # The server's CPU time per request, each run: steadier
                    # than req/s when other work shares the machine.
                    "cpu_us": cpus[app.name, route],
                    "cpu_us_median": median_or_none(cpus[app.name, route]),
                    **facts[app.name],
                }
                results.append(
                    Result(
                        "peers",
                        backend,
                        f"{app.name}: {route}",
                        "req/s",
                        value,
                        measured,
                        params,
                        ratio=value / limit,
                    )
                )
    return results


def median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if len(known) == len(values) else None


PACKAGES = ["pydantic", *(a.distribution for a in APPS if a.distribution)]

if __name__ == "__main__":
    main("peers", run, repeats=3, packages=PACKAGES)

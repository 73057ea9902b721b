"""Outside the request: background tasks, workers, a session per task and a
streamed export, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, insert, select
from sqlalchemy.exc import IllegalStateChangeError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool

from snippets import background
from snippets.background import (
    Download,
    Item,
    category_total,
    count_items,
    create_app,
    create_engine,
    create_session_factory,
    export_csv_naive,
    export_lines,
    lifespan,
    record_download,
    run_jobs,
    seed_items,
    totals,
    totals_naive,
)
from tests.conftest import ROOT

Sessions = async_sessionmaker[AsyncSession]
SMALL = 30
ROWS = 2_500  # for the export: more than two yield_per batches of 1,000


@pytest.fixture(params=[SMALL])
async def app(
    database_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[FastAPI]:
    app = create_app(database_url)
    async with lifespan(app):
        await seed_items(app.state.sessions, request.param)
        yield app


big = pytest.mark.parametrize("app", [ROWS], indirect=True, ids=["2500 rows"])


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


def engine_of(sessions: Sessions) -> AsyncEngine:
    engine: AsyncEngine = sessions.kw["bind"]
    return engine


async def downloads(sessions: Sessions) -> int:
    async with sessions() as session:
        return await session.scalar(select(func.count(Download.id))) or 0


# Work after the response


async def test_naive_task_on_the_request_session_loses_its_write(
    app: FastAPI, client: httpx.AsyncClient
):
    reply = await client.post("/naive/items/1/download")
    assert reply.status_code == 200
    assert await downloads(app.state.sessions) == 0
    assert engine_of(app.state.sessions).pool.checkedout() == 0


async def test_task_with_its_own_session_stores_its_write(
    app: FastAPI, client: httpx.AsyncClient
):
    for _ in range(3):
        assert (await client.post("/items/2/download")).status_code == 200
    assert await downloads(app.state.sessions) == 3


async def test_a_task_that_fails_leaves_the_reply_and_other_writes_alone(
    app: FastAPI, client: httpx.AsyncClient
):
    """An unknown item: the task's INSERT breaks the foreign key, nothing is
    stored, and the client already had its reply."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        reply = await c.post("/items/999999/download")
    assert reply.status_code == 200
    assert await downloads(app.state.sessions) == 0
    await record_download(app.state.sessions, 1)
    assert await downloads(app.state.sessions) == 1


async def test_a_detached_object_changed_in_a_task_is_saved_nowhere(app: FastAPI):
    sessions: Sessions = app.state.sessions
    async with sessions.begin() as session:
        item = await session.get_one(Item, 1)
    item.name = "Renamed in a task"  # the session is closed: detached
    async with sessions() as session:
        assert (await session.get_one(Item, 1)).name == "Item 1"


# A worker outside FastAPI


def run_python(code: str, url: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter, as a job runner starts one."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


GLOBAL_ENGINE_TWICE = """
    import asyncio, sys
    from snippets.background import count_items_naive
    url = sys.argv[1]
    print(asyncio.run(count_items_naive(url)))
    try:
        print(asyncio.run(count_items_naive(url)))
    except RuntimeError as exc:
        print("RuntimeError:", exc)
"""


async def test_naive_global_engine_fails_on_the_second_loop(postgres_url):
    """PostgreSQL only: asyncpg's pooled connection belongs to the first loop
    (the SQLite half of this claim is the next test)."""
    app = create_app(postgres_url)
    async with lifespan(app):
        await seed_items(app.state.sessions, 3)
    result = await asyncio.to_thread(run_python, GLOBAL_ENGINE_TWICE, postgres_url)
    first, second = result.stdout.splitlines()[:2]
    assert first == "3"
    assert second.startswith("RuntimeError:")
    assert "attached to a different loop" in second


async def test_naive_global_engine_happens_to_work_on_sqlite(sqlite_url):
    """SQLite only: the page says the naive job happens to work there."""
    app = create_app(sqlite_url)
    async with lifespan(app):
        await seed_items(app.state.sessions, 3)
    result = await asyncio.to_thread(run_python, GLOBAL_ENGINE_TWICE, sqlite_url)
    assert result.stdout.splitlines()[:2] == ["3", "3"]


async def test_an_engine_per_run_works_on_every_loop(app: FastAPI, database_url):
    assert await asyncio.to_thread(run_jobs, database_url, 3) == [SMALL] * 3
    assert await count_items(database_url) == SMALL


async def test_a_null_pool_engine_works_across_loops(app: FastAPI, database_url):
    engine = create_engine(database_url, poolclass=NullPool)

    async def job() -> int:
        async with create_session_factory(engine)() as session:
            return await session.scalar(select(func.count(Item.id))) or 0

    def twice() -> list[int]:
        return [asyncio.run(job()) for _ in range(2)]

    assert await asyncio.to_thread(twice) == [SMALL, SMALL]


# A session per task


async def test_one_session_shared_by_tasks_is_refused_on_sqlite(sqlite_url):
    """SQLite: the tasks meet while the session begins its transaction."""
    app = create_app(sqlite_url)
    async with lifespan(app):
        await seed_items(app.state.sessions, 30)
        async with app.state.sessions() as session:
            with pytest.raises(ExceptionGroup) as raised:
                await totals_naive(session, ["desk", "lamp", "mug"])
    refused = (InvalidRequestError, IllegalStateChangeError)
    assert all(isinstance(e, refused) for e in raised.value.exceptions)


async def test_one_session_shared_by_tasks_runs_nothing_in_parallel(
    postgres_url,
):
    """PostgreSQL: with a pooled connection the tasks may not collide, but
    their queries queue on the one connection: one backend serves them all."""
    app = create_app(postgres_url)
    async with lifespan(app):
        async with app.state.sessions() as session:
            await session.execute(select(1))  # the connection is in place
            async with asyncio.TaskGroup() as group:
                pids = [
                    group.create_task(session.scalar(select(func.pg_backend_pid())))
                    for _ in range(3)
                ]
        assert len({task.result() for task in pids}) == 1


async def test_a_session_per_task_gives_every_total(app: FastAPI):
    sessions: Sessions = app.state.sessions
    expected = []
    async with sessions() as session:
        for category in ("desk", "lamp", "mug"):
            query = select(Item.price).where(Item.category == category)
            expected.append(sum((await session.scalars(query)).all(), Decimal(0)))
    assert await totals(sessions, ["desk", "lamp", "mug"]) == expected


async def test_tasks_never_hold_more_connections_than_allowed(
    database_url: str, monkeypatch: pytest.MonkeyPatch
):
    app = create_app(database_url)
    async with lifespan(app):
        await seed_items(app.state.sessions, 30)
        engine = engine_of(app.state.sessions)
        held, most = 0, 0
        two_held = asyncio.Event()

        def checkout(*_: Any) -> None:
            nonlocal held, most
            held += 1
            most = max(most, held)
            if held == 2:
                two_held.set()

        def checkin(*_: Any) -> None:
            nonlocal held
            held -= 1

        # Each task keeps its connection until a second task holds one too,
        # so the overlap does not depend on how fast the server answers.
        async def total_then_wait(session: AsyncSession, category: str) -> Decimal:
            total = await category_total(session, category)
            await asyncio.wait_for(two_held.wait(), timeout=10)
            return total

        monkeypatch.setattr(background, "category_total", total_then_wait)
        event.listen(engine.sync_engine, "checkout", checkout)
        event.listen(engine.sync_engine, "checkin", checkin)
        categories = ["desk", "lamp", "mug"] * 4
        results = await totals(app.state.sessions, categories, at_once=2)
        assert len(results) == 12
        assert most == 2


# Streaming a large result

FEW, MANY = 2_000, 6_000  # two batches of yield_per=1000, then six


async def peak_bytes(export: Callable[[], Awaitable[int]]) -> int:
    """The Python heap's peak during one export (as `make bench` measures)."""
    tracemalloc.start()
    try:
        await export()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def peaks_at_few_and_many(
    database_url: str, export: Callable[[Sessions], Awaitable[int]]
) -> tuple[int, int]:
    app = create_app(database_url)
    async with lifespan(app):
        sessions: Sessions = app.state.read_sessions
        await seed_items(app.state.sessions, FEW)
        await export(sessions)  # untraced: compiled and cached once
        few = await peak_bytes(lambda: export(sessions))
        await seed_items(app.state.sessions, MANY - FEW)
        many = await peak_bytes(lambda: export(sessions))
    return few, many


async def whole_file(sessions: Sessions) -> int:
    async with sessions() as session:
        return len(await export_csv_naive(session))


async def streamed(sessions: Sessions) -> int:
    size = 0
    async for line in export_lines(sessions, "csv", None):
        size += len(line)  # sent on, not kept
    return size


async def test_naive_whole_file_export_peak_memory_grows_with_the_rows(
    database_url: str,
):
    few, many = await peaks_at_few_and_many(database_url, whole_file)
    assert many > 2 * few  # three times the rows: more than twice the memory


async def test_streamed_export_peak_memory_stays_flat_as_rows_grow(
    database_url: str,
):
    few, many = await peaks_at_few_and_many(database_url, streamed)
    assert many < 1.3 * few  # three times the rows: about the same memory


@big
async def test_csv_export_has_every_row_once_in_id_order(client: httpx.AsyncClient):
    reply = await client.get("/items/export", params={"format": "csv"})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(reply.text)))
    assert rows[0] == ["id", "name", "category", "price", "created_at"]
    assert [int(row[0]) for row in rows[1:]] == list(range(1, ROWS + 1))
    assert rows[1][4].endswith("+00:00")


@big
async def test_ndjson_export_has_one_object_per_line(client: httpx.AsyncClient):
    reply = await client.get("/items/export", params={"format": "ndjson"})
    assert reply.headers["content-type"] == "application/x-ndjson"
    lines = reply.text.splitlines()
    assert len(lines) == ROWS
    first = json.loads(lines[0])
    assert first == {
        "id": 1,
        "name": "Item 1",
        "category": "lamp",
        "price": "1.99",
        "created_at": "2026-01-01T00:01:00+00:00",
    }


async def test_export_quotes_what_csv_must_quote(
    app: FastAPI, client: httpx.AsyncClient
):
    tricky = 'Desk, "oak"\nwith a drawer'
    async with app.state.sessions.begin() as session:
        await session.execute(
            insert(Item).values(name=tricky, category="odd", price=Decimal(1))
        )
    reply = await client.get("/items/export", params={"category": "odd"})
    rows = list(csv.reader(io.StringIO(reply.text)))
    assert [row[1] for row in rows[1:]] == [tricky]
    as_json = await client.get(
        "/items/export", params={"category": "odd", "format": "ndjson"}
    )
    assert json.loads(as_json.text)["name"] == tricky


@pytest.mark.parametrize(
    "params",
    [{"format": "xml"}, {"format": ""}, {"category": ""}, {"category": "x" * 51}],
)
async def test_bad_export_parameters_are_422(client: httpx.AsyncClient, params):
    assert (await client.get("/items/export", params=params)).status_code == 422


@big
async def test_a_client_that_leaves_mid_stream_returns_the_connection(
    app: FastAPI,
):
    engine = engine_of(app.state.read_sessions)
    first_chunk_sent = asyncio.Event()
    chunks: list[bytes] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await first_chunk_sent.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            chunks.append(message["body"])
            first_chunk_sent.set()
            await asyncio.sleep(0)  # let the disconnect be noticed

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items/export",
        "raw_path": b"/items/export",
        "query_string": b"format=csv",
        "root_path": "",
        "headers": [(b"host", b"t")],
        "server": ("t", 80),
        "client": ("c", 1),
        "app": app,
    }
    await app(scope, receive, send)
    assert 0 < len(chunks) < ROWS  # it stopped early ...
    assert engine.pool.checkedout() == 0  # ... and gave its connection back


async def test_the_export_is_documented(client: httpx.AsyncClient):
    schema = (await client.get("/openapi.json")).json()
    get = schema["paths"]["/items/export"]["get"]
    names = {p["name"] for p in get["parameters"]}
    assert names == {"format", "category"}

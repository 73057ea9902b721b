"""Connections: pool exhaustion, held connections, dead connections, refused
connections, timeouts, PgBouncer, several workers."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from snippets.connections import (
    ONE_CONNECTION,
    Item,
    Shipment,
    client_for,
    closed_port,
    connections_needed,
    create_app,
    create_engine,
    create_production_app,
    create_read_session_factory,
    create_session_factory,
    database_error,
    demo_pool,
    demo_refused,
    limit_transaction,
    max_connections,
    ping_when_idle,
    pooled_lifespan,
    seed,
    ship_and_read,
    terminate_backends,
    through_pgbouncer,
    timeouts,
)
from snippets.inventory import create_app as create_inventory_app

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with pooled_lifespan(app), client_for(app) as http:
        yield http


async def terminate_all(url: str) -> int:
    """Terminate every other connection to the test database."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with create_session_factory(engine)() as session:
            return await terminate_backends(session)
    finally:
        await engine.dispose()


async def shipments_and_stock(app: Any) -> tuple[int, int]:
    async with app.state.sessions() as session:
        shipped = len((await session.scalars(select(Shipment))).all())
        item = await session.get(Item, 1)
        return shipped, item.stock


# --- pool sizing -------------------------------------------------------------


def test_pool_math_counts_every_pool_full_in_every_worker():
    assert connections_needed(1, 5, 10) == 15
    assert connections_needed(4, 5, 10) == 60
    assert connections_needed(8, 20, 0) == 160


async def test_postgres_says_how_many_connections_it_allows(postgres_url: str):
    engine = create_engine(postgres_url)
    try:
        allowed = await max_connections(engine)
    finally:
        await engine.dispose()
    async_engine_default = connections_needed(1, 5, 10)
    assert allowed >= async_engine_default  # one default worker fits...
    workers = allowed // async_engine_default + 1
    assert connections_needed(workers, 5, 10) > allowed  # ... not this many


# --- an exhausted pool, a connection held across an await --------------------


async def test_naive_exhausted_pool_answers_500(database_url: str):
    app = create_app(database_url, handlers=False, **ONE_CONNECTION)
    async with pooled_lifespan(app):
        await seed(app)
        read, shipped = await ship_and_read(app, "/naive/items/1/ship")
    assert (read, shipped) == (500, 201)


async def test_exhausted_pool_answers_503_with_retry_after(database_url: str):
    app = create_app(database_url, **ONE_CONNECTION)
    seen: list[httpx.Response] = []
    async with running(app) as http:
        await seed(app)
        holding, release = asyncio.Event(), asyncio.Event()

        async def carrier(item_id: int) -> str:
            holding.set()
            await release.wait()
            return "T"

        app.state.carrier = carrier
        shipping = asyncio.create_task(http.post("/naive/items/1/ship"))
        await holding.wait()
        seen.append(await http.get("/items/1"))  # waits pool_timeout, no more
        release.set()
        assert (await shipping).status_code == 201
        seen.append(await http.get("/items/1"))  # the pool is free again
    assert seen[0].status_code == 503
    assert seen[0].headers["Retry-After"] == "1"
    assert seen[0].json() == {"detail": "database busy: retry shortly"}
    assert seen[1].status_code == 200


async def test_naive_holding_a_connection_across_a_call_starves_reads(
    database_url: str,
):
    app = create_app(database_url, **ONE_CONNECTION)
    async with pooled_lifespan(app):
        await seed(app)
        assert await ship_and_read(app, "/naive/items/1/ship") == (503, 201)
        assert await shipments_and_stock(app) == (1, 9)


async def test_ending_the_transaction_before_the_call_serves_reads(
    database_url: str,
):
    app = create_app(database_url, **ONE_CONNECTION)
    async with pooled_lifespan(app):
        await seed(app)
        assert await ship_and_read(app, "/items/1/ship") == (200, 201)
        assert await shipments_and_stock(app) == (1, 9)


async def test_the_production_app_serves_reads_while_a_call_is_in_flight(
    database_url: str,
):
    app = create_production_app(database_url)
    async with pooled_lifespan(app):
        await seed(app)
        assert await ship_and_read(app, "/items/1/ship") == (200, 201)


async def test_a_failed_call_gives_the_reservation_back(database_url: str):
    app = create_app(database_url, **ONE_CONNECTION)

    async def broken_carrier(item_id: int) -> str:
        raise RuntimeError("carrier down")

    async with running(app) as http:
        await seed(app)
        app.state.carrier = broken_carrier
        reply = await http.post("/items/1/ship")
        assert reply.status_code == 500  # not a database fault: the app's
        assert await shipments_and_stock(app) == (0, 10)


async def test_demo_pool_prints_naive_then_fixed(sqlite_url: str, capsys):
    await demo_pool(sqlite_url)
    assert capsys.readouterr().out.split("\n")[:3] == [
        "naive: read 500 while shipping; ship 201",
        "handled: read 503 while shipping; ship 201",
        "recipe: read 200 while shipping; ship 201",
    ]


# --- refused connections -----------------------------------------------------


async def read_while_down(app: Any) -> httpx.Response:
    down = f"postgresql+asyncpg://app@127.0.0.1:{closed_port()}/app"
    async with running(app) as http:
        await seed(app)
        engine = create_engine(down)
        app.state.read_sessions = create_read_session_factory(engine)
        try:
            return await http.get("/items/1")
        finally:
            await engine.dispose()


async def test_naive_refused_connection_answers_500(database_url: str):
    reply = await read_while_down(create_app(database_url, handlers=False))
    assert reply.status_code == 500


async def test_refused_connection_answers_503_with_retry_after(database_url: str):
    reply = await read_while_down(create_app(database_url))
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "1"


async def test_demo_refused_prints_500_then_503(sqlite_url: str, capsys):
    await demo_refused(sqlite_url)
    assert capsys.readouterr().out == "500 None\n503 1\n"


# --- dead connections (PostgreSQL: a server to lose) --------------------------


@pytest.mark.parametrize(
    ("handlers", "expected"), [(False, 500), (True, 503)], ids=["bare", "handled"]
)
async def test_naive_without_pre_ping_the_next_request_fails(
    postgres_url: str, handlers: bool, expected: int
):
    app = create_app(postgres_url, handlers=handlers, pool_size=2)
    async with running(app) as http:
        await seed(app)
        assert (await http.get("/items/1")).status_code == 200
        assert await terminate_all(postgres_url) >= 1
        assert (await http.post("/items/1/ship")).status_code == expected
        # the pool threw the dead connections away: the next one works
        assert (await http.get("/items/1")).status_code == 200


async def test_pre_ping_survives_terminated_connections(postgres_url: str):
    app = create_app(postgres_url, pool_size=2, pool_pre_ping=True)
    async with running(app) as http:
        await seed(app)
        assert (await http.get("/items/1")).status_code == 200
        assert await terminate_all(postgres_url) >= 1
        assert (await http.post("/items/1/ship")).status_code == 201


IDLE = 0.2  # seconds: ping_when_idle's window in these tests


def count_pings(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> list[None]:
    dialect = engine.sync_engine.dialect
    pings: list[None] = []
    ping = dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(None)
        return ping(dbapi_connection)

    monkeypatch.setattr(dialect, "do_ping", counted)
    return pings


async def test_ping_when_idle_pings_only_connections_left_idle(
    database_url: str, monkeypatch: pytest.MonkeyPatch
):
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    ping_when_idle(engine, idle=IDLE)
    pings = count_pings(engine, monkeypatch)
    try:
        for _ in range(5):  # back to back, as under load: no ping
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        assert len(pings) == 0
        await asyncio.sleep(IDLE * 1.5)
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        assert len(pings) == 1
    finally:
        await engine.dispose()


async def test_ping_when_idle_replaces_connections_a_restart_killed(
    postgres_url: str,
):
    app = create_app(postgres_url, pool_size=2)
    async with running(app) as http:
        ping_when_idle(app.state.sessions.kw["bind"], idle=IDLE)
        await seed(app)
        assert (await http.get("/items/1")).status_code == 200
        assert await terminate_all(postgres_url) >= 1
        await asyncio.sleep(IDLE * 1.5)  # a restart takes longer than this
        assert (await http.post("/items/1/ship")).status_code == 201


async def test_ping_when_idle_trusts_a_connection_used_within_the_window(
    postgres_url: str,
):
    """The price of skipping the ping: a connection that died less than
    `idle` seconds after its last use fails one request, then the pool
    replaces every connection older than that failure."""
    app = create_app(postgres_url, pool_size=2)
    async with running(app) as http:
        ping_when_idle(app.state.sessions.kw["bind"], idle=60)
        await seed(app)
        assert (await http.get("/items/1")).status_code == 200
        assert await terminate_all(postgres_url) >= 1
        assert (await http.post("/items/1/ship")).status_code == 503
        assert (await http.post("/items/1/ship")).status_code == 201


async def test_the_production_app_survives_terminated_connections(
    postgres_url: str,
):
    app = create_production_app(postgres_url)
    async with running(app) as http:
        await seed(app)
        assert (await http.get("/items/1")).status_code == 200
        assert await terminate_all(postgres_url) >= 1
        assert (await http.post("/items/1/ship")).status_code == 201


async def test_a_read_retried_once_survives_terminated_connections(
    postgres_url: str,
):
    app = create_app(postgres_url, pool_size=2)
    async with running(app) as http:
        await seed(app)
        assert (await http.get("/items/1")).status_code == 200
        assert await terminate_all(postgres_url) >= 1
        reply = await http.get("/retried/items/1")
        assert reply.status_code == 200
        assert reply.json()["stock"] == 10


async def load_with_terminations(app: Any, url: str) -> Counter[int]:
    """120 mixed requests at once; every backend terminated twice meanwhile.

    The terminations come after 40 and 80 answers, while requests are in
    flight; requests 60-79 and 100-119 start only once the termination before
    them is done, so requests always meet the dead pooled connections, however
    fast the others ran (else the check after the load could be the first).
    """
    statuses: Counter[int] = Counter()
    done = 0
    milestones = {40: asyncio.Event(), 80: asyncio.Event()}
    terminations = [asyncio.Event(), asyncio.Event()]
    terminated: list[int] = []

    async with running(app) as http:
        async with app.state.sessions.begin() as session:
            session.add(Item(id=1, name="Lamp", stock=10_000))

        async def request(i: int) -> None:
            nonlocal done
            if 60 <= i < 80 or i >= 100:
                await terminations[i >= 100].wait()
            paths = ("/items/1", "/retried/items/1")
            if i % 4 == 3:
                reply = await http.post("/items/1/ship")
            else:
                reply = await http.get(paths[i % 2])
            statuses[reply.status_code] += 1
            done += 1
            if done in milestones:
                milestones[done].set()

        async def terminator() -> None:
            for milestone, termination in zip(
                milestones.values(), terminations, strict=True
            ):
                await milestone.wait()
                terminated.append(await terminate_all(url))
                termination.set()

        await asyncio.gather(terminator(), *(request(i) for i in range(120)))
        assert all(terminated), terminated  # each time, connections were lost
        after = await http.get("/items/1")  # no restart, no intervention
        assert after.status_code == 200
    return statuses


async def test_naive_terminated_backends_under_load_answer_500(postgres_url: str):
    app = create_app(postgres_url, handlers=False, pool_size=5)
    statuses = await load_with_terminations(app, postgres_url)
    assert statuses[500] >= 1
    assert sum(statuses.values()) == 120


async def test_terminated_backends_under_load_never_answer_500(
    postgres_url: str,
):
    app = create_app(postgres_url, pool_size=5)
    statuses = await load_with_terminations(app, postgres_url)
    assert set(statuses) <= {200, 201, 503}, statuses
    assert sum(statuses.values()) == 120


# --- timeouts (PostgreSQL) ----------------------------------------------------


@asynccontextmanager
async def row_locked(url: str) -> AsyncIterator[None]:
    """Another transaction holds item 1's row lock meanwhile."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with create_session_factory(engine).begin() as session:
            await session.execute(select(Item).where(Item.id == 1).with_for_update())
            yield
    finally:
        await engine.dispose()


async def ship_while_locked(app: Any, url: str) -> httpx.Response:
    async with running(app) as http:
        await seed(app)
        async with row_locked(url):
            return await http.post("/items/1/ship")


# --8<-- [start:naive_statement_timeout]
async def test_naive_statement_timeout_answers_500_with_the_foundation_handler(
    postgres_url: str,
):
    app = create_app(postgres_url, handlers=False, **timeouts(200, 0))
    app.add_exception_handler(DBAPIError, database_error)  # 57014 unknown to it
    reply = await ship_while_locked(app, postgres_url)
    assert reply.status_code == 500


# --8<-- [end:naive_statement_timeout]


async def test_statement_timeout_answers_503(postgres_url: str):
    app = create_app(postgres_url, **timeouts(200, 0))
    reply = await ship_while_locked(app, postgres_url)
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "1"


async def test_lock_timeout_answers_503(postgres_url: str):
    app = create_app(postgres_url, **timeouts(0, 200))
    reply = await ship_while_locked(app, postgres_url)
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "1"


@pytest.mark.parametrize(
    ("statement_ms", "lock_ms", "sqlstate"),
    [(200, 0, "57014"), (0, 200, "55P03")],
    ids=["statement_timeout", "lock_timeout"],
)
async def test_limits_per_transaction_end_with_it(
    postgres_url: str, statement_ms: int, lock_ms: int, sqlstate: str
):
    app = create_app(postgres_url, pool_size=1, max_overflow=0)  # one conn.
    async with pooled_lifespan(app):
        await seed(app)
        sessions = app.state.sessions

        async def limited_locking_read() -> None:
            async with sessions.begin() as session:
                await limit_transaction(session, statement_ms, lock_ms)
                query = select(Item).where(Item.id == 1).with_for_update()
                await session.execute(query)

        async with row_locked(postgres_url):
            with pytest.raises(DBAPIError) as caught:
                await limited_locking_read()
        assert caught.value.orig.sqlstate == sqlstate  # type: ignore[union-attr]
        async with sessions.begin() as session:  # same connection, no limit
            assert await session.scalar(text("SHOW statement_timeout")) == "0"
            assert await session.scalar(text("SHOW lock_timeout")) == "0"


# --- PgBouncer in transaction mode (PostgreSQL) --------------------------------

PGBOUNCER_MISSING = (
    "pgbouncer is not installed: apt-get install -y pgbouncer (.ci/run does)"
)


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found is None:
        pytest.fail(PGBOUNCER_MISSING)
    return found


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(100):
        if process.poll() is not None:
            pytest.fail(f"pgbouncer exited: {log.read_text() if log.exists() else ''}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)  # a subprocess starting, not a race in the code
    pytest.fail("pgbouncer did not listen within 5 s")


@pytest.fixture
def pgbouncer_url(postgres_url: str, free_port: int) -> Iterator[str]:
    """PgBouncer 1.18 in transaction mode in front of the test database."""
    binary = pgbouncer_binary()
    server = make_url(postgres_url)
    workdir = Path(tempfile.mkdtemp(prefix="cookbook-pgbouncer-"))
    workdir.chmod(0o755)
    (workdir / "users.txt").write_text('"postgres" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={server.host or "127.0.0.1"} port={server.port or 5432}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {free_port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "users.txt"}
pool_mode = transaction
default_pool_size = 2
logfile = {workdir / "pgbouncer.log"}
"""
    )
    as_root = os.geteuid() == 0  # pgbouncer refuses to run as root
    if as_root:
        shutil.chown(workdir, "postgres")
        for path in workdir.iterdir():
            shutil.chown(path, "postgres")
    process = subprocess.Popen(
        [binary, str(workdir / "pgbouncer.ini")],
        user="postgres" if as_root else None,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(free_port, process, workdir / "pgbouncer.log")
        yield server.set(host="127.0.0.1", port=free_port).render_as_string(
            hide_password=False
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


async def reuse_after_another_transaction(url: str, **options: Any) -> None:
    """A request, then another while a second client holds a server
    connection: PgBouncer runs the second on the other server connection."""
    engine = create_engine(url, **options)
    other = create_engine(url, **through_pgbouncer())
    try:
        sessions = create_session_factory(engine)
        async with sessions.begin() as session:
            await seed_session(session)
        async with create_session_factory(other).begin() as held:
            await held.execute(text("SELECT 1"))
            async with sessions.begin() as session:
                item = await session.get(Item, 1)
                assert item is not None
                assert item.stock == 10
        async with sessions.begin() as session:  # and on, concurrently
            await asyncio.gather(*(one_read(sessions) for _ in range(6)))
    finally:
        await engine.dispose()
        await other.dispose()


async def seed_session(session: Any) -> None:
    await session.run_sync(
        lambda s: Item.metadata.create_all(s.connection(), checkfirst=True)
    )
    if await session.get(Item, 1) is None:
        session.add(Item(id=1, name="Lamp", stock=10))


async def one_read(sessions: Any) -> None:
    async with sessions() as session:
        assert (await session.get(Item, 1)) is not None


# --8<-- [start:naive_pgbouncer]
async def test_naive_asyncpg_through_pgbouncer_fails_on_prepared_statements(
    pgbouncer_url: str,
):
    with pytest.raises(DBAPIError, match="prepared statement"):
        await reuse_after_another_transaction(pgbouncer_url, pool_size=1)


# --8<-- [end:naive_pgbouncer]


async def test_asyncpg_through_pgbouncer_with_unique_statement_names(
    pgbouncer_url: str,
):
    await reuse_after_another_transaction(pgbouncer_url, **through_pgbouncer())


async def test_a_pooled_engine_needs_sqlalchemys_statement_cache_off_too(
    pgbouncer_url: str,
):
    options = through_pgbouncer()
    del options["poolclass"]  # a QueuePool keeps connections, and their cache
    with pytest.raises(DBAPIError, match="prepared statement"):
        await reuse_after_another_transaction(pgbouncer_url, **options)
    await reuse_after_another_transaction(
        f"{pgbouncer_url}?prepared_statement_cache_size=0", **options
    )


# --- several workers ----------------------------------------------------------


def test_make_app_passes_workers_to_uvicorn():
    makefile = (ROOT / "Makefile").read_text()
    assert "\nWORKERS ?= 1\n" in makefile
    assert "\napp: export WEB_CONCURRENCY = $(WORKERS)\n" in makefile


async def test_make_app_serves_with_two_workers_on_postgres(
    postgres_url: str, free_port: int
):
    # The schema first, once (in production: migrations), then the workers:
    # two lifespans creating tables at once on an empty database collide.
    inventory = create_inventory_app(postgres_url)
    async with inventory.router.lifespan_context(inventory):
        pass
    await asyncio.to_thread(serve_with_two_workers, postgres_url, free_port)


def serve_with_two_workers(postgres_url: str, free_port: int) -> None:
    env = {**os.environ, "DATABASE_URL": postgres_url}
    make = ["make", "--no-print-directory", "app", "WORKERS=2"]
    server = subprocess.Popen(
        [*make, f"APP_PORT={free_port}"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # make, uvicorn and its workers: one group
    )
    deadline = threading.Timer(60, os.killpg, (server.pid, signal.SIGKILL))
    deadline.start()  # stops by itself if start-up hangs
    started: list[str] = []
    try:
        assert server.stderr is not None
        for line in server.stderr:  # each worker logs its own start-up
            print(line, end="")  # shown if the test fails
            if "Application startup complete" in line:
                started.append(line)
                if len(started) == 2:
                    break
        assert len(started) == 2, "uvicorn did not start two workers"
        base = f"http://127.0.0.1:{free_port}"
        with httpx.Client(base_url=base, timeout=10) as http:
            replies = [http.get("/items") for _ in range(20)]
        assert {reply.status_code for reply in replies} == {200}
    finally:
        deadline.cancel()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)

"""Testing your app: the lifespan, rollback per test, loops, parallel workers.

The in-process tests run the page's pieces directly. What only a real pytest
run can show (a row gone in the *next* test, event loops that change between
tests, two xdist workers) runs in an inner `pytest -n 2` on small generated
test modules that import the page's fixtures: one run per backend, shared by
the tests below.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError, SAWarning

from snippets import testing as page
from snippets.testing import (
    app_client,
    create_app,
    create_engine,
    create_read_session_factory,
    create_session_factory,
    insert_item,
    list_item_names,
    naive_client,
    rolled_back,
    rolled_back_naive,
    use_sessions,
    use_write_sessions_only,
)

ROOT = Path(__file__).resolve().parent.parent

# The page's fixtures, under the names the tests below ask for.
client = page.client
engine = page.engine


async def names(url: str) -> list[str]:
    """What is stored, read on a connection of its own (a deferred BEGIN on
    SQLite: a test's open transaction holds the write lock)."""
    engine = create_engine(url)
    try:
        async with create_read_session_factory(engine)() as session:
            return await list_item_names(session)
    finally:
        await engine.dispose()


# --- the lifespan ------------------------------------------------------------


async def test_naive_asgi_transport_skips_the_lifespan_and_the_request_fails(
    database_url: str,
):
    async with naive_client(create_app(database_url)) as http:
        with pytest.raises(AttributeError, match="no attribute 'read_sessions'"):
            await http.get("/items")


async def test_app_client_runs_the_lifespan_around_the_requests(database_url: str):
    app = create_app(database_url)
    async with app_client(app) as http:
        assert hasattr(app.state, "sessions")
        assert (await http.post("/items", json={"name": "a"})).status_code == 201
        assert (await http.get("/items")).json() == ["a"]


# --- rollback per test ---------------------------------------------------------


async def test_naive_shared_database_keeps_what_a_previous_test_committed(
    database_url: str,
):
    async with app_client(create_app(database_url)) as http:  # test 1
        assert (await http.post("/items", json={"name": "apple"})).status_code == 201
    async with app_client(create_app(database_url)) as http:  # test 2
        assert (await http.get("/items")).json() == ["apple"]
        again = await http.post("/items", json={"name": "apple"})
        assert again.status_code == 409


async def test_rolled_back_undoes_what_the_endpoint_committed(database_url: str):
    engine = create_engine(database_url)
    app = create_app(database_url)
    try:
        for _ in range(2):  # two tests in a row, each from a clean database
            async with app_client(app) as http, rolled_back(engine) as sessions:
                use_sessions(app, sessions)
                created = await http.post("/items", json={"name": "apple"})
                assert created.status_code == 201
                assert (await http.get("/items")).json() == ["apple"]
    finally:
        await engine.dispose()
    assert await names(database_url) == []


async def test_naive_join_mode_lets_a_failed_request_end_the_test_transaction(
    database_url: str,
):
    """Default join mode: the 409's rollback ends the outer transaction, and
    the next request commits for real; SQLAlchemy only warns at teardown."""
    engine = create_engine(database_url)
    app = create_app(database_url)
    statuses: list[int] = []

    async def three_requests() -> None:
        async with app_client(app) as http, rolled_back_naive(engine) as sessions:
            use_sessions(app, sessions)
            for name in ("fig", "fig", "kiwi"):
                reply = await http.post("/items", json={"name": name})
                statuses.append(reply.status_code)

    try:
        with pytest.warns(SAWarning, match="already deassociated"):
            await three_requests()
    finally:
        await engine.dispose()
    assert statuses == [201, 409, 201]
    assert await names(database_url) == ["kiwi"]  # leaked into the next test


async def test_savepoint_join_mode_keeps_the_test_transaction_after_a_failure(
    database_url: str,
):
    engine = create_engine(database_url)
    app = create_app(database_url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # not even a warning
            async with app_client(app) as http, rolled_back(engine) as sessions:
                use_sessions(app, sessions)
                statuses = [
                    (await http.post("/items", json={"name": name})).status_code
                    for name in ("fig", "fig", "kiwi")
                ]
                assert statuses == [201, 409, 201]
                assert (await http.get("/items")).json() == ["fig", "kiwi"]
    finally:
        await engine.dispose()
    assert await names(database_url) == []


async def test_app_commits_and_rollbacks_become_savepoint_statements(
    database_url: str,
):
    engine = create_engine(database_url)
    app = create_app(database_url)
    sent: list[str] = []

    def record(*args: object) -> None:
        statement = str(args[2]).split()[0:2]
        if statement[0] in {"SAVEPOINT", "RELEASE", "ROLLBACK", "COMMIT"}:
            sent.append(" ".join(statement))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        async with app_client(app) as http, rolled_back(engine) as sessions:
            use_sessions(app, sessions)
            for name in ("fig", "fig"):
                await http.post("/items", json={"name": name})
    finally:
        await engine.dispose()
    assert sent == [
        "SAVEPOINT sa_savepoint_1",
        "RELEASE SAVEPOINT",
        "SAVEPOINT sa_savepoint_2",
        "ROLLBACK TO",
    ]


async def test_sqlite_test_transaction_holds_the_write_lock(sqlite_url: str):
    """SQLite only: its lock is per database. (timeout=0: fail at once instead
    of waiting out the 5 s busy timeout.)"""
    engine = create_engine(sqlite_url)
    other = create_engine(sqlite_url, connect_args={"timeout": 0})
    app = create_app(sqlite_url)
    try:
        async with app_client(app), rolled_back(engine) as sessions:
            async with sessions.begin() as session:
                await insert_item(session, "mine")
            with pytest.raises(OperationalError, match="database is locked"):
                async with create_session_factory(other).begin() as session:
                    await insert_item(session, "theirs")
            async with create_read_session_factory(other)() as session:
                assert await list_item_names(session) == []  # reads: not blocked
    finally:
        await other.dispose()
        await engine.dispose()


async def test_postgres_test_transaction_lets_other_writers_through(
    postgres_url: str,
):
    """PostgreSQL only: row locks, so another connection writes other rows."""
    engine = create_engine(postgres_url)
    app = create_app(postgres_url)
    try:
        async with app_client(app), rolled_back(engine) as sessions:
            async with sessions.begin() as session:
                await insert_item(session, "mine")
            async with create_session_factory(engine).begin() as session:
                await insert_item(session, "theirs")
        assert await names(postgres_url) == ["theirs"]
    finally:
        await engine.dispose()


async def test_naive_write_only_override_hides_the_test_writes_from_reads(
    database_url: str,
):
    engine = create_engine(database_url)
    app = create_app(database_url)
    try:
        async with app_client(app) as http, rolled_back(engine) as sessions:
            use_write_sessions_only(app, sessions)
            assert (await http.post("/items", json={"name": "plum"})).status_code == 201
            assert (await http.get("/items")).json() == []
    finally:
        await engine.dispose()


async def test_both_overrides_read_what_the_test_wrote(database_url: str):
    engine = create_engine(database_url)
    app = create_app(database_url)
    try:
        async with app_client(app) as http, rolled_back(engine) as sessions:
            use_sessions(app, sessions)
            assert (await http.post("/items", json={"name": "plum"})).status_code == 201
            assert (await http.get("/items")).json() == ["plum"]
    finally:
        await engine.dispose()


async def test_client_fixture_serves_the_app_and_stores_nothing(
    client: httpx.AsyncClient, database_url: str
):
    assert (await client.post("/items", json={"name": "pear"})).status_code == 201
    assert (await client.get("/items")).json() == ["pear"]
    assert await names(database_url) == []  # only the test's transaction has it


# --- inner pytest runs: the next test, event loops, two workers ---------------

INNER_FILES = {
    "pytest.ini": """
        [pytest]
        asyncio_mode = auto
        asyncio_default_fixture_loop_scope = function
        asyncio_default_test_loop_scope = function
        addopts = -p no:cacheprovider
        """,
    "conftest.py": """
        from snippets.testing import (  # noqa: F401  (fixtures, by name)
            client,
            database_url,
            engine,
            shared_database_url,
            shared_engine,
        )
        """,
    # Rollback per test: the row test 1 commits is gone in test 2.
    "test_rolled_back.py": """
        async def test_1_commits(client):
            reply = await client.post("/items", json={"name": "apple"})
            assert reply.status_code == 201

        async def test_2_finds_nothing(client):
            assert "apple" not in (await client.get("/items")).json()
        """,
    # Naive: the app's own sessions, nothing rolled back.
    "test_leak.py": """
        from snippets.testing import app_client, create_app

        async def test_1_commits(database_url):
            async with app_client(create_app(database_url)) as http:
                reply = await http.post("/items", json={"name": "pear"})
                assert reply.status_code == 201

        async def test_2_finds_nothing(database_url):
            async with app_client(create_app(database_url)) as http:
                assert "pear" not in (await http.get("/items")).json()
        """,
    # Naive: a session-scoped engine used from each test's own loop (an
    # instance of its own: it would spoil the next module's pool).
    "test_loops_naive.py": """
        import pytest
        from sqlalchemy import text
        from snippets.testing import shared_engine  # noqa: F401

        @pytest.mark.parametrize("n", [1, 2, 3])
        async def test_query(shared_engine, n):
            async with shared_engine.connect() as conn:
                assert await conn.scalar(text("SELECT 1")) == 1
        """,
    # Fix 1: the tests run on the session's loop too.
    "test_loops_session.py": """
        import pytest
        from sqlalchemy import text
        from snippets.testing import SESSION_LOOP

        pytestmark = SESSION_LOOP

        @pytest.mark.parametrize("n", [1, 2, 3])
        async def test_query(shared_engine, n):
            async with shared_engine.connect() as conn:
                assert await conn.scalar(text("SELECT 1")) == 1
        """,
    # Fix 2 (the cookbook's): an engine per test, on the test's loop.
    "test_loops_per_test.py": """
        import pytest
        from sqlalchemy import text

        @pytest.mark.parametrize("n", [1, 2, 3])
        async def test_query(engine, n):
            async with engine.connect() as conn:
                assert await conn.scalar(text("SELECT 1")) == 1
        """,
    # Both workers create the same row, which a unique constraint allows once.
    "test_workers_shared.py": """
        from snippets.testing import app_client, create_app

        async def test_create(shared_database_url):
            async with app_client(create_app(shared_database_url)) as http:
                reply = await http.post("/items", json={"name": "x"})
                assert reply.status_code == 201
        """,
    "test_workers_own.py": """
        from snippets.testing import app_client, create_app

        async def test_create(database_url):
            async with app_client(create_app(database_url)) as http:
                reply = await http.post("/items", json={"name": "x"})
                assert reply.status_code == 201
        """,
}


@dataclass
class InnerRun:
    outcomes: dict[str, list[str]]  # test id -> outcome per worker
    messages: dict[str, list[str]]  # test id -> failure messages
    output: str


_RUNS: dict[str, InnerRun] = {}
PYTEST = [
    sys.executable,
    "-m",
    "pytest",
    "-p",
    "xdist.plugin",
    "-p",
    "pytest_asyncio.plugin",
]


async def create_tables(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(page.Base.metadata.create_all)
    await engine.dispose()


def run_inner(backend: str, database_url: str, tmp_path: Path) -> InnerRun:
    """`pytest -n 2 --dist each` on INNER_FILES: each worker runs every test."""
    if backend in _RUNS:
        return _RUNS[backend]
    for name, text in INNER_FILES.items():
        (tmp_path / name).write_text(dedent(text).lstrip())
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "COOKBOOK_", "TEST_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the two it needs: faster
    if backend == "postgresql":
        env["TEST_POSTGRES_URL"] = database_url  # each worker: <its name>_gwN
        env["TEST_DATABASE_URL"] = database_url  # the naive shared one
    else:
        env["TEST_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    # The shared table exists before the workers start: two concurrent CREATE
    # TABLEs would collide too, but the collision shown is the rows'.
    asyncio.run(create_tables(env["TEST_DATABASE_URL"]))
    tests = [name for name in INNER_FILES if name.startswith("test_")]
    result = subprocess.run(
        [
            *PYTEST,
            "-n",
            "2",
            "--dist",
            "each",
            "-q",
            "--junitxml",
            "report.xml",
            *tests,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    outcomes: dict[str, list[str]] = {}
    messages: dict[str, list[str]] = {}
    for case in ET.parse(tmp_path / "report.xml").iter("testcase"):
        test = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        failure = case.find("failure")
        error = case.find("error")
        outcome = "passed"
        if failure is not None or error is not None:
            outcome = "failed"
            found = failure if failure is not None else error
            assert found is not None
            messages.setdefault(test, []).append(found.get("message", ""))
        outcomes.setdefault(test, []).append(outcome)
    _RUNS[backend] = InnerRun(outcomes, messages, result.stdout + result.stderr)
    return _RUNS[backend]


@pytest.fixture(params=["sqlite", "postgresql"])
def inner(request: pytest.FixtureRequest, tmp_path: Path) -> InnerRun:
    """The inner run on one backend (made once per backend per session)."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url = "" if request.param in _RUNS else str(request.getfixturevalue(name))
    run = run_inner(request.param, url, tmp_path)
    assert run.outcomes, run.output[-3000:]
    return run


def outcomes(run: InnerRun, test: str) -> list[str]:
    assert test in run.outcomes, run.output[-3000:]
    assert len(run.outcomes[test]) == 2, "each of the two workers runs it"
    return run.outcomes[test]


def test_naive_committed_row_is_still_there_in_the_next_test(inner: InnerRun):
    assert outcomes(inner, "test_leak::test_1_commits") == ["passed"] * 2
    assert outcomes(inner, "test_leak::test_2_finds_nothing") == ["failed"] * 2


def test_rolled_back_row_is_gone_in_the_next_test(inner: InnerRun):
    assert outcomes(inner, "test_rolled_back::test_1_commits") == ["passed"] * 2
    assert outcomes(inner, "test_rolled_back::test_2_finds_nothing") == ["passed"] * 2


def test_naive_session_engine_fails_from_the_second_test_loop_on_postgres(
    inner: InnerRun, request: pytest.FixtureRequest
):
    """asyncpg binds each connection to the loop that opened it. SQLite
    passes: aiosqlite answers whichever loop awaits it (its own thread)."""
    results = {
        n: outcomes(inner, f"test_loops_naive::test_query[{n}]") for n in (1, 2, 3)
    }
    if "sqlite" in request.node.callspec.id:
        assert results == {n: ["passed"] * 2 for n in (1, 2, 3)}
        return
    assert results == {1: ["passed"] * 2, 2: ["failed"] * 2, 3: ["failed"] * 2}
    second = " ".join(inner.messages["test_loops_naive::test_query[2]"])
    third = " ".join(inner.messages["test_loops_naive::test_query[3]"])
    assert "attached to a different loop" in second
    assert "another operation is in progress" in third


@pytest.mark.parametrize("module", ["test_loops_session", "test_loops_per_test"])
def test_session_loop_or_engine_per_test_passes_on_every_loop(
    inner: InnerRun, module: str
):
    for n in (1, 2, 3):
        assert outcomes(inner, f"{module}::test_query[{n}]") == ["passed"] * 2


def test_naive_shared_database_makes_two_workers_collide(inner: InnerRun):
    results = outcomes(inner, "test_workers_shared::test_create")
    assert Counter(results) == {"passed": 1, "failed": 1}
    assert "409" in " ".join(inner.messages["test_workers_shared::test_create"])


def test_database_per_worker_keeps_two_workers_apart(inner: InnerRun):
    assert outcomes(inner, "test_workers_own::test_create") == ["passed"] * 2

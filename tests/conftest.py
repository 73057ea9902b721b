"""Fixtures for the behavioural tests: a fresh database per test, per backend.

SQLite always runs, on a temporary file (never ``:memory:``, whose single
shared connection hides isolation bugs). PostgreSQL runs when
COOKBOOK_TEST_POSTGRES_URL points at a server whose user may create databases:
the run creates one database, and each test starts from an empty schema in it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent

POSTGRES_URL = os.environ.get("COOKBOOK_TEST_POSTGRES_URL", "")
POSTGRES_MISSING = (
    "PostgreSQL half of the suite: set COOKBOOK_TEST_POSTGRES_URL, e.g. "
    "postgresql+asyncpg://postgres@127.0.0.1:5432/test (.ci/run does)"
)


def _asyncpg_dsn(database: str | None = None) -> str:
    url = make_url(POSTGRES_URL).set(drivername="postgresql")
    if database:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


async def _admin(sql: str, database: str | None = None) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(database))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """One database per test run; creating one per test costs ~0.25 s."""
    if not POSTGRES_URL:
        pytest.skip(POSTGRES_MISSING)
    name = f"cookbook_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
async def postgres_url(postgres_database: str) -> str:
    """An empty database: the run's database, wiped before each test.

    Connections a previous test left open are closed first, so nothing it
    did (locks, open transactions, tables) can reach this test.
    """
    await _admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid();"
        "DROP SCHEMA public CASCADE; CREATE SCHEMA public;",
        postgres_database,
    )
    url = make_url(POSTGRES_URL).set(database=postgres_database)
    return url.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty database, once per backend."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    return unused_port()


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory every xdist worker of this run shares."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextmanager
def one_worker_at_a_time(run_dir: Path) -> Iterator[None]:
    with (run_dir / "site.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def site_port(run_dir: Path) -> int:
    """The port the browser check serves the site on, known before the build.

    Material's instant navigation only takes over links under `site_url`, so
    the site is built for the address it is served from.
    """
    with one_worker_at_a_time(run_dir):
        chosen = run_dir / "site-port"
        if not chosen.exists():
            chosen.write_text(str(unused_port()))
        return int(chosen.read_text())


@pytest.fixture(scope="session")
def built_site(run_dir: Path, site_port: int) -> Path:
    """`mkdocs build --strict`, once per run: the worker that asks first
    builds, the others wait for it (a build is seconds of CPU)."""
    site = run_dir / "site"
    with one_worker_at_a_time(run_dir):
        if (site / "index.html").is_file():
            return site
        build = ["mkdocs", "build", "--strict", "-q", "-d", str(site)]
        result = subprocess.run(
            [sys.executable, "-m", *build],
            cwd=ROOT,
            env={
                **os.environ,
                "NO_MKDOCS_2_WARNING": "1",
                "COOKBOOK_SITE_URL": f"http://127.0.0.1:{site_port}/",
            },
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            shutil.rmtree(site, ignore_errors=True)  # the next asker retries
        assert result.returncode == 0, result.stderr
    return site


def run_snippet(stem: str) -> subprocess.CompletedProcess[str]:
    """`python -m snippets.<stem>`, as a reader runs it; fails if it fails."""
    return subprocess.run(
        [sys.executable, "-m", f"snippets.{stem}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )

"""Test isolation: tests per second under each way to keep tests apart.

One small test (POST an item through the API in process, then GET the list),
run many times in a row, each time set up and torn down as a strategy does:
a fresh database, the Testing page's rollback (its `client` fixture: an engine
and an app per test; or one engine for every test, as with a session-loop
fixture), deleting every row, or (PostgreSQL) an empty schema.
The limit is the same test with no isolation at all: one app for every test.

    python -m benchmarks.testing [--quick]
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import httpx
from sqlalchemy import delete, text
from sqlalchemy.engine import make_url

from benchmarks.common import Config, Result, Timer, main
from snippets.testing import (
    Base,
    Item,
    app_client,
    create_app,
    create_engine,
    rolled_back,
    run_admin,
    use_sessions,
)

Strategy = Callable[[Config, str, int], Awaitable[int]]


async def body(http: httpx.AsyncClient, name: str = "apple") -> bool:
    """The test: create an item, list the items; True when it passed."""
    created = await http.post("/items", json={"name": name})
    listed = await http.get("/items")
    return created.status_code == 201 and name in listed.json()


async def no_isolation(config: Config, url: str, tests: int) -> int:
    """The limit: one app, nothing undone (unique names, so every test passes)."""
    passed = 0
    async with app_client(create_app(url)) as http:
        for i in range(tests):
            passed += await body(http, f"apple {i}")
    return passed


async def rollback(config: Config, url: str, tests: int) -> int:
    """The page's fixtures: engine + app per test, the test's work rolled back."""
    passed = 0
    for _ in range(tests):
        engine = create_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        app = create_app(url)
        async with app_client(app) as http, rolled_back(engine) as sessions:
            use_sessions(app, sessions)
            passed += await body(http)
        await engine.dispose()
    return passed


async def rollback_one_engine(config: Config, url: str, tests: int) -> int:
    """The rollback on one engine for every test (tests on the session loop)."""
    passed = 0
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    for _ in range(tests):
        app = create_app(url)
        async with app_client(app) as http, rolled_back(engine) as sessions:
            use_sessions(app, sessions)
            passed += await body(http)
    await engine.dispose()
    return passed


async def delete_rows(config: Config, url: str, tests: int) -> int:
    """App per test, its commits kept, then every table emptied."""
    passed = 0
    for _ in range(tests):
        app = create_app(url)
        async with app_client(app) as http:
            passed += await body(http)
            async with app.state.sessions.begin() as session:
                if session.bind.dialect.name == "postgresql":
                    await session.execute(text("TRUNCATE items RESTART IDENTITY"))
                else:  # SQLite has no TRUNCATE; DELETE without WHERE is its own
                    await session.execute(delete(Item))
    return passed


async def fresh_database(config: Config, url: str, tests: int) -> int:
    """A new database per test: a new file, or CREATE DATABASE from a server."""
    passed = 0
    for i in range(tests):
        if url.startswith("sqlite"):
            path = config.workdir / f"fresh-{uuid.uuid4().hex}.db"
            async with app_client(create_app(f"sqlite+aiosqlite:///{path}")) as http:
                passed += await body(http)
            for file in config.workdir.glob(f"{path.name}*"):
                file.unlink()
            continue
        name = f"{make_url(url).database}_fresh_{i}"
        await run_admin(url, f'CREATE DATABASE "{name}"')
        own = make_url(url).set(database=name).render_as_string(hide_password=False)
        async with app_client(create_app(own)) as http:
            passed += await body(http)
        await run_admin(url, f'DROP DATABASE "{name}" WITH (FORCE)')
    return passed


async def empty_schema(config: Config, url: str, tests: int) -> int:
    """PostgreSQL: drop and recreate the schema per test (this suite's way)."""
    passed = 0
    for _ in range(tests):
        await empty(url)
        async with app_client(create_app(url)) as http:
            passed += await body(http)
    return passed


async def empty(url: str) -> None:
    await run_admin(url, "DROP SCHEMA public CASCADE")
    await run_admin(url, "CREATE SCHEMA public")


async def prepare(config: Config, backend: str) -> str:
    """An empty database for the run: a file, or the PostgreSQL scratch one."""
    if backend == "sqlite":
        for leftover in config.workdir.glob("testing.db*"):
            leftover.unlink()
        return f"sqlite+aiosqlite:///{config.workdir / 'testing.db'}"
    assert config.postgres_url
    await empty(config.postgres_url)
    return config.postgres_url


async def run(config: Config) -> list[Result]:
    backends = ["sqlite"] + (["postgresql"] if config.postgres_url else [])
    results: list[Result] = []
    for backend in backends:
        cases: list[tuple[str, Strategy, int]] = [
            ("limit: no isolation", no_isolation, config.size(200, 5)),
            ("rollback per test (recipe)", rollback, config.size(200, 5)),
            ("rollback per test, one engine", rollback_one_engine, config.size(200, 5)),
            ("delete rows per test", delete_rows, config.size(200, 5)),
            ("fresh database per test", fresh_database, config.size(20, 3)),
        ]
        if backend == "postgresql":
            cases.append(("empty schema per test", empty_schema, config.size(20, 3)))
        limit = None
        for case, strategy, tests in cases:
            rates, passed = [], []
            for _ in range(config.repeats):
                url = await prepare(config, backend)
                timer = Timer()
                passed.append(await strategy(config, url, tests))
                rates.append(tests / timer.seconds)
            median = sorted(rates)[len(rates) // 2]
            limit = limit or median
            results.append(
                Result(
                    "testing",
                    backend,
                    case,
                    "tests/s",
                    median,
                    rates,
                    {"tests": tests, "passed": passed},
                    ratio=median / limit,
                )
            )
    return results


if __name__ == "__main__":
    main("testing", run)

"""Sessions: the foundation (engine, BEGIN modes, dependencies, database errors),
commit timing, rollback, lazy loads, begin, lifespan."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import inspect, make_url, select, text
from sqlalchemy.exc import (
    IntegrityError,
    InvalidRequestError,
    MissingGreenlet,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

import snippets.sessions
from snippets.sessions import (
    Author,
    Base,
    Book,
    ReadSessionDep,
    SessionDep,
    Sessions,
    create_app,
    create_engine,
    create_read_session_factory,
    create_session_factory,
    get_author_with_books,
    leftovers,
    name_after_commit,
    read_then_write,
    sql_log,
    write_after,
)
from tests.conftest import run_snippet

ROOT = Path(__file__).resolve().parent.parent


# --8<-- [start:client_fixture]
@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    # database_url: a fresh database per test (a temporary SQLite file here)
    app = create_app(database_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test"
        ) as client:
            yield client


# --8<-- [end:client_fixture]


@pytest.fixture
def sessions(client: httpx.AsyncClient) -> Sessions:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return transport.app.state.sessions  # type: ignore[attr-defined,no-any-return]


async def stored(sessions: Sessions, model: type) -> int:
    async with sessions() as session:
        return len((await session.scalars(select(model))).all())


async def test_sqlite_pragmas_are_set_on_every_connection(sqlite_url: str):
    engine = create_engine(sqlite_url)
    reads = engine.execution_options(sqlite_begin="DEFERRED")  # 3 at once
    try:
        connections = [await reads.connect() for _ in range(3)]
        for conn in connections:
            pragmas = [
                (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("foreign_keys", "journal_mode", "busy_timeout")
            ]
            assert pragmas == [1, "wal", 5000]
        for conn in connections:
            await conn.close()
    finally:
        await engine.dispose()


async def test_foreign_key_is_enforced(client: httpx.AsyncClient, sessions: Sessions):
    async with sessions() as session:
        session.add(Book(title="Orphan", author_id=999))
        with pytest.raises(IntegrityError):
            await session.flush()


async def test_naive_commit_after_response_reports_success_and_stores_nothing(
    client: httpx.AsyncClient, sessions: Sessions
):
    reply = await client.post("/naive/books", json={"title": "X", "author_id": 9})
    assert reply.status_code == 201
    assert await stored(sessions, Book) == 0


async def test_scoped_commit_turns_a_failed_commit_into_the_response(
    client: httpx.AsyncClient, sessions: Sessions
):
    reply = await client.post("/books", json={"title": "X", "author_id": 9})
    assert reply.status_code == 409
    assert reply.json()["detail"].endswith("references a row that does not exist")
    assert await stored(sessions, Book) == 0


async def test_successful_request_is_committed_before_the_response(
    client: httpx.AsyncClient, sessions: Sessions
):
    reply = await client.post("/authors", json={"name": "Ann", "book_titles": ["A"]})
    assert reply.status_code == 201
    author_id = reply.json()["id"]
    book = await client.post("/books", json={"title": "B", "author_id": author_id})
    assert book.status_code == 201
    async with sessions() as session:
        author = await get_author_with_books(session, "Ann")
        assert sorted(b.title for b in author.books) == ["A", "B"]


async def test_failed_request_rolls_back_every_row_it_wrote(
    client: httpx.AsyncClient, sessions: Sessions
):
    body = {"name": "Ann", "book_titles": ["Dune", "Dune"]}
    reply = await client.post("/authors", json=body)
    assert reply.status_code == 409
    assert await stored(sessions, Author) == 0
    assert await stored(sessions, Book) == 0


async def test_every_request_returns_its_connection_to_the_pool(
    client: httpx.AsyncClient, sessions: Sessions
):
    await client.post("/authors", json={"name": "Ann"})
    await client.post("/authors", json={"name": "Ann"})  # 409
    await client.post("/naive/books", json={"title": "X", "author_id": 9})
    await client.post("/authors", json={"name": ""})  # 422
    assert sessions.kw["bind"].pool.checkedout() == 0


async def test_unknown_field_and_empty_name_are_422(client: httpx.AsyncClient):
    extra = await client.post("/authors", json={"name": "Ann", "id": 5})
    empty = await client.post("/authors", json={"name": ""})
    assert extra.status_code == 422
    assert extra.json()["detail"][0]["type"] == "extra_forbidden"
    assert empty.status_code == 422


async def test_duplicate_author_name_is_409(client: httpx.AsyncClient):
    assert (await client.post("/authors", json={"name": "Ann"})).status_code == 201
    assert (await client.post("/authors", json={"name": "Ann"})).status_code == 409


async def test_lazy_load_in_async_code_fails_with_missing_greenlet(
    client: httpx.AsyncClient, sessions: Sessions
):
    await client.post("/authors", json={"name": "Ann", "book_titles": ["A"]})
    async with sessions() as session:
        author = (await session.scalars(select(Author))).one()
        with leftovers(), pytest.raises(SQLAlchemyError, match="greenlet_spawn"):
            _ = author.books


async def test_lazy_raise_names_the_attribute(
    client: httpx.AsyncClient, sessions: Sessions
):
    await client.post("/authors", json={"name": "Ann", "book_titles": ["A"]})
    async with sessions() as session:
        book = (await session.scalars(select(Book))).one()
        with pytest.raises(
            InvalidRequestError, match=r"'Book\.author' is not available"
        ):
            _ = book.author


async def test_selectinload_makes_books_readable_after_the_session_closes(
    client: httpx.AsyncClient, sessions: Sessions
):
    await client.post("/authors", json={"name": "Ann", "book_titles": ["A", "B"]})
    async with sessions() as session:
        author = await get_author_with_books(session, "Ann")
    assert sorted(book.title for book in author.books) == ["A", "B"]


async def test_begin_after_autobegin_raises(
    client: httpx.AsyncClient, sessions: Sessions
):
    async with sessions() as session:
        await session.scalar(select(Author.id))
        with pytest.raises(InvalidRequestError, match="already begun"):
            async with session.begin():
                pass


async def test_sessions_begin_commits_on_exit_and_rolls_back_on_error(
    client: httpx.AsyncClient, sessions: Sessions
):
    async with sessions.begin() as session:
        session.add(Author(name="Kept"))

    async def add_then_fail() -> None:
        async with sessions.begin() as session:
            session.add(Author(name="Dropped"))
            await session.flush()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await add_then_fail()
    async with sessions() as session:
        names = (await session.scalars(select(Author.name))).all()
    assert names == ["Kept"]


async def test_lifespan_creates_tables_and_disposes_the_engine(database_url: str):
    app = create_app(database_url)
    async with app.router.lifespan_context(app):
        engine = app.state.sessions.kw["bind"]
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert {"authors", "books"} <= set(tables)
        assert engine.pool.checkedin() == 1
    assert engine.pool.checkedin() == 0


async def test_expire_on_commit_false_keeps_objects_readable(database_url: str):
    app = create_app(database_url)
    async with app.router.lifespan_context(app):
        sessions = app.state.sessions
        async with sessions.begin() as session:
            author = Author(name="Ann")
            session.add(author)
        assert author.name == "Ann"  # no reload, no MissingGreenlet
    plain = create_session_factory(sessions.kw["bind"])
    assert plain.kw["expire_on_commit"] is False


async def test_default_session_factory_fails_reading_after_commit(database_url: str):
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    try:
        shown, left = await name_after_commit(async_sessionmaker(engine), "Ann")
        assert shown == MissingGreenlet.__name__
        if engine.dialect.name == "sqlite":  # aiosqlite's abandoned coroutine
            assert "coroutine 'Connection.cursor' was never awaited" in left
    finally:
        await engine.dispose()


async def test_postgres_rollback_still_consumes_the_sequence(postgres_url: str):
    app = create_app(postgres_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            failed = await c.post(
                "/authors", json={"name": "A", "book_titles": ["x", "x"]}
            )
            created = await c.post("/authors", json={"name": "A"})
    assert failed.status_code == 409
    assert created.json() == {"id": 2, "name": "A"}


# --- the facts behind the SQLite settings -----------------------------------


def sqlite_path(url: str) -> str:
    return str(make_url(url).database)


async def test_sqlite_only_foreign_keys_is_off_by_default_and_per_connection(
    sqlite_url: str,
):
    """WAL persists in the file; foreign_keys must be set on each connection."""
    engine = create_engine(sqlite_url)
    async with engine.connect() as conn:  # sets both pragmas on its connection
        await conn.exec_driver_sql("SELECT 1")
    await engine.dispose()
    raw = sqlite3.connect(sqlite_path(sqlite_url))  # no listener here
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA foreign_keys").fetchone() == (0,)
    finally:
        raw.close()


async def test_the_driver_already_waits_5_seconds_for_a_lock(sqlite_url: str):
    """Python's sqlite3 (under aiosqlite) sets busy_timeout from timeout=5.0."""
    engine = create_async_engine(sqlite_url)  # no listeners at all
    try:
        async with engine.connect() as conn:
            timeout = await conn.exec_driver_sql("PRAGMA busy_timeout")
            assert timeout.scalar() == 5000
    finally:
        await engine.dispose()


def test_no_dependency_is_called_session():
    assert not hasattr(snippets.sessions, "Session")
    assert SessionDep is not ReadSessionDep


# --- SQLite transactions ------------------------------------------------------


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[object]:
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield engine
    await engine.dispose()


async def test_write_sessions_begin_immediate_and_read_sessions_deferred(
    sqlite_url: str,
):
    """SQLite only: elsewhere the BEGIN listener is not installed."""
    engine = create_engine(sqlite_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    try:
        with sql_log(engine) as sql:
            async with create_session_factory(engine).begin() as session:
                session.add(Author(name="Ann"))
            async with create_read_session_factory(engine)() as session:
                await session.scalar(select(Author.id))
        assert sql[0] == "BEGIN IMMEDIATE"
        assert sql[2] == "COMMIT"
        assert sql[3:] == [sql[3], sql[4], "ROLLBACK"]
        assert sql[3] == "BEGIN DEFERRED"
    finally:
        await engine.dispose()


async def test_naive_savepoint_first_commits_on_release_with_the_drivers_begin(
    sqlite_url: str,
):
    """SQLite only: the sqlite3 module sends no BEGIN before a SAVEPOINT."""
    engine = create_engine(sqlite_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    await engine.dispose()
    driver_begin = create_async_engine(sqlite_url)
    try:
        async with create_session_factory(driver_begin)() as session:
            async with session.begin_nested():
                session.add(Author(name="Dry run"))
            await session.rollback()
        assert await stored(create_session_factory(driver_begin), Author) == 1
    finally:
        await driver_begin.dispose()


async def test_savepoint_first_rolls_back_with_the_foundation_engine(engine):
    sessions = create_session_factory(engine)
    with sql_log(engine) as sql:
        async with sessions() as session:
            async with session.begin_nested():
                session.add(Author(name="Dry run"))
            await session.rollback()
    assert await stored(sessions, Author) == 0
    savepoint = next(i for i, s in enumerate(sql) if s.startswith("SAVEPOINT"))
    if engine.dialect.name == "sqlite":  # a real transaction around it
        assert sql[:savepoint] == ["BEGIN IMMEDIATE"]


async def test_naive_deferred_read_then_write_fails_when_another_writer_commits(
    sqlite_url: str,
):
    """SQLite only: a deferred transaction's snapshot went stale (WAL)."""
    engine = create_engine(sqlite_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    try:
        writes = create_session_factory(engine)
        has_read = asyncio.Event()
        other = asyncio.create_task(write_after(writes, "B", has_read))

        async def other_commits() -> None:
            has_read.set()
            await other

        deferred = create_read_session_factory(engine)
        outcome = await read_then_write(deferred, "A", other_commits)
        assert outcome == "database is locked (SQLITE_BUSY_SNAPSHOT)"
        assert await other == "committed"
        async with writes() as session:
            assert (await session.scalars(select(Author.name))).all() == ["B"]
    finally:
        await engine.dispose()


async def test_immediate_read_then_write_queues_the_other_writer(engine):
    writes = create_session_factory(engine)
    has_read = asyncio.Event()
    other = asyncio.create_task(write_after(writes, "B", has_read))

    async def other_starts() -> None:
        has_read.set()

    assert await read_then_write(writes, "A", other_starts) == "committed"
    assert await other == "committed"
    async with writes() as session:
        names = await session.scalars(select(Author.name).order_by(Author.id))
        if engine.dialect.name == "sqlite":  # B waited for A's commit
            assert names.all() == ["A", "B"]
        else:  # PostgreSQL: rows, not the database, are locked
            assert sorted(names.all()) == ["A", "B"]


async def test_immediate_read_then_write_cannot_be_overtaken(sqlite_url: str):
    """SQLite only: the naive test's schedule, with BEGIN IMMEDIATE.

    The other writer cannot commit between our read and our write: it waits
    for our lock (here it gives up after 50 ms), and our transaction commits.
    """
    engine = create_engine(sqlite_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    impatient = create_engine(f"{sqlite_url}?timeout=0.05")
    try:
        has_read = asyncio.Event()
        other_sessions = create_session_factory(impatient)
        other = asyncio.create_task(write_after(other_sessions, "B", has_read))

        async def other_finishes() -> None:
            has_read.set()
            await asyncio.wait([other])  # committed, or gave up

        writes = create_session_factory(engine)
        assert await read_then_write(writes, "A", other_finishes) == "committed"
        with pytest.raises(OperationalError, match="database is locked"):
            await other
        async with writes() as session:
            assert (await session.scalars(select(Author.name))).all() == ["A"]
    finally:
        await impatient.dispose()
        await engine.dispose()


# --- the two dependencies -----------------------------------------------------


def with_sql_route(app: FastAPI) -> FastAPI:
    """A test-only write endpoint that runs raw SQL through SessionDep."""

    @app.post("/sql")
    async def run_sql(statements: list[str], session: SessionDep) -> None:
        for statement in statements:
            await session.execute(text(statement))

    @app.post("/read-and-add")
    async def add_in_read_session(session: ReadSessionDep) -> None:
        session.add(Author(name="Never stored"))
        await session.flush()

    return app


@pytest.fixture
async def sql_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = with_sql_route(create_app(database_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            c.app = app  # type: ignore[attr-defined]
            yield c


async def test_read_session_never_commits(sql_client: httpx.AsyncClient):
    assert (await sql_client.post("/read-and-add")).status_code == 200
    assert (await sql_client.get("/authors")).json() == []


async def test_read_endpoint_answers_while_a_writer_holds_the_lock(sqlite_url: str):
    """SQLite only: a deferred read takes no write lock (WAL)."""
    app = create_app(f"{sqlite_url}?timeout=0.05")
    async with app.router.lifespan_context(app):
        holder = sqlite3.connect(sqlite_path(sqlite_url), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process writing
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                read = await c.get("/authors")
                write = await c.post("/authors", json={"name": "Ann"})
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert read.status_code == 200
    assert write.status_code == 503
    assert write.headers["Retry-After"] == "1"


# --- database errors: one classifier, one handler -----------------------------


async def test_unique_violation_is_409_naming_the_field(sql_client):
    assert (await sql_client.post("/authors", json={"name": "Ann"})).status_code == 201
    reply = await sql_client.post("/authors", json={"name": "Ann"})
    assert reply.status_code == 409
    assert reply.json() == {"detail": "name already exists"}


async def test_composite_unique_violation_names_both_columns(sql_client):
    body = {"name": "Ann", "book_titles": ["Dune", "Dune"]}
    reply = await sql_client.post("/authors", json=body)
    assert reply.status_code == 409
    assert reply.json() == {"detail": "author_id, title already exists"}


async def test_foreign_key_violation_is_409_not_a_duplicate(sql_client):
    reply = await sql_client.post("/books", json={"title": "X", "author_id": 9})
    assert reply.status_code == 409
    detail = reply.json()["detail"]
    assert detail.endswith("references a row that does not exist")
    assert "already exists" not in detail


async def test_check_violation_is_422(sql_client):
    await sql_client.post("/authors", json={"name": "Ann"})
    insert = "INSERT INTO books (title, pages, author_id) VALUES ('X', 0, 1)"
    reply = await sql_client.post("/sql", json=[insert])
    assert reply.status_code == 422
    assert reply.json() == {
        "detail": "ck_books_positive_pages: breaks a check constraint"
    }


async def test_not_null_violation_is_422_naming_the_column(sql_client):
    await sql_client.post("/authors", json={"name": "Ann"})
    insert = "INSERT INTO books (pages, author_id) VALUES (1, 1)"
    reply = await sql_client.post("/sql", json=[insert])
    assert reply.status_code == 422
    assert reply.json() == {"detail": "title: breaks a not null constraint"}


async def test_unknown_database_error_is_a_logged_500(sql_client, caplog):
    with caplog.at_level(logging.ERROR, logger="snippets.sessions"):
        reply = await sql_client.post("/sql", json=["SELECT * FROM no_such_table"])
    assert reply.status_code == 500
    assert reply.json() == {"detail": "Internal Server Error"}
    assert "unclassified database error" in caplog.text


async def test_sqlite_busy_is_503_with_retry_after(sqlite_url: str):
    """SQLite only: another connection holds the write lock past our timeout."""
    app = create_app(f"{sqlite_url}?timeout=0.05")
    async with app.router.lifespan_context(app):
        holder = sqlite3.connect(sqlite_path(sqlite_url), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                reply = await c.post("/authors", json={"name": "Ann"})
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "1"
    assert reply.json() == {"detail": "database busy: retry shortly"}


async def test_postgres_lock_timeout_is_503_with_retry_after(postgres_url: str):
    """PostgreSQL only: lock_not_available (55P03) while another holds the row."""
    app = with_sql_route(create_app(postgres_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            await c.post("/authors", json={"name": "Ann"})
            holder = create_engine(postgres_url)
            try:
                async with holder.connect() as conn:
                    await conn.execute(text("SELECT * FROM authors FOR UPDATE"))
                    reply = await c.post(
                        "/sql",
                        json=[
                            "SET LOCAL lock_timeout = '50ms'",
                            "UPDATE authors SET name = 'Bo'",
                        ],
                    )
            finally:
                await holder.dispose()
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "1"


# --- MissingGreenlet's leftovers ----------------------------------------------


def test_the_missing_greenlet_demos_leave_nothing_on_stderr():
    """Issue #11: the "never awaited" warning is shown where it belongs."""
    result = run_snippet("sessions")
    assert "never awaited" in result.stdout  # printed, explained, by the demo
    assert result.stderr == ""

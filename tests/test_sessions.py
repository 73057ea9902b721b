"""Sessions: pragmas, commit timing, rollback, lazy loads, begin, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import (
    IntegrityError,
    InvalidRequestError,
    MissingGreenlet,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from snippets.sessions import (
    Author,
    Base,
    Book,
    create_app,
    create_engine,
    create_session_factory,
    get_author_with_books,
)

Sessions = async_sessionmaker[AsyncSession]


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
    try:
        connections = [await engine.connect() for _ in range(3)]
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
    assert reply.json() == {"detail": "conflicts with existing data"}
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
        with pytest.raises(SQLAlchemyError, match="greenlet_spawn has not been"):
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
        async with async_sessionmaker(engine)() as session:
            author = Author(name="Ann")
            session.add(author)
            await session.commit()
            with pytest.raises(SQLAlchemyError) as failure:
                _ = author.name
        cause = getattr(failure.value, "orig", None) or failure.value
        assert isinstance(cause, MissingGreenlet)
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

"""Sessions: one engine, one session per request, one commit before the reply.

Run it: python -m snippets.sessions
"""

# --8<-- [start:imports]
import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ForeignKey, String, UniqueConstraint, event, func, select
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import IntegrityError, InvalidRequestError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    mapped_column,
    relationship,
    selectinload,
)
from sqlalchemy.pool import ConnectionPoolEntry

# --8<-- [end:imports]


# --8<-- [start:models]
class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    books: Mapped[list["Book"]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "books"
    __table_args__ = (UniqueConstraint("author_id", "title"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books", lazy="raise")


# --8<-- [end:models]


# --8<-- [start:engine]
def create_engine(url: str) -> AsyncEngine:
    engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", set_sqlite_pragmas)
    return engine


def set_sqlite_pragmas(conn: DBAPIConnection, _: ConnectionPoolEntry) -> None:
    # SQLite forgets these settings with every connection: set them on each.
    cursor = conn.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")  # off by default!
    cursor.execute("PRAGMA journal_mode = WAL")  # readers do not block writers
    cursor.execute("PRAGMA busy_timeout = 5000")  # wait 5 s for a write lock
    cursor.close()


def create_session_factory(
    engine: AsyncEngine,
) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects stay readable after a commit instead of
    # reloading on attribute access, which async code cannot do implicitly.
    return async_sessionmaker(engine, expire_on_commit=False)


# --8<-- [end:engine]


# --8<-- [start:lifespan]
@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_engine(app.state.database_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    app.state.sessions = create_session_factory(engine)
    yield
    await engine.dispose()  # close pooled connections on shutdown


# --8<-- [end:lifespan]


# --8<-- [start:dependency]
async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions.begin() as session:  # commit, or rollback on error
        yield session


# scope="function": the commit runs as soon as the endpoint returns,
# so a failed commit becomes the response instead of happening after it.
# --8<-- [start:scope]
Session = Annotated[AsyncSession, Depends(get_session, scope="function")]
# --8<-- [end:scope]
# --8<-- [end:dependency]

# --8<-- [start:naive_dependency]
# Naive: the default scope runs the commit after the response was sent.
NaiveSession = Annotated[AsyncSession, Depends(get_session)]
# --8<-- [end:naive_dependency]


# --8<-- [start:schemas]
class BookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    author_id: int


class AuthorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    book_titles: list[str] = []


class AuthorOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str


# --8<-- [end:schemas]


# --8<-- [start:app]
def create_app(database_url: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.state.database_url = database_url
    app.add_exception_handler(IntegrityError, integrity_error_to_409)

    @app.post("/naive/books", status_code=status.HTTP_201_CREATED)
    async def add_book_naive(book: BookIn, session: NaiveSession) -> BookIn:
        session.add(Book(**book.model_dump()))
        return book

    @app.post("/books", status_code=status.HTTP_201_CREATED)
    async def add_book(book: BookIn, session: Session) -> BookIn:
        session.add(Book(**book.model_dump()))
        return book

    @app.post("/authors", status_code=status.HTTP_201_CREATED)
    async def add_author(author: AuthorIn, session: Session) -> AuthorOut:
        row = Author(name=author.name)
        row.books = [Book(title=title) for title in author.book_titles]
        session.add(row)
        await session.flush()  # sends the INSERTs now, to learn the id
        return AuthorOut.model_validate(row)

    return app


async def integrity_error_to_409(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        status_code=status.HTTP_409_CONFLICT,
        content={"detail": "conflicts with existing data"},
    )


# --8<-- [end:app]


# --8<-- [start:load_books]
async def get_author_with_books(session: AsyncSession, name: str) -> Author:
    query = (
        select(Author)
        .where(Author.name == name)
        .options(selectinload(Author.books))  # load now, in one more query
    )
    return (await session.scalars(query)).one()


# --8<-- [end:load_books]


# --8<-- [start:helpers]
def short(exc: Exception) -> str:
    """The first line of an error message, without SQLAlchemy's doc link."""
    return str(exc).splitlines()[0].split(" (Background on")[0]


async def count(sessions: async_sessionmaker[AsyncSession], model: type) -> int:
    async with sessions() as session:
        total = await session.scalar(select(func.count()).select_from(model))
        return int(total or 0)


# --8<-- [end:helpers]


# --8<-- [start:demo_pragmas]
async def demo_pragmas(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        conn = await session.connection()
        for pragma in ("foreign_keys", "journal_mode", "busy_timeout"):
            value = await conn.exec_driver_sql(f"PRAGMA {pragma}")
            print(pragma, "=", value.scalar())
            #> foreign_keys = 1
            #> journal_mode = wal
            #> busy_timeout = 5000
        session.add(Book(title="Orphan", author_id=999))
        try:
            await session.flush()
        except IntegrityError as exc:
            print(short(exc))
            #> (sqlite3.IntegrityError) FOREIGN KEY constraint failed


# --8<-- [end:demo_pragmas]


# --8<-- [start:demo_commit_timing]
async def demo_commit_timing(app: FastAPI) -> None:
    sessions = app.state.sessions
    # raise_app_exceptions=False: like a real server, log errors that happen
    # after the response instead of raising them in the client.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        orphan = {"title": "Orphan", "author_id": 999}
        naive = await c.post("/naive/books", json=orphan)
        print(
            "naive:",
            naive.status_code,
            "books stored:",
            await count(sessions, Book),
        )
        #> naive: 201 books stored: 0
        fixed = await c.post("/books", json=orphan)
        print("fixed:", fixed.status_code, fixed.json())
        #> fixed: 409 {'detail': 'conflicts with existing data'}


# --8<-- [end:demo_commit_timing]


# --8<-- [start:demo_rollback]
async def demo_rollback(app: FastAPI) -> None:
    sessions = app.state.sessions
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        twice = {"name": "Ann", "book_titles": ["Dune", "Dune"]}
        reply = await c.post("/authors", json=twice)
        print(
            reply.status_code, "authors stored:", await count(sessions, Author)
        )
        #> 409 authors stored: 0
        once = {"name": "Ann", "book_titles": ["Dune", "Emma"]}
        reply = await c.post("/authors", json=once)
        print(reply.status_code, reply.json())
        #> 201 {'id': 1, 'name': 'Ann'}


# --8<-- [end:demo_rollback]


# --8<-- [start:demo_lazy_load]
async def demo_lazy_load(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        query = select(Author).where(Author.name == "Ann")
        author = (await session.scalars(query)).one()
        try:
            print(len(author.books))  # not loaded: a lazy load, without await
        except SQLAlchemyError as exc:  # aiosqlite wraps it in StatementError
            cause = getattr(exc, "orig", None) or exc
            print("lazy load failed:", type(cause).__name__)
            #> lazy load failed: MissingGreenlet

        book = (await session.scalars(select(Book).limit(1))).one()
        try:
            print(book.author)
        except InvalidRequestError as exc:
            print(short(exc))
            #> 'Book.author' is not available due to lazy='raise'

        author = await get_author_with_books(session, "Ann")
        print([book.title for book in author.books])
        #> ['Dune', 'Emma']


# --8<-- [end:demo_lazy_load]


# --8<-- [start:demo_begin]
async def demo_begin(sessions: async_sessionmaker[AsyncSession]) -> None:
    # --8<-- [start:autobegin_trap]
    async with sessions() as session:
        await count_authors(session)  # any statement begins a transaction
        try:
            async with session.begin():
                pass
        except InvalidRequestError as exc:
            print(short(exc))
            #> A transaction is already begun on this Session.
    # --8<-- [end:autobegin_trap]

    async with sessions.begin() as session:  # a new unit of work: begin first
        session.add(Author(name="Ben"))
        print("in transaction:", session.in_transaction())
        #> in transaction: True
    print("authors:", await count(sessions, Author))
    #> authors: 2


async def count_authors(session: AsyncSession) -> int:
    total = await session.scalar(select(func.count()).select_from(Author))
    return int(total or 0)


# --8<-- [end:demo_begin]


# --8<-- [start:demo_expire_on_commit]
async def demo_expire_on_commit(engine: AsyncEngine) -> None:
    naive = async_sessionmaker(engine)  # the default: expire_on_commit=True
    fixed = create_session_factory(engine)
    for name, sessions in (("Cy", naive), ("Di", fixed)):
        async with sessions() as session:
            author = Author(name=name)
            session.add(author)
            await session.commit()  # the default expires every attribute
            try:
                shown = author.name
            except SQLAlchemyError as exc:  # reading it again needs an await
                shown = type(getattr(exc, "orig", None) or exc).__name__
            print("after commit:", shown)
            #> after commit: MissingGreenlet
            #> after commit: Di


# --8<-- [end:demo_expire_on_commit]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'sessions.db'}"
        app = create_app(url)
        async with lifespan(app):
            await demo_pragmas(app.state.sessions)
            await demo_commit_timing(app)
            await demo_rollback(app)
            await demo_lazy_load(app.state.sessions)
            await demo_begin(app.state.sessions)
            await demo_expire_on_commit(app.state.sessions.kw["bind"])


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

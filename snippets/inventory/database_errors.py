"""Database errors, classified once: the foundation's classifier."""

# --8<-- [start:imports]
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import Index, MetaData
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.schema import ColumnCollectionConstraint

from snippets.inventory.models import Base

# --8<-- [end:imports]


# --8<-- [start:database_errors]
class Problem(StrEnum):
    UNIQUE = "unique"
    FOREIGN_KEY = "foreign key"
    CHECK = "check"
    NOT_NULL = "not null"
    BUSY = "busy"  # worth a retry: locked, serialization failure, deadlock
    UNAVAILABLE = "unavailable"  # the connection was lost
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class DatabaseProblem:
    kind: Problem
    constraint: str = ""  # the constraint's name, where the database says it
    columns: tuple[str, ...] = ()


SQLSTATES = {
    "23505": Problem.UNIQUE,
    "23503": Problem.FOREIGN_KEY,
    "23514": Problem.CHECK,
    "23502": Problem.NOT_NULL,
    "40001": Problem.BUSY,  # serialization_failure
    "40P01": Problem.BUSY,  # deadlock_detected
    "55P03": Problem.BUSY,  # lock_not_available
}
SQLITE_ERRORS = {
    "SQLITE_CONSTRAINT_UNIQUE": Problem.UNIQUE,
    "SQLITE_CONSTRAINT_PRIMARYKEY": Problem.UNIQUE,
    "SQLITE_CONSTRAINT_FOREIGNKEY": Problem.FOREIGN_KEY,
    "SQLITE_CONSTRAINT_CHECK": Problem.CHECK,
    "SQLITE_CONSTRAINT_NOTNULL": Problem.NOT_NULL,
    "SQLITE_BUSY": Problem.BUSY,
    "SQLITE_BUSY_SNAPSHOT": Problem.BUSY,
    "SQLITE_LOCKED": Problem.BUSY,
}


def classify(exc: DBAPIError, metadata: MetaData) -> DatabaseProblem:
    """What went wrong, by SQLSTATE on PostgreSQL, by error code on SQLite."""
    if exc.connection_invalidated:
        return DatabaseProblem(Problem.UNAVAILABLE)
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is not None:  # PostgreSQL, through asyncpg
        cause = exc.orig.__cause__ if exc.orig else None
        return postgres_problem(sqlstate, cause, metadata)
    errorname = getattr(exc.orig, "sqlite_errorname", "")
    kind = SQLITE_ERRORS.get(errorname, Problem.UNKNOWN)
    detail = str(exc.orig).partition(" constraint failed: ")[2]
    if kind is Problem.CHECK:  # SQLite names a CHECK constraint
        return DatabaseProblem(kind, detail)
    if kind in (Problem.UNIQUE, Problem.NOT_NULL):  # "items.name, items.x"
        table = detail.split(".")[0]
        columns = tuple(part.split(".")[-1] for part in detail.split(", "))
        name = constraint_named_by(metadata, table, columns)
        return DatabaseProblem(
            kind, name if kind is Problem.UNIQUE else "", columns
        )
    return DatabaseProblem(kind)


def postgres_problem(
    sqlstate: str, cause: BaseException | None, metadata: MetaData
) -> DatabaseProblem:
    kind = SQLSTATES.get(sqlstate, Problem.UNKNOWN)
    if kind is Problem.NOT_NULL:
        return DatabaseProblem(kind, "", (getattr(cause, "column_name", ""),))
    name = getattr(cause, "constraint_name", None) or ""
    return DatabaseProblem(kind, name, constraint_columns(metadata, name))


def constraint_columns(metadata: MetaData, name: str) -> tuple[str, ...]:
    found = (cols for _, n, cols in unique_column_sets(metadata) if n == name)
    return next(found, ())


def constraint_named_by(
    metadata: MetaData, table: str, columns: tuple[str, ...]
) -> str:
    sets = unique_column_sets(metadata)
    found = (n for t, n, cols in sets if t == table and cols == columns)
    return next(found, "")


def unique_column_sets(
    metadata: MetaData,
) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(table, name, columns) of each constraint and unique index."""
    for table in metadata.tables.values():
        unique = [*table.constraints, *(i for i in table.indexes if i.unique)]
        for item in unique:
            if isinstance(item, ColumnCollectionConstraint | Index):
                columns = tuple(column.name for column in item.columns)
                yield table.name, str(item.name), columns


logger = logging.getLogger(__name__)
RETRY_AFTER = {"Retry-After": "1"}


def database_error_response(problem: DatabaseProblem) -> JSONResponse:
    fields = ", ".join(problem.columns) or problem.constraint
    match problem.kind:
        case Problem.UNIQUE:
            code, detail = 409, f"{fields} already exists"
        case Problem.FOREIGN_KEY:
            missing = "references a row that does not exist"
            code, detail = 409, f"{fields}: {missing}" if fields else missing
        case Problem.CHECK | Problem.NOT_NULL:
            code, detail = 422, f"{fields}: breaks a {problem.kind} constraint"
        case Problem.BUSY | Problem.UNAVAILABLE:
            return JSONResponse(
                {"detail": "database busy: retry shortly"},
                status_code=503,
                headers=RETRY_AFTER,
            )
        case _:
            logger.error("unclassified database error %s", problem.constraint)
            code, detail = 500, "Internal Server Error"
    return JSONResponse({"detail": detail}, status_code=code)


async def database_error(_: Request, exc: Exception) -> JSONResponse:
    """Registered once, in create_app, for DBAPIError."""
    if not isinstance(exc, DBAPIError):
        raise exc
    return database_error_response(classify(exc, Base.metadata))


# --8<-- [end:database_errors]

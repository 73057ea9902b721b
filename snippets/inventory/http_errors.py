"""HTTP errors: client input never becomes a 500, every code is documented."""

# --8<-- [start:imports]
import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from snippets.inventory.errors import (
    BadCursorError,
    InventoryError,
    ItemNotFoundError,
    NameTakenError,
    NotEnoughStockError,
    NotInTrashError,
    OrderNotFoundError,
    StaleItemsError,
    VersionMismatchError,
)
from snippets.inventory.schemas import ErrorOut, ValidationErrorOut

# --8<-- [end:imports]


# --8<-- [start:status]
STATUS: dict[type[InventoryError], int] = {
    ItemNotFoundError: 404,
    NotInTrashError: 404,
    OrderNotFoundError: 404,
    NameTakenError: 409,
    VersionMismatchError: 409,  # 412 when the route was sent If-Match
    StaleItemsError: 409,
    NotEnoughStockError: 409,
    BadCursorError: 400,
}


async def inventory_error(_: Request, exc: Exception) -> JSONResponse:
    """Registered once, in create_app, for every InventoryError."""
    code = next(c for kind, c in STATUS.items() if isinstance(exc, kind))
    return JSONResponse({"detail": str(exc)}, status_code=code)


# --8<-- [end:status]


# --8<-- [start:validation_handler]
def json_safe(value: object) -> object:
    """The same value, in a form that JSON (and UTF-8) can always carry."""
    if isinstance(value, dict):
        return {str(json_safe(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, str):  # "\ud800" cannot be encoded: escape it
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    plain = (
        value is None
        or isinstance(value, bool)
        or (isinstance(value, float) and math.isfinite(value))  # not NaN, inf
        or (isinstance(value, int) and abs(value) < 10**100)
    )
    return value if plain else json_safe(str(value))  # Decimal, bytes...


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, but safe to serialise, and 400 for unparsable JSON."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return JSONResponse({"detail": "the body is not valid JSON"}, 400)
    detail = [
        {
            key: json_safe(error[key])
            for key in ("loc", "msg", "type", "input", "ctx")
            if key in error
        }
        for error in errors
    ]
    return JSONResponse({"detail": detail}, 422)


def invalid(where: str, name: str, message: str, value: object) -> Exception:
    """A 422 for a rule that involves more than one parameter."""
    error = {"type": "value_error", "loc": (where, name), "msg": message}
    return RequestValidationError([{**error, "input": value}])


# --8<-- [end:validation_handler]


# --8<-- [start:documented]
NO_PRECONDITION = "send If-Match or version: what you read"
STALE_IF_MATCH = "Stale `If-Match`: the item changed since you read it"
BUSY = "The database is busy: retry after `Retry-After` seconds"
UNPARSABLE = "The body is not parsable JSON"
INVALID = "Invalid input; `detail` lists each problem and where it is"

# An example of each domain error, shown as the body of its status code.
EXAMPLES: dict[type[InventoryError], InventoryError] = {
    ItemNotFoundError: ItemNotFoundError(7),
    NotInTrashError: NotInTrashError(7),
    OrderNotFoundError: OrderNotFoundError(7),
    NameTakenError: NameTakenError("Blue mug"),
    VersionMismatchError: VersionMismatchError(7, expected=2, current=3),
    StaleItemsError: StaleItemsError(7),
    NotEnoughStockError: NotEnoughStockError(7, 5),
    BadCursorError: BadCursorError("cursor signature does not match"),
}
# The codes no domain error answers: what their body looks like.
OTHER_DETAILS: dict[int, object] = {
    400: "the body is not valid JSON",
    412: str(EXAMPLES[VersionMismatchError]),
    422: [
        {
            "loc": ["body", "price"],
            "msg": "Input should be greater than or equal to 0",
            "type": "greater_than_equal",
            "input": "-1",
            "ctx": {"ge": "0"},
        }
    ],
    428: NO_PRECONDITION,
    503: "database busy: retry shortly",
}
RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "string"},
    }
}


# --8<-- [end:documented]


# --8<-- [start:openapi_entries]
def documented(
    *errors: type[InventoryError], codes: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for a route's errors, each code explicit.

    The code of a domain error is read from STATUS, its description is its
    docstring, its example an instance. Every route may also answer 503.
    """
    found: dict[int, list[tuple[str, str, object]]] = {}
    for error in errors:
        example: object = str(EXAMPLES[error])
        entry = (error.__name__, str(error.__doc__), example)
        found.setdefault(STATUS[error], []).append(entry)
    for code, text in {**(codes or {}), 503: BUSY}.items():
        entry = (str(code), text, OTHER_DETAILS[code])
        found.setdefault(code, []).append(entry)
    return {code: response(code, found[code]) for code in sorted(found)}


def response(
    code: int, entries: list[tuple[str, str, object]]
) -> dict[str, Any]:
    examples = {
        name: {"summary": summary, "value": {"detail": detail}}
        for name, summary, detail in entries
    }
    return {
        "model": ValidationErrorOut if code == 422 else ErrorOut,
        "description": "; or ".join(summary for _, summary, _ in entries),
        "content": {"application/json": {"examples": examples}},
        **({"headers": RETRY_AFTER_HEADER} if code == 503 else {}),
    }


ETAG = {
    "ETag": {
        "description": 'The version of the item, quoted: `"3"`',
        "schema": {"type": "string"},
    }
}
# --8<-- [end:openapi_entries]

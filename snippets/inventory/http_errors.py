"""HTTP errors: client input never becomes a 500, every code is documented."""

# --8<-- [start:imports]
import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from snippets.inventory.errors import ItemNotFound, NameTaken, VersionMismatch
from snippets.inventory.schemas import ErrorOut, ValidationErrorOut

# --8<-- [end:imports]


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

# What each error code's body looks like, from the errors themselves.
EXAMPLE_DETAILS: dict[int, object] = {
    400: "the body is not valid JSON",
    404: str(ItemNotFound(7)),
    409: str(NameTaken("Blue mug")),
    412: str(VersionMismatch(7, expected=2, current=3)),
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
}


def documented(
    codes: dict[int, str], examples: dict[int, object] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error codes of a route, each one explicit.

    `examples` replaces the usual `detail` of a code for this route.
    """
    details = {**EXAMPLE_DETAILS, **(examples or {})}
    return {
        code: {
            "model": ValidationErrorOut if code == 422 else ErrorOut,
            "description": description,
            "content": {
                "application/json": {"example": {"detail": details[code]}}
            },
        }
        for code, description in codes.items()
    }


UNPARSABLE = "The body is not parsable JSON"
INVALID = "Invalid input; `detail` lists each problem and where it is"
ETAG = {
    "ETag": {
        "description": 'The version of the item, quoted: `"3"`',
        "schema": {"type": "string"},
    }
}
# --8<-- [end:documented]

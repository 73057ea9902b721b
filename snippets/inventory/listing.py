"""Listing: typed filters, a whitelisted sort, signed keyset cursors."""

# --8<-- [start:imports]
import base64
import hashlib
import hmac
import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, UnaryExpression, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from snippets.inventory.errors import BadCursor
from snippets.inventory.models import Item

# --8<-- [end:imports]


# --8<-- [start:filters]
def escape_like(text: str) -> str:
    """Make % and _ match themselves in a LIKE pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class ItemFilters:
    status: tuple[str, ...] = ()  # any of
    category: tuple[str, ...] = ()  # any of
    min_price: Decimal | None = None  # inclusive
    max_price: Decimal | None = None  # inclusive
    q: str | None = None  # in the name, case-insensitive
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive

    def conditions(self) -> list[ColumnElement[bool]]:
        # "is not None", never "if value:": 0 is a real bound.
        where: list[ColumnElement[bool]] = []
        if self.status:
            where.append(Item.status.in_(self.status))
        if self.category:
            where.append(Item.category.in_(self.category))
        if self.min_price is not None:
            where.append(Item.price >= self.min_price)
        if self.max_price is not None:
            where.append(Item.price <= self.max_price)
        if self.q is not None:
            pattern = f"%{escape_like(self.q)}%"
            where.append(Item.name.ilike(pattern, escape="\\"))
        if self.created_after is not None:
            where.append(Item.created_at >= self.created_after)
        if self.created_before is not None:
            where.append(Item.created_at < self.created_before)
        return where


# --8<-- [end:filters]


# --8<-- [start:sort]
SORTABLE: dict[str, InstrumentedAttribute[Any]] = {
    "id": Item.id,
    "name": Item.name,
    "category": Item.category,
    "status": Item.status,
    "price": Item.price,
    "stock": Item.stock,
    "created_at": Item.created_at,
    "updated_at": Item.updated_at,
}
FIELD = "|".join(SORTABLE)
SORT_PATTERN = f"^-?({FIELD})(,-?({FIELD}))*$"


@dataclass(frozen=True)
class SortKey:
    field: str
    descending: bool = False

    def clause(self) -> UnaryExpression[Any]:
        column = SORTABLE[self.field]
        return column.desc() if self.descending else column.asc()


def parse_sort(text: str) -> tuple[SortKey, ...]:
    """ "-price,name" -> price descending, then name, then id (unique)."""
    keys: list[SortKey] = []
    for part in text.split(","):
        name = part.removeprefix("-")
        if name not in SORTABLE:
            raise ValueError(f"unknown sort field {name!r}")
        if any(key.field == name for key in keys):
            raise ValueError(f"{name!r} is sorted on twice")
        keys.append(SortKey(name, descending=part.startswith("-")))
    if all(key.field != "id" for key in keys):
        keys.append(SortKey("id"))  # the tiebreaker: makes the order total
    return tuple(keys)


# --8<-- [end:sort]


# --8<-- [start:keyset]
def after(keys: tuple[SortKey, ...], values: list[Any]) -> ColumnElement[bool]:
    """Rows strictly after `values` in the order of `keys` (any directions).

    (a, b) after (x, y) means: a beyond x, or a = x and b beyond y.
    """
    alternatives = []
    for i, key in enumerate(keys):
        column = SORTABLE[key.field]
        same = [
            SORTABLE[k.field] == v
            for k, v in zip(keys[:i], values, strict=False)
        ]
        beyond = column < values[i] if key.descending else column > values[i]
        alternatives.append(and_(*same, beyond))
    return or_(*alternatives)


# --8<-- [end:keyset]


# --8<-- [start:cursor]
CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,2000}\.[A-Za-z0-9_-]{43}$")


def binding(keys: tuple[SortKey, ...], filters: ItemFilters) -> str:
    """What a cursor is valid for: this sort and these filters only."""
    both = {"sort": [asdict(k) for k in keys], "filters": asdict(filters)}
    text = json.dumps(both, default=str, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, body: str) -> str:
    return b64(hmac.new(key, body.encode(), hashlib.sha256).digest())


def make_cursor(
    key: bytes, bound_to: str, keys: tuple[SortKey, ...], last: Item
) -> str:
    values = [getattr(last, k.field) for k in keys]
    payload = {"b": bound_to, "v": [to_json(v) for v in values]}
    body = b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{sign(key, body)}"


def read_cursor(
    key: bytes, bound_to: str, keys: tuple[SortKey, ...], cursor: str
) -> list[Any]:
    if not CURSOR.match(cursor):
        raise BadCursor("malformed cursor")
    body, _, signature = cursor.partition(".")
    if not hmac.compare_digest(signature, sign(key, body)):
        raise BadCursor("cursor signature does not match")
    payload = json.loads(unb64(body))
    if payload["b"] != bound_to:
        raise BadCursor("this cursor was made for another sort or filter")
    return [
        from_json(k.field, v) for k, v in zip(keys, payload["v"], strict=True)
    ]


def to_json(value: Any) -> Any:
    if isinstance(value, Decimal | datetime):
        return str(value) if isinstance(value, Decimal) else value.isoformat()
    return value


def from_json(field: str, value: Any) -> Any:
    if field == "price":
        return Decimal(value)
    if field in {"created_at", "updated_at"}:
        return datetime.fromisoformat(value)
    return value


# --8<-- [end:cursor]

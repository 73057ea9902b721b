"""Listing: typed filters, a whitelisted sort, signed keyset cursors."""

# --8<-- [start:imports]
import base64
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_

from snippets.inventory.errors import BadCursorError
from snippets.inventory.models import Item, fold

# --8<-- [end:imports]


# --8<-- [start:filters]
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
        if self.q is not None:  # the Filtering recipe: both sides folded
            folded = fold(self.q)
            where.append(Item.name_search.contains(folded, autoescape=True))
        if self.created_after is not None:
            where.append(Item.created_at >= self.created_after)
        if self.created_before is not None:
            where.append(Item.created_at < self.created_before)
        return where


# --8<-- [end:filters]


# --8<-- [start:sort]
# Public name -> what the database sorts by. Names sort by lower(), as in
# the Sorting recipe; each has an index (models.py).
SORTABLE: dict[str, ColumnElement[Any]] = {
    "id": Item.__table__.c.id,
    "name": func.lower(Item.name),
    "category": Item.__table__.c.category,
    "status": Item.__table__.c.status,
    "price": Item.__table__.c.price,
    "stock": Item.__table__.c.stock,
    "created_at": Item.__table__.c.created_at,
    "updated_at": Item.__table__.c.updated_at,
}
NULLABLE: frozenset[str] = frozenset()  # none of them: a test checks
FIELD = "|".join(SORTABLE)
SORT_PATTERN = f"^-?({FIELD})(,-?({FIELD}))*$"


@dataclass(frozen=True)
class SortBy:
    field: str
    descending: bool = False

    def key(self) -> "OrderKey":
        nullable = self.field in NULLABLE
        return OrderKey(SORTABLE[self.field], self.descending, nullable)


def parse_item_sort(text: str) -> tuple[SortBy, ...]:
    """ "-price,name" -> price descending, then name, then id (unique)."""
    keys: list[SortBy] = []
    for part in text.split(","):
        name = part.removeprefix("-")
        if name not in SORTABLE:
            raise ValueError(f"unknown sort field {name!r}")
        if any(key.field == name for key in keys):
            raise ValueError(f"{name!r} is sorted on twice")
        keys.append(SortBy(name, descending=part.startswith("-")))
    if all(key.field != "id" for key in keys):
        keys.append(SortBy("id"))  # the tiebreaker: makes the order total
    return tuple(keys)


# --8<-- [end:sort]


# --8<-- [start:keyset]
@dataclass(frozen=True)
class OrderKey:
    """One column of an ORDER BY. The rule: NULL sorts below every value."""

    column: ColumnElement[Any]
    descending: bool = False
    nullable: bool = False

    def order_by(self) -> ColumnElement[Any]:
        if self.descending:
            order = self.column.desc()
            return order.nulls_last() if self.nullable else order
        order = self.column.asc()
        return order.nulls_first() if self.nullable else order

    def reversed(self) -> "OrderKey":
        return OrderKey(self.column, not self.descending, self.nullable)


def after(
    keys: Sequence[OrderKey], values: Sequence[Any]
) -> ColumnElement[bool]:
    """Rows strictly after `values` in the order of `keys`."""
    branches = []
    for i, (key, value) in enumerate(zip(keys, values, strict=True)):
        ties = [equals(k, v) for k, v in zip(keys[:i], values[:i], strict=True)]
        branches.append(and_(*ties, beyond(key, value)))
    return or_(*branches)


def equals(key: OrderKey, value: Any) -> ColumnElement[bool]:
    return key.column.is_(None) if value is None else key.column == value


def beyond(key: OrderKey, value: Any) -> ColumnElement[bool]:
    if value is None:  # NULL is lowest: after it come the values, ascending
        if key.descending or not key.nullable:
            return false()
        return key.column.is_not(None)
    if not key.descending:
        above: ColumnElement[bool] = key.column > value
        return above
    below: ColumnElement[bool] = key.column < value
    if key.nullable:
        return or_(below, key.column.is_(None))
    return below


def before(
    keys: Sequence[OrderKey], values: Sequence[Any]
) -> ColumnElement[bool]:
    """Rows strictly before `values`: `after` in the reversed order."""
    return after([key.reversed() for key in keys], values)


# --8<-- [end:keyset]


# --8<-- [start:cursor]
CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,2000}\.[A-Za-z0-9_-]{43}$")


def binding(sort: tuple[SortBy, ...], filters: ItemFilters) -> str:
    """What a cursor is valid for: this sort and these filters only."""
    both = {"sort": [asdict(k) for k in sort], "filters": asdict(filters)}
    text = json.dumps(both, default=str, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def to_b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def from_b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, body: str) -> str:
    return to_b64(hmac.new(key, body.encode(), hashlib.sha256).digest())


def make_cursor(key: bytes, bound_to: str, values: Sequence[Any]) -> str:
    """The sort values of a page's last row (as the database compared them)."""
    payload = {"b": bound_to, "v": [to_json(v) for v in values]}
    body = to_b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{sign(key, body)}"


def read_cursor(
    key: bytes, bound_to: str, sort: tuple[SortBy, ...], cursor: str
) -> list[Any]:
    if not CURSOR.match(cursor):
        raise BadCursorError("malformed cursor")
    body, _, signature = cursor.partition(".")
    if not hmac.compare_digest(signature, sign(key, body)):
        raise BadCursorError("cursor signature does not match")
    payload = json.loads(from_b64(body))
    if payload["b"] != bound_to:
        raise BadCursorError("this cursor was made for another sort or filter")
    return [
        from_json(k.field, v) for k, v in zip(sort, payload["v"], strict=True)
    ]


def to_json(value: Any) -> Any:
    if isinstance(value, Decimal | datetime):
        return str(value) if isinstance(value, Decimal) else value.isoformat()
    return value


def from_json(field: str, value: Any) -> Any:
    if value is None:
        return None
    if field == "price":
        return Decimal(value)
    if field in {"created_at", "updated_at"}:
        return datetime.fromisoformat(value)
    return value


# --8<-- [end:cursor]

"""Tables: items (soft-deleted, versioned), orders and their lines."""

# --8<-- [start:imports]
import unicodedata
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    TypeDecorator,
    func,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    mapped_column,
    orm_insert_sentinel,
    relationship,
)

# --8<-- [end:imports]


# --8<-- [start:types]
class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one")
        return value.astimezone(UTC)  # SQLite keeps no offset: store UTC

    def process_result_value(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite: we stored UTC, say so
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Money(TypeDecorator[Decimal]):
    """A Decimal with two places, stored as a whole number of cents.

    Exact on every backend, sorts as a number, and SQLite (which has no
    decimal type) never sees a float.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(
        self, value: Decimal | None, dialect: Dialect
    ) -> int | None:
        return None if value is None else int(value.scaleb(2))

    def process_result_value(
        self, value: int | None, dialect: Dialect
    ) -> Decimal | None:
        return None if value is None else Decimal(value).scaleb(-2)


def fold(text: str) -> str:
    """The search form of a text: Unicode-normalized and case-folded."""
    return unicodedata.normalize("NFKC", text).casefold()


def folded_name(context: DefaultExecutionContext) -> str:
    """On INSERT, `name_search` is the folded name (UPDATEs set it too)."""
    parameters = context.current_parameters or {}  # this row's values
    return fold(parameters["name"])


# --8<-- [end:types]


# --8<-- [start:item]
# Constraint names the error classifier and Alembic can rely on.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


STATUSES = ("draft", "active", "archived")


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_not_negative"),
        CheckConstraint("price >= 0", name="price_not_negative"),
        CheckConstraint(f"status IN {STATUSES}", name="known_status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    name_search: Mapped[str] = mapped_column(Text, default=folded_name)
    category: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(10))  # text: sorts as text
    price: Mapped[Decimal] = mapped_column(Money)
    stock: Mapped[int]
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Lets SQLite batch INSERT ... RETURNING and still return the rows in
    # input order (PostgreSQL does not need it). Never read or written by us.
    _sentinel: Mapped[int] = orm_insert_sentinel()


# A name is unique among live items only: a deleted item frees its name.
LIVE_NAME = Index(
    "uq_items_live_name",
    Item.name,
    unique=True,
    sqlite_where=Item.deleted_at.is_(None),
    postgresql_where=Item.deleted_at.is_(None),
)
# --8<-- [end:item]


# --8<-- [start:sort_indexes]
# One index per sortable field, ending with the tiebreaker: it hands rows
# over in the order of `sort=field` and of `sort=-field` (read backwards).
Index("ix_items_lower_name", func.lower(Item.name), Item.id)
Index(None, Item.category, Item.id)  # named by NAMING_CONVENTION
Index(None, Item.status, Item.id)
Index(None, Item.price, Item.id)
Index(None, Item.stock, Item.id)
Index(None, Item.created_at, Item.id)
Index(None, Item.updated_at, Item.id)
# --8<-- [end:sort_indexes]


# --8<-- [start:order]
class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lines: Mapped[list["OrderLine"]] = relationship(
        order_by="OrderLine.line_no", lazy="raise"
    )


class OrderLine(Base):
    __tablename__ = "order_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    line_no: Mapped[int]  # the position in the order, from 1
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    quantity: Mapped[int]
    unit_price: Mapped[Decimal] = mapped_column(Money)  # frozen at order time


# --8<-- [end:order]

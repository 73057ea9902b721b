"""Tables: items (soft-deleted, versioned), orders and their lines."""

# --8<-- [start:imports]
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    String,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    mapped_column,
    orm_insert_sentinel,
    relationship,
)
from sqlalchemy.types import TypeDecorator

# --8<-- [end:imports]


# --8<-- [start:types]
def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite would return them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        # SQLite stores text: one format, in UTC, so text order = time order
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


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


# --8<-- [end:types]


# --8<-- [start:item]
class Base(DeclarativeBase):
    pass


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
    category: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(10))  # text: sorts as text
    price: Mapped[Decimal] = mapped_column(Money)
    stock: Mapped[int]
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Lets SQLite batch INSERT ... RETURNING and still return the rows in
    # input order (PostgreSQL does not need it). Never read or written by us.
    _sentinel: Mapped[int] = orm_insert_sentinel()


# A name is unique among live items only: a deleted item frees its name.
Index(
    "uq_items_live_name",
    Item.name,
    unique=True,
    sqlite_where=Item.deleted_at.is_(None),
    postgresql_where=Item.deleted_at.is_(None),
)
Index("ix_items_category", Item.category, Item.id)
# --8<-- [end:item]


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

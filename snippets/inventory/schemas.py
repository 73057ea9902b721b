"""What the API accepts and returns: strict input, explicit output."""

# --8<-- [start:imports]
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from snippets.inventory.models import Order

# --8<-- [end:imports]


# --8<-- [start:fields]
MAX_INT = 2**31 - 1  # the largest value of an SQL INTEGER


def printable(value: str) -> str:
    # PostgreSQL refuses NUL in text, and a lone surrogate ("\ud800" in
    # JSON) cannot be encoded: both would fail as a 500 in the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    AfterValidator(printable),
]
Category = Annotated[
    str,
    StringConstraints(min_length=1, max_length=50),
    AfterValidator(printable),
]
Status = Literal["draft", "active", "archived"]
Price = Annotated[
    Decimal, Field(ge=0, lt=10**9, max_digits=11, decimal_places=2)
]
Stock = Annotated[int, Field(ge=0, le=MAX_INT)]
Version = Annotated[int, Field(ge=1, le=MAX_INT)]
Id = Annotated[int, Field(ge=1, le=MAX_INT)]
PriceBound = Annotated[
    Decimal, Field(ge=0, le=10**9, max_digits=12, decimal_places=2)
]
# --8<-- [end:fields]


# --8<-- [start:utc_datetime]
def to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError("out of range in UTC") from None


def iso_utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()  # "+00:00", never "Z"


# In: an offset is required, and the value is turned to UTC.
# Out: ISO 8601 with "+00:00".
UTCTimestamp = Annotated[
    AwareDatetime,
    AfterValidator(to_utc),
    PlainSerializer(iso_utc, return_type=str, when_used="json"),
]
# --8<-- [end:utc_datetime]


# --8<-- [start:patch]
def unchanged() -> Any:
    """The default of a PATCH field: it may be omitted, but not sent as null.

    `int | None` would let null through (and on to the database), and tell
    API clients that null is allowed. A plain `int` whose default is never
    validated refuses null, and the schema shows no default.
    """
    return Field(default=None, json_schema_extra=no_default)


def no_default(schema: dict[str, JsonValue]) -> None:
    schema.pop("default", None)


class PatchModel(BaseModel):
    """A partial update: omitted fields stay as they are; null is refused."""

    model_config = ConfigDict(extra="forbid")

    def changes(self) -> dict[str, Any]:
        """Only the fields the client sent."""
        return self.model_dump(exclude_unset=True)


# --8<-- [end:patch]


# --8<-- [start:item_schemas]
# The serializer's schema says only "string": the API's says what it is.
Timestamp = Annotated[
    UTCTimestamp,
    WithJsonSchema(
        {"type": "string", "format": "date-time"}, mode="serialization"
    ),
]


class ItemCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Blue mug",
                    "category": "kitchen",
                    "status": "active",
                    "price": "12.50",
                    "stock": 40,
                }
            ]
        },
    )

    name: Name
    category: Category
    status: Status = "draft"
    price: Price
    stock: Stock = 0


# --8<-- [end:item_schemas]


# --8<-- [start:item_patch]
class ItemChanges(PatchModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"price": "9.90", "stock": 12}]},
    )

    name: Name = unchanged()
    category: Category = unchanged()
    status: Status = unchanged()
    price: Price = unchanged()
    stock: Stock = unchanged()


ReadVersion = Annotated[
    int,
    Field(ge=1, le=MAX_INT, description="The version you read, if no If-Match"),
]


class ItemPatch(ItemChanges):
    version: ReadVersion = unchanged()

    def changes(self) -> dict[str, Any]:
        """The fields the client sent, but the proof of what it read."""
        return self.model_dump(exclude_unset=True, exclude={"version"})

    def proof(self) -> int | None:
        """The version the client says it read, if it sent one."""
        return self.version if "version" in self.model_fields_set else None


# --8<-- [end:item_patch]


# --8<-- [start:item_out]
ITEM_EXAMPLE: dict[str, JsonValue] = {
    "id": 1,
    "name": "Blue mug",
    "category": "kitchen",
    "status": "active",
    "price": "12.50",
    "stock": 40,
    "version": 1,
    "created_at": "2026-01-05T09:30:00+00:00",
    "updated_at": "2026-01-05T09:30:00+00:00",
}


def example(value: JsonValue) -> dict[str, JsonValue]:
    """A model's example, as OpenAPI shows it."""
    return {"examples": [value]}


class ItemOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True, json_schema_extra=example(ITEM_EXAMPLE)
    )

    id: int
    name: str
    category: str
    status: Status
    price: Decimal
    stock: int
    version: int
    created_at: Timestamp
    updated_at: Timestamp


class ItemPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=example(
            {"items": [ITEM_EXAMPLE], "total": 41, "limit": 20, "offset": 40}
        )
    )

    items: list[ItemOut]
    total: int
    limit: int
    offset: int


class KeysetPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=example(
            {"items": [ITEM_EXAMPLE], "next_cursor": None}
        )
    )

    items: list[ItemOut]
    next_cursor: str | None


# --8<-- [end:item_out]


# --8<-- [start:bulk_schemas]
class BulkCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=example(
            {
                "items": [
                    {"name": "Blue mug", "category": "kitchen", "price": "9"},
                    {"name": "Red mug", "category": "kitchen", "price": "8"},
                ]
            }
        ),
    )

    items: list[ItemCreate] = Field(min_length=1, max_length=1000)


class BulkCreated(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=example({"items": [ITEM_EXAMPLE]})
    )

    items: list[ItemOut]


class BulkPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=example(
            {
                "ids": [1, 2],
                "values": {"status": "archived"},
                "expected_versions": {"1": 3, "2": 1},
            }
        ),
    )

    ids: list[Id] = Field(min_length=1, max_length=1000)
    values: ItemChanges
    # Omitted (or {}): unchecked. null is refused: it is not an object.
    expected_versions: dict[Id, Version] = Field(
        default_factory=dict,
        max_length=1000,
        description="id -> the version you read; a stale one: 409",
    )

    @model_validator(mode="after")
    def versions_of_listed_ids(self) -> "BulkPatch":
        if unlisted := set(self.expected_versions) - set(self.ids):
            listed = ", ".join(map(str, sorted(unlisted)))
            raise ValueError(f"versions of ids not in `ids`: {listed}")
        return self


class BulkUpdated(BaseModel):
    model_config = ConfigDict(json_schema_extra=example({"updated": 2}))

    updated: int


# --8<-- [end:bulk_schemas]


# --8<-- [start:order_schemas]
class OrderLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: Id
    quantity: int = Field(ge=1, le=10**6)


class OrderIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"customer": "Ada", "lines": [{"item_id": 1, "quantity": 2}]}
            ]
        },
    )

    customer: Name
    lines: list[OrderLineIn] = Field(min_length=1, max_length=50)


class OrderLineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    item_id: int
    quantity: int
    unit_price: Decimal


class OrderOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra=example(
            {
                "id": 1,
                "customer": "Ada",
                "created_at": "2026-01-05T09:45:00+00:00",
                "lines": [{"item_id": 1, "quantity": 2, "unit_price": "12.50"}],
                "total": "25.00",
            }
        ),
    )

    id: int
    customer: str
    created_at: Timestamp
    lines: list[OrderLineOut]
    total: Decimal

    @classmethod
    def of(cls, order: Order) -> "OrderOut":
        lines = [OrderLineOut.model_validate(line) for line in order.lines]
        total = sum((ln.quantity * ln.unit_price for ln in lines), Decimal(0))
        return cls(
            id=order.id,
            customer=order.customer,
            created_at=order.created_at,
            lines=lines,
            total=total,
        )


# --8<-- [end:order_schemas]


# --8<-- [start:error_schemas]
class ErrorOut(BaseModel):
    detail: str


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrorOut(BaseModel):
    detail: list[ValidationIssue]


# --8<-- [end:error_schemas]

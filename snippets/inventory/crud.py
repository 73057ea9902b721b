"""The data layer: takes a session, never commits, raises domain errors."""

# --8<-- [start:imports]
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from snippets.inventory.database_errors import Problem, classify
from snippets.inventory.errors import (
    BadCursorError,
    ItemNotFoundError,
    NameTakenError,
    NotEnoughStockError,
    NotInTrashError,
    OrderNotFoundError,
    StaleItemsError,
    VersionMismatchError,
)
from snippets.inventory.listing import (
    ItemFilters,
    SortBy,
    after,
    binding,
    make_cursor,
    read_cursor,
)
from snippets.inventory.models import (
    LIVE_NAME,
    Base,
    Item,
    Order,
    OrderLine,
    fold,
    utcnow,
)
from snippets.inventory.schemas import ItemCreate, OrderLineIn

# --8<-- [end:imports]


# --8<-- [start:name_taken]
def takes_a_live_name(exc: IntegrityError) -> bool:
    """Only this violation means "name taken"; the others keep their own
    answer (a CHECK is a 422, a foreign key a 409 naming it)."""
    problem = classify(exc, Base.metadata)
    unique = problem.kind is Problem.UNIQUE
    return unique and problem.constraint == LIVE_NAME.name


def searchable(values: Mapping[str, Any]) -> dict[str, Any]:
    """Changes, with `name_search` kept in step with a new `name`."""
    if "name" not in values:
        return dict(values)
    return {**values, "name_search": fold(values["name"])}


# --8<-- [end:name_taken]


# --8<-- [start:create]
async def create_items(
    session: AsyncSession, new: Sequence[ItemCreate]
) -> list[Item]:
    """Insert all of them in one statement, in input order, or none."""
    names = [item.name for item in new]
    twice = [name for name, n in Counter(names).items() if n > 1]
    if twice:
        raise NameTakenError(*twice)
    taken = await session.scalars(select(Item.name).where(Item.name.in_(names)))
    if found := taken.all():
        raise NameTakenError(*found)
    now = utcnow()
    rows = [
        {**item.model_dump(), "created_at": now, "updated_at": now}
        for item in new
    ]
    statement = insert(Item).returning(Item, sort_by_parameter_order=True)
    try:
        return list((await session.scalars(statement, rows)).all())
    except IntegrityError as exc:  # another request took a name meanwhile?
        if takes_a_live_name(exc):
            raise NameTakenError() from exc
        raise


# --8<-- [end:create]


# --8<-- [start:read]
# Built once, at import: SQLAlchemy caches the SQL it compiles, not the
# statement, so building it in the function would cost every request.
ITEM_BY_ID = select(Item).where(Item.id == bindparam("item_id"))


async def get_item(session: AsyncSession, item_id: int) -> Item:
    item = await session.scalar(ITEM_BY_ID, {"item_id": item_id})
    if item is None:  # the session filter hides soft-deleted items
        raise ItemNotFoundError(item_id)
    return item


# --8<-- [end:read]


# --8<-- [start:update]
async def update_item(
    session: AsyncSession,
    item_id: int,
    changes: Mapping[str, Any],
    expected_version: int,
) -> Item:
    """Compare-and-swap: write only if the item is still at that version."""
    statement = (
        update(Item)
        .where(
            Item.id == item_id,
            Item.version == expected_version,
            Item.deleted_at.is_(None),
        )
        .values(
            **searchable(changes),
            version=Item.version + 1,
            updated_at=utcnow(),
        )
        .returning(Item)
    )
    try:
        item = (await session.scalars(statement)).one_or_none()
    except IntegrityError as exc:
        if takes_a_live_name(exc):
            raise NameTakenError(str(changes.get("name"))) from exc
        raise
    if item is None:  # missing, deleted, or at another version: which?
        current = await get_item(session, item_id)
        raise VersionMismatchError(item_id, expected_version, current.version)
    return item


# --8<-- [end:update]


# --8<-- [start:update_items]
async def update_items(
    session: AsyncSession,
    item_ids: Sequence[int],
    changes: Mapping[str, Any],
    expected_versions: Mapping[int, int],
) -> int:
    """The same changes to every item, or to none of them.

    `expected_versions` (id -> version read) may name some of the ids.
    """
    ids = sorted(set(item_ids))
    # Lock the rows in one order (id) for everyone: no deadlock between two
    # bulk updates. (SQLite has no FOR UPDATE: its writers queue instead.)
    locked = await session.execute(
        select(Item.id, Item.version)
        .where(Item.id.in_(ids))
        .order_by(Item.id)
        .with_for_update()
    )
    current: dict[int, int] = dict(locked.all())
    if missing := set(ids) - set(current):
        raise ItemNotFoundError(*missing)
    if stale := [i for i, v in expected_versions.items() if current[i] != v]:
        raise StaleItemsError(*stale)
    statement = (
        update(Item)
        .where(Item.id.in_(ids), Item.deleted_at.is_(None))
        .values(
            **searchable(changes),
            version=Item.version + 1,
            updated_at=utcnow(),
        )
        .returning(Item.id)
        .execution_options(synchronize_session=False)
    )
    try:
        updated = set((await session.scalars(statement)).all())
    except IntegrityError as exc:  # one name for several live items
        if takes_a_live_name(exc):
            raise NameTakenError(str(changes.get("name"))) from exc
        raise
    if missing := set(ids) - updated:  # deleted since we looked
        raise ItemNotFoundError(*missing)
    return len(ids)


# --8<-- [end:update_items]


# --8<-- [start:soft_delete]
async def delete_item(
    session: AsyncSession, item_id: int, expected_version: int | None = None
) -> None:
    """Soft delete; if `expected_version` is given, only at that version."""
    now = utcnow()
    statement = (
        update(Item)
        .where(Item.id == item_id, Item.deleted_at.is_(None))
        .values(deleted_at=now, updated_at=now, version=Item.version + 1)
        .returning(Item.id)
        .execution_options(synchronize_session=False)
    )
    if expected_version is not None:
        statement = statement.where(Item.version == expected_version)
    if await session.scalar(statement) is not None:
        return
    if expected_version is None:
        raise ItemNotFoundError(item_id)
    current = await get_item(session, item_id)  # gone: ItemNotFoundError
    raise VersionMismatchError(item_id, expected_version, current.version)


async def restore_item(
    session: AsyncSession, item_id: int, expected_version: int | None = None
) -> Item:
    """Back from the trash; if `expected_version` is given, only at that
    version (the one the trash shows)."""
    deleted = await session.scalar(
        select(Item)
        .where(Item.id == item_id, Item.deleted_at.is_not(None))
        .execution_options(include_deleted=True)
    )
    if deleted is None:
        raise NotInTrashError(item_id)
    if expected_version is not None and expected_version != deleted.version:
        raise VersionMismatchError(item_id, expected_version, deleted.version)
    statement = (
        update(Item)
        .where(
            Item.id == item_id,
            Item.deleted_at.is_not(None),
            Item.version == deleted.version,  # as read: not restored since
        )
        .values(deleted_at=None, updated_at=utcnow(), version=Item.version + 1)
        .returning(Item)
        .execution_options(populate_existing=True)
    )
    try:
        item = (await session.scalars(statement)).one_or_none()
    except IntegrityError as exc:  # a live item has its name now?
        if takes_a_live_name(exc):
            raise NameTakenError(deleted.name) from exc
        raise
    if item is None:  # restored by someone else meanwhile
        raise NotInTrashError(item_id)
    return item


# --8<-- [end:soft_delete]


# --8<-- [start:list]
async def list_items(
    session: AsyncSession,
    filters: ItemFilters,
    sort: tuple[SortBy, ...],
    limit: int,
    offset: int,
    *,
    trash: bool = False,
) -> tuple[list[Item], int]:
    """One page of items, and how many match in all: one statement."""
    where = filters.conditions()
    if trash:
        where.append(Item.deleted_at.is_not(None))
    options = {"include_deleted": trash}
    # Uncorrelated: counted once for the statement, not once per row.
    count = select(func.count(Item.id)).where(*where).correlate(None)
    rows = (
        await session.execute(
            select(Item, count.scalar_subquery())
            .where(*where)
            .order_by(*(by.key().order_by() for by in sort))
            .limit(limit)
            .offset(offset)
            .execution_options(**options)
        )
    ).all()
    if rows:
        return [item for item, _ in rows], rows[0][1]
    # A page past the end has no row to carry the total: count alone.
    total = await session.scalar(count.execution_options(**options))
    return [], int(total or 0)


async def keyset_page(
    session: AsyncSession,
    filters: ItemFilters,
    sort: tuple[SortBy, ...],
    limit: int,
    *,
    cursor: str | None,
    key: bytes,
) -> tuple[list[Item], str | None]:
    """One page after `cursor`, and the cursor of the next page (or None)."""
    bound_to = binding(sort, filters)
    keys = [by.key() for by in sort]
    # The sort values themselves (lower(name), not name) go in the cursor.
    query = select(Item, *(k.column for k in keys)).where(*filters.conditions())
    if cursor is not None:
        try:
            values = read_cursor(key, bound_to, sort, cursor)
        except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
            raise BadCursorError("unreadable cursor") from exc
        query = query.where(after(keys, values))
    query = query.order_by(*(k.order_by() for k in keys)).limit(limit + 1)
    rows = (await session.execute(query)).all()
    page = rows[:limit]
    items = [row[0] for row in page]
    if len(rows) <= limit:  # nothing after this page
        return items, None
    return items, make_cursor(key, bound_to, tuple(page[-1])[1:])


# --8<-- [end:list]


# --8<-- [start:orders]
async def create_order(
    session: AsyncSession, customer: str, lines: Sequence[OrderLineIn]
) -> Order:
    """Take the stock of every line, and record the order: all or nothing."""
    wanted: Counter[int] = Counter()
    for line in lines:  # an item on several lines: check it against the sum
        wanted[line.item_id] += line.quantity
    now, prices = utcnow(), {}
    for item_id in sorted(wanted):  # one lock order for all: no deadlock
        quantity = wanted[item_id]
        price = await session.scalar(
            update(Item)
            .where(
                Item.id == item_id,
                Item.deleted_at.is_(None),
                Item.stock >= quantity,  # the check and the write: one step
            )
            .values(
                stock=Item.stock - quantity,
                version=Item.version + 1,
                updated_at=now,
            )
            .returning(Item.price)
            .execution_options(synchronize_session=False)
        )
        if price is None:
            await get_item(session, item_id)  # not live: ItemNotFoundError
            raise NotEnoughStockError(item_id, quantity)
        prices[item_id] = price
    order = Order(customer=customer, created_at=now)
    order.lines = [
        OrderLine(
            line_no=number,
            item_id=line.item_id,
            quantity=line.quantity,
            unit_price=prices[line.item_id],
        )
        for number, line in enumerate(lines, 1)
    ]
    session.add(order)
    await session.flush()
    return order


async def get_order(session: AsyncSession, order_id: int) -> Order:
    order = await session.scalar(
        select(Order)
        .where(Order.id == order_id)
        .options(selectinload(Order.lines))
    )
    if order is None:
        raise OrderNotFoundError(order_id)
    return order


# --8<-- [end:orders]

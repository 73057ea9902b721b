"""Routes for /items: validate, call the data layer, map its errors."""

# --8<-- [start:imports]
import re
from typing import Annotated

from fastapi import (
    APIRouter,
    Depends,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    status,
)

from snippets.inventory import crud
from snippets.inventory.database import SessionDep
from snippets.inventory.errors import (
    BadCursor,
    ItemNotFound,
    NameTaken,
    NotInTrash,
    VersionMismatch,
)
from snippets.inventory.http_errors import (
    ETAG,
    INVALID,
    NO_PRECONDITION,
    UNPARSABLE,
    documented,
    invalid,
)
from snippets.inventory.listing import (
    SORT_PATTERN,
    ItemFilters,
    SortKey,
    parse_sort,
)
from snippets.inventory.models import Item
from snippets.inventory.schemas import (
    MAX_INT,
    BulkCreate,
    BulkCreated,
    BulkPatch,
    BulkUpdated,
    Category,
    ItemCreate,
    ItemOut,
    ItemPage,
    ItemPatch,
    KeysetPage,
    Moment,
    Name,
    PriceBound,
    Status,
)

router = APIRouter(prefix="/items", tags=["items"])
# --8<-- [end:imports]


# --8<-- [start:parameters]
ItemId = Annotated[
    int, Path(ge=1, le=MAX_INT, description="The item's id", examples=[1])
]
Limit = Annotated[
    int, Query(ge=1, le=100, description="Items per page", examples=[20])
]
Offset = Annotated[
    int, Query(ge=0, le=10**6, description="Items to skip", examples=[40])
]
Statuses = Annotated[
    list[Status] | None,
    Query(max_length=10, description="Any of these", examples=[["active"]]),
]
Categories = Annotated[
    list[Category] | None,
    Query(max_length=100, description="Any of these", examples=[["kitchen"]]),
]
MinPrice = Annotated[
    PriceBound | None,
    Query(description="Lowest price, included", examples=["5.00"]),
]
MaxPrice = Annotated[
    PriceBound | None,
    Query(description="Highest price, included", examples=["20.00"]),
]
Search = Annotated[
    Name | None,
    Query(description="Part of the name, any case", examples=["mug"]),
]
After = Annotated[
    Moment | None,
    Query(
        description="Created at or after (with a time zone)",
        examples=["2026-01-01T00:00:00+00:00"],
    ),
]
Before = Annotated[
    Moment | None,
    Query(
        description="Created before (with a time zone)",
        examples=["2026-02-01T00:00:00+00:00"],
    ),
]


def item_filters(
    *,
    status: Statuses = None,
    category: Categories = None,
    min_price: MinPrice = None,
    max_price: MaxPrice = None,
    q: Search = None,
    created_after: After = None,
    created_before: Before = None,
) -> ItemFilters:
    if (
        min_price is not None
        and max_price is not None
        and min_price > max_price
    ):
        raise invalid(
            "query", "min_price", "is above max_price", str(min_price)
        )
    return ItemFilters(
        status=tuple(status or ()),
        category=tuple(category or ()),
        min_price=min_price,
        max_price=max_price,
        q=q,
        created_after=created_after,
        created_before=created_before,
    )


def sort_keys(
    sort: Annotated[
        str,
        Query(
            pattern=SORT_PATTERN,
            description="Fields, comma-separated; `-` for descending",
            examples=["-price,name"],
        ),
    ] = "id",
) -> tuple[SortKey, ...]:
    try:
        return parse_sort(sort)
    except ValueError as exc:
        raise invalid("query", "sort", str(exc), sort) from None


Filters = Annotated[ItemFilters, Depends(item_filters)]
Sort = Annotated[tuple[SortKey, ...], Depends(sort_keys)]


def with_etag(response: Response, item: Item) -> ItemOut:
    response.headers["ETag"] = f'"{item.version}"'
    return ItemOut.model_validate(item)


def error(code: int, exc: Exception) -> HTTPException:
    return HTTPException(status_code=code, detail=str(exc))


# --8<-- [end:parameters]


# --8<-- [start:collection]
@router.get("", responses=documented({422: INVALID}), summary="List live items")
async def list_items(
    session: SessionDep,
    filters: Filters,
    sort: Sort,
    limit: Limit = 20,
    offset: Offset = 0,
) -> ItemPage:
    items, total = await crud.list_items(session, filters, sort, limit, offset)
    return ItemPage(
        items=[ItemOut.model_validate(i) for i in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/deleted",
    responses=documented({422: INVALID}),
    summary="List the trash: soft-deleted items",
)
async def list_deleted_items(
    session: SessionDep,
    filters: Filters,
    sort: Sort,
    limit: Limit = 20,
    offset: Offset = 0,
) -> ItemPage:
    items, total = await crud.list_items(
        session, filters, sort, limit, offset, trash=True
    )
    return ItemPage(
        items=[ItemOut.model_validate(i) for i in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/keyset",
    responses=documented(
        {
            400: "The cursor is empty, altered, or for another query",
            422: INVALID,
        },
        examples={400: str(BadCursor("cursor signature does not match"))},
    ),
    summary="List live items, page after page, with a cursor",
)
async def list_items_keyset(
    *,
    request: Request,
    session: SessionDep,
    filters: Filters,
    sort: Sort,
    limit: Limit = 20,
    cursor: Annotated[
        str | None,
        Query(
            description="`next_cursor` of the previous page (opaque, signed)",
            examples=["eyJiIjoiMGRkMzNmNmQ3ZmQ1ZjBmMyIsInYiOls3XX0.6jW0aT2bVQ"],
        ),
    ] = None,
) -> KeysetPage:
    key = request.app.state.settings.cursor_key
    try:
        items, next_cursor = await crud.keyset_page(
            session, filters, sort, limit, cursor=cursor, key=key
        )
    except BadCursor as exc:
        raise error(status.HTTP_400_BAD_REQUEST, exc) from exc
    return KeysetPage(
        items=[ItemOut.model_validate(i) for i in items],
        next_cursor=next_cursor,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {"headers": ETAG},
        **documented(
            {400: UNPARSABLE, 409: "A live item has this name", 422: INVALID}
        ),
    },
    summary="Create an item",
)
async def create_item(
    item: ItemCreate, session: SessionDep, response: Response
) -> ItemOut:
    try:
        [created] = await crud.create_items(session, [item])
    except NameTaken as exc:
        raise error(status.HTTP_409_CONFLICT, exc) from exc
    return with_etag(response, created)


# --8<-- [end:collection]


# --8<-- [start:bulk]
@router.post(
    "/bulk",
    status_code=status.HTTP_201_CREATED,
    responses=documented(
        {
            400: UNPARSABLE,
            409: "A name is used twice, or by a live item: nothing created",
            422: INVALID + "; nothing created",
        }
    ),
    summary="Create items: all or none",
)
async def create_items(body: BulkCreate, session: SessionDep) -> BulkCreated:
    try:
        items = await crud.create_items(session, body.items)
    except NameTaken as exc:
        raise error(status.HTTP_409_CONFLICT, exc) from exc
    return BulkCreated(items=[ItemOut.model_validate(i) for i in items])


@router.patch(
    "/bulk",
    responses=documented(
        {
            400: UNPARSABLE,
            404: "Some ids are unknown or deleted (listed): nothing changed",
            409: "The new name is used by another live item",
            422: INVALID,
        }
    ),
    summary="Apply the same changes to several items: all or none",
)
async def update_items(body: BulkPatch, session: SessionDep) -> BulkUpdated:
    try:
        updated = await crud.update_items(
            session, body.ids, body.values.changes()
        )
    except ItemNotFound as exc:
        raise error(status.HTTP_404_NOT_FOUND, exc) from exc
    except NameTaken as exc:
        raise error(status.HTTP_409_CONFLICT, exc) from exc
    return BulkUpdated(updated=updated)


# --8<-- [end:bulk]


# --8<-- [start:item]
@router.get(
    "/{item_id}",
    responses={
        200: {"headers": ETAG},
        **documented({404: "No live item has this id", 422: INVALID}),
    },
    summary="Read an item; its ETag is its version",
)
async def read_item(
    item_id: ItemId, session: SessionDep, response: Response
) -> ItemOut:
    try:
        return with_etag(response, await crud.get_item(session, item_id))
    except ItemNotFound as exc:
        raise error(status.HTTP_404_NOT_FOUND, exc) from exc


def parse_if_match(value: str) -> int:
    """The version named by `If-Match: "3"`; 0 (matches nothing) otherwise."""
    match = re.fullmatch(r'\s*"([1-9][0-9]{0,9})"\s*', value)
    version = int(match.group(1)) if match else 0
    return version if version <= MAX_INT else 0


@router.patch(
    "/{item_id}",
    responses={
        200: {"headers": ETAG},
        **documented(
            {
                400: UNPARSABLE,
                404: "No live item has this id",
                409: "Stale body `version`, or the name is taken",
                412: "Stale `If-Match`: the item changed since you read it",
                422: INVALID,
                428: "Send `If-Match` (or `version`) with what you read",
            }
        ),
    },
    summary="Change some fields of an item, if it is still as you read it",
)
async def update_item(
    item_id: ItemId,
    patch: ItemPatch,
    session: SessionDep,
    response: Response,
    if_match: Annotated[
        str | None,
        Header(description='The ETag you read: `"3"`', examples=['"3"']),
    ] = None,
) -> ItemOut:
    if if_match is not None:  # checked first when both are sent
        expected, stale = parse_if_match(if_match), 412
    elif (version := patch.proof()) is not None:
        expected, stale = version, status.HTTP_409_CONFLICT
    else:
        raise HTTPException(428, NO_PRECONDITION)
    try:
        item = await crud.update_item(
            session, item_id, patch.changes(), expected
        )
    except ItemNotFound as exc:
        raise error(status.HTTP_404_NOT_FOUND, exc) from exc
    except VersionMismatch as exc:
        raise error(stale, exc) from exc
    except NameTaken as exc:
        raise error(status.HTTP_409_CONFLICT, exc) from exc
    return with_etag(response, item)


@router.delete(
    "/{item_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=documented({404: "No live item has this id", 422: INVALID}),
    summary="Move an item to the trash (soft delete)",
)
async def delete_item(item_id: ItemId, session: SessionDep) -> None:
    try:
        await crud.delete_item(session, item_id)
    except ItemNotFound as exc:
        raise error(status.HTTP_404_NOT_FOUND, exc) from exc


@router.post(
    "/{item_id}/restore",
    responses={
        200: {"headers": ETAG},
        **documented(
            {
                404: "No item with this id is in the trash",
                409: "A live item has taken its name",
                422: INVALID,
            },
            examples={404: str(NotInTrash(7))},
        ),
    },
    summary="Bring an item back from the trash",
)
async def restore_item(
    item_id: ItemId, session: SessionDep, response: Response
) -> ItemOut:
    try:
        return with_etag(response, await crud.restore_item(session, item_id))
    except NotInTrash as exc:
        raise error(status.HTTP_404_NOT_FOUND, exc) from exc
    except NameTaken as exc:
        raise error(status.HTTP_409_CONFLICT, exc) from exc


# --8<-- [end:item]

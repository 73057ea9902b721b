"""Routes for /items: validate, call the data layer, shape the answer."""

# --8<-- [start:imports]
import re
from collections.abc import Iterator
from contextlib import contextmanager
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
from fastapi.responses import StreamingResponse

from snippets.inventory import crud
from snippets.inventory.database import (
    OneStatementSessionDep,
    ReadSessionDep,
    ReadSessionFactoryDep,
    SessionDep,
)
from snippets.inventory.errors import (
    BadCursorError,
    ItemNotFoundError,
    NameTakenError,
    NotInTrashError,
    StaleItemsError,
    VersionMismatchError,
)
from snippets.inventory.export import (
    MEDIA_TYPES,
    Format,
    export_item_lines,
)
from snippets.inventory.http_errors import (
    ETAG,
    INVALID,
    NO_PRECONDITION,
    STALE_IF_MATCH,
    UNPARSABLE,
    documented,
    invalid,
)
from snippets.inventory.listing import (
    SORT_PATTERN,
    ItemFilters,
    SortBy,
    parse_item_sort,
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
    Name,
    PriceBound,
    Status,
    UTCTimestamp,
)
from snippets.inventory.settings import Settings

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
    UTCTimestamp | None,
    Query(
        description="Created at or after (with a time zone)",
        examples=["2026-01-01T00:00:00+00:00"],
    ),
]
Before = Annotated[
    UTCTimestamp | None,
    Query(
        description="Created before (with a time zone)",
        examples=["2026-02-01T00:00:00+00:00"],
    ),
]
IfMatch = Annotated[
    str | None,
    Header(description='The ETag you read: `"3"`', examples=['"3"']),
]
IfNoneMatch = Annotated[
    str | None,
    Header(description='The ETag you have: `"3"`', examples=['"3"']),
]


# --8<-- [end:parameters]


# --8<-- [start:dependencies]
# async def, though nothing is awaited: FastAPI runs a plain `def`
# dependency in a worker thread, a thread hop on every list request.
async def item_filters(
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


async def item_sort(
    sort: Annotated[
        str,
        Query(
            pattern=SORT_PATTERN,
            description="Fields, comma-separated; `-` for descending",
            examples=["-price,name"],
        ),
    ] = "id",
) -> tuple[SortBy, ...]:
    try:
        return parse_item_sort(sort)
    except ValueError as exc:
        raise invalid("query", "sort", str(exc), sort) from None


async def cursor_key(request: Request) -> bytes:
    settings: Settings = request.app.state.settings
    return settings.cursor_key


Filters = Annotated[ItemFilters, Depends(item_filters)]
Sort = Annotated[tuple[SortBy, ...], Depends(item_sort)]
CursorKey = Annotated[bytes, Depends(cursor_key)]


def etag(item: Item) -> str:
    return f'"{item.version}"'


def with_etag(response: Response, item: Item) -> ItemOut:
    response.headers["ETag"] = etag(item)
    return ItemOut.model_validate(item)


# --8<-- [end:dependencies]


# --8<-- [start:collection]
@router.get(
    "", responses=documented(codes={422: INVALID}), summary="List live items"
)
async def list_items(
    session: ReadSessionDep,
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
    responses=documented(codes={422: INVALID}),
    summary="List the trash: soft-deleted items",
)
async def list_deleted_items(
    session: ReadSessionDep,
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


# --8<-- [end:collection]


# --8<-- [start:keyset_route]
@router.get(
    "/keyset",
    responses=documented(BadCursorError, codes={422: INVALID}),
    summary="List live items, page after page, with a cursor",
)
async def list_items_keyset(
    *,
    session: ReadSessionDep,
    key: CursorKey,
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
    items, next_cursor = await crud.keyset_page(
        session, filters, sort, limit, cursor=cursor, key=key
    )
    return KeysetPage(
        items=[ItemOut.model_validate(i) for i in items],
        next_cursor=next_cursor,
    )


# --8<-- [end:keyset_route]


# --8<-- [start:export_route]
# Declared before /{item_id}: "export" is not an id.
@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Every matching live item, in id order, streamed",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        },
        **documented(codes={422: INVALID}),
    },
    summary="Export live items as CSV or NDJSON, streamed",
)
async def export_items(
    *,
    read_sessions: ReadSessionFactoryDep,
    filters: Filters,
    fmt: Annotated[
        Format,
        Query(
            alias="format",
            description="`csv` (a header row, then one row per item) or"
            " `ndjson` (one item per line, as `GET /items/{id}` has it)",
            examples=["ndjson"],
        ),
    ] = "csv",
) -> StreamingResponse:
    lines = export_item_lines(read_sessions, fmt, filters)
    return StreamingResponse(lines, media_type=MEDIA_TYPES[fmt])


# --8<-- [end:export_route]


# --8<-- [start:create]
@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {"headers": ETAG},
        **documented(NameTakenError, codes={400: UNPARSABLE, 422: INVALID}),
    },
    summary="Create an item",
)
async def create_item(
    item: ItemCreate, session: SessionDep, response: Response
) -> ItemOut:
    [created] = await crud.create_items(session, [item])
    return with_etag(response, created)


# --8<-- [end:create]


# --8<-- [start:bulk]
@router.post(
    "/bulk",
    status_code=status.HTTP_201_CREATED,
    responses=documented(
        NameTakenError,
        codes={400: UNPARSABLE, 422: INVALID + "; nothing created"},
    ),
    summary="Create items: all or none",
)
async def create_items(body: BulkCreate, session: SessionDep) -> BulkCreated:
    items = await crud.create_items(session, body.items)
    return BulkCreated(items=[ItemOut.model_validate(i) for i in items])


@router.patch(
    "/bulk",
    responses=documented(
        ItemNotFoundError,
        NameTakenError,
        StaleItemsError,
        codes={400: UNPARSABLE, 422: INVALID},
    ),
    summary="Apply the same changes to several items: all or none",
)
async def update_items(body: BulkPatch, session: SessionDep) -> BulkUpdated:
    updated = await crud.update_items(
        session, body.ids, body.values.changes(), body.expected_versions
    )
    return BulkUpdated(updated=updated)


# --8<-- [end:bulk]


# --8<-- [start:conditional]
def parse_if_match(value: str) -> int:
    """The version named by `If-Match: "3"`; 0 (matches nothing) otherwise."""
    match = re.fullmatch(r'\s*"([1-9][0-9]{0,9})"\s*', value)
    version = int(match.group(1)) if match else 0
    return version if version <= MAX_INT else 0


def none_match(value: str, current: str) -> bool:
    """False when `If-None-Match` names the current ETag (weakly, or *)."""
    tags = [tag.strip().removeprefix("W/") for tag in value.split(",")]
    return "*" not in tags and current not in tags


@contextmanager
def precondition(if_match: str | None) -> Iterator[None]:
    """A stale version is 412 when the client sent If-Match (else 409)."""
    try:
        yield
    except VersionMismatchError as exc:
        if if_match is None:
            raise
        raise HTTPException(412, str(exc)) from exc


# --8<-- [end:conditional]


# --8<-- [start:item]
@router.get(
    "/{item_id}",
    response_model=ItemOut,
    responses={
        200: {"headers": ETAG},
        304: {"description": "Not modified: `If-None-Match` is current"},
        **documented(ItemNotFoundError, codes={422: INVALID}),
    },
    summary="Read an item; its ETag is its version",
)
async def read_item(
    item_id: ItemId,
    session: OneStatementSessionDep,
    response: Response,
    if_none_match: IfNoneMatch = None,
) -> ItemOut | Response:
    item = await crud.get_item(session, item_id)
    if if_none_match is not None and not none_match(if_none_match, etag(item)):
        return Response(status_code=304, headers={"ETag": etag(item)})
    return with_etag(response, item)


# --8<-- [end:item]


# --8<-- [start:update]
@router.patch(
    "/{item_id}",
    responses={
        200: {"headers": ETAG},
        **documented(
            ItemNotFoundError,
            NameTakenError,
            VersionMismatchError,
            codes={
                400: UNPARSABLE,
                412: STALE_IF_MATCH,
                422: INVALID,
                428: "Send `If-Match` (or `version`) with what you read",
            },
        ),
    },
    summary="Change some fields of an item, if it is still as you read it",
)
async def update_item(
    item_id: ItemId,
    patch: ItemPatch,
    session: SessionDep,
    response: Response,
    if_match: IfMatch = None,
) -> ItemOut:
    if if_match is not None:  # checked first when both are sent
        expected = parse_if_match(if_match)
    elif (version := patch.proof()) is not None:
        expected = version
    else:
        raise HTTPException(428, NO_PRECONDITION)
    with precondition(if_match):
        item = await crud.update_item(
            session, item_id, patch.changes(), expected
        )
    return with_etag(response, item)


# --8<-- [end:update]


# --8<-- [start:delete_restore]
@router.delete(
    "/{item_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=documented(
        ItemNotFoundError, codes={412: STALE_IF_MATCH, 422: INVALID}
    ),
    summary="Move an item to the trash (soft delete)",
)
async def delete_item(
    item_id: ItemId, session: SessionDep, if_match: IfMatch = None
) -> None:
    expected = None if if_match is None else parse_if_match(if_match)
    with precondition(if_match):
        await crud.delete_item(session, item_id, expected)


@router.post(
    "/{item_id}/restore",
    responses={
        200: {"headers": ETAG},
        **documented(
            NotInTrashError,
            NameTakenError,
            codes={412: STALE_IF_MATCH, 422: INVALID},
        ),
    },
    summary="Bring an item back from the trash",
)
async def restore_item(
    item_id: ItemId,
    session: SessionDep,
    response: Response,
    if_match: IfMatch = None,
) -> ItemOut:
    expected = None if if_match is None else parse_if_match(if_match)
    with precondition(if_match):
        item = await crud.restore_item(session, item_id, expected)
    return with_etag(response, item)


# --8<-- [end:delete_restore]

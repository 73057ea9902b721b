"""Routes for /orders."""

# --8<-- [start:orders]
from typing import Annotated

from fastapi import APIRouter, Header, Path, status
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from snippets.inventory import crud
from snippets.inventory.database import ReadSessionDep, SessionFactoryDep
from snippets.inventory.errors import (
    ItemNotFoundError,
    KeyMismatchError,
    NotEnoughStockError,
    OrderNotFoundError,
)
from snippets.inventory.http_errors import (
    INVALID,
    STATUS,
    UNPARSABLE,
    documented,
    invalid,
)
from snippets.inventory.idempotency import (
    KEY_TTL,
    Reply,
    claim_order_key,
    fingerprint_of,
    run_retrying,
    store_reply,
)
from snippets.inventory.schemas import MAX_INT, OrderIn, OrderOut

router = APIRouter(prefix="/orders", tags=["orders"])
OrderId = Annotated[
    int, Path(ge=1, le=MAX_INT, description="The order's id", examples=[1])
]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x20-\x7e]+$",  # printable ASCII
        description=(
            "Send the same key to retry safely: the same body gets the first"
            " answer again, never a second order. Kept"
            f" {KEY_TTL.total_seconds() / 3600:g} hours."
        ),
        examples=["order-2026-01-05-ada-1"],
    ),
]
KEY_REUSED = f"{INVALID}; or an `Idempotency-Key` reused, other body"


async def order_once(
    session: AsyncSession, key: str | None, order: OrderIn
) -> Reply:
    """The order and its key: one unit of work (the page's pay_once)."""
    fingerprint = fingerprint_of(order)
    if key is not None and (
        stored := await claim_order_key(session, key, fingerprint)
    ):
        return stored  # the first request's answer, whatever it was
    try:
        async with session.begin_nested():  # the stock moves, or none does
            created = await crud.create_order(
                session, order.customer, order.lines
            )
            out = OrderOut.of(created).model_dump(mode="json")
        reply = Reply(status.HTTP_201_CREATED, out)
    except (ItemNotFoundError, NotEnoughStockError) as exc:
        reply = Reply(STATUS[type(exc)], {"detail": str(exc)})  # kept too
    if key is not None:
        await store_reply(session, key, reply)
    return reply


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderOut,
    responses=documented(
        ItemNotFoundError,
        NotEnoughStockError,
        codes={400: UNPARSABLE, 422: KEY_REUSED},
    ),
    summary="Place an order: take the stock and record it, all or nothing",
)
async def create_order(
    order: OrderIn,
    sessions: SessionFactoryDep,
    key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def work(session: AsyncSession) -> Reply:
        return await order_once(session, key, order)

    try:
        reply = await run_retrying(sessions, work)  # commits before replying
    except KeyMismatchError as exc:
        raise invalid("header", "Idempotency-Key", str(exc), key) from None
    return JSONResponse(reply.body, status_code=reply.status_code)


@router.get(
    "/{order_id}",
    responses=documented(OrderNotFoundError, codes={422: INVALID}),
    summary="Read an order",
)
async def read_order(order_id: OrderId, session: ReadSessionDep) -> OrderOut:
    return OrderOut.of(await crud.get_order(session, order_id))


# --8<-- [end:orders]

"""Routes for /orders."""

# --8<-- [start:orders]
from typing import Annotated

from fastapi import APIRouter, Path, status

from snippets.inventory import crud
from snippets.inventory.database import ReadSessionDep, SessionDep
from snippets.inventory.errors import (
    ItemNotFoundError,
    NotEnoughStockError,
    OrderNotFoundError,
)
from snippets.inventory.http_errors import INVALID, UNPARSABLE, documented
from snippets.inventory.schemas import MAX_INT, OrderIn, OrderOut

router = APIRouter(prefix="/orders", tags=["orders"])
OrderId = Annotated[
    int, Path(ge=1, le=MAX_INT, description="The order's id", examples=[1])
]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=documented(
        ItemNotFoundError,
        NotEnoughStockError,
        codes={400: UNPARSABLE, 422: INVALID},
    ),
    summary="Place an order: take the stock and record it, all or nothing",
)
async def create_order(order: OrderIn, session: SessionDep) -> OrderOut:
    created = await crud.create_order(session, order.customer, order.lines)
    return OrderOut.of(created)


@router.get(
    "/{order_id}",
    responses=documented(OrderNotFoundError, codes={422: INVALID}),
    summary="Read an order",
)
async def read_order(order_id: OrderId, session: ReadSessionDep) -> OrderOut:
    return OrderOut.of(await crud.get_order(session, order_id))


# --8<-- [end:orders]

"""Routes for /orders."""

# --8<-- [start:orders]
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from snippets.inventory import crud
from snippets.inventory.database import SessionDep
from snippets.inventory.errors import (
    ItemNotFound,
    NotEnoughStock,
    OrderNotFound,
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
        {
            400: UNPARSABLE,
            404: "An item is unknown or deleted: nothing was stored",
            409: "Not enough stock for an item: nothing was stored",
            422: INVALID,
        },
        examples={409: str(NotEnoughStock(7, 5))},
    ),
    summary="Place an order: take the stock and record it, all or nothing",
)
async def create_order(order: OrderIn, session: SessionDep) -> OrderOut:
    try:
        created = await crud.create_order(session, order.customer, order.lines)
    except ItemNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except NotEnoughStock as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return OrderOut.of(created)


@router.get(
    "/{order_id}",
    responses=documented(
        {404: "No order has this id", 422: INVALID},
        examples={404: str(OrderNotFound(7))},
    ),
    summary="Read an order",
)
async def read_order(order_id: OrderId, session: SessionDep) -> OrderOut:
    try:
        return OrderOut.of(await crud.get_order(session, order_id))
    except OrderNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


# --8<-- [end:orders]

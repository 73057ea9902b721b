"""The export: every matching item, streamed as CSV or NDJSON."""

# --8<-- [start:imports]
import csv
import io
from collections.abc import AsyncIterator, Iterable
from typing import Literal

from sqlalchemy import select

from snippets.inventory.database import Sessions
from snippets.inventory.listing import ItemFilters
from snippets.inventory.models import Item
from snippets.inventory.schemas import ItemOut

# --8<-- [end:imports]


# --8<-- [start:export]
Format = Literal["csv", "ndjson"]
MEDIA_TYPES: dict[Format, str] = {
    "csv": "text/csv; charset=utf-8",
    "ndjson": "application/x-ndjson",
}
FIELDS = tuple(ItemOut.model_fields)  # the columns: GET /items/{id}'s keys


async def export_item_lines(
    sessions: Sessions, fmt: Format, filters: ItemFilters
) -> AsyncIterator[str]:
    """The page's export_lines, with the listing's filters and ItemOut.

    Live items in id order, 1,000 rows in memory at a time, in a session of
    its own: the request's is closed before a streamed body is sent. Leaving
    the `async with` (the end, an error, or a client that went away)
    returns the connection to the pool.
    """
    query = (
        select(Item)  # the session's filter hides deleted items
        .where(*filters.conditions())
        .order_by(Item.id)
        .execution_options(yield_per=1000)
    )
    async with sessions() as session:
        if fmt == "csv":
            yield csv_line(FIELDS)
        async for item in await session.stream_scalars(query):
            out = ItemOut.model_validate(item)  # the shape of GET /items/{id}
            if fmt == "csv":
                yield csv_line(out.model_dump(mode="json").values())
            else:
                yield out.model_dump_json() + "\n"


def csv_line(values: Iterable[object]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(values)  # quotes commas, quotes, newlines
    return out.getvalue()


# --8<-- [end:export]

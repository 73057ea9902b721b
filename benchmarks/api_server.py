"""The reference API plus a no-database route, served by uvicorn (for api.py).

BENCH_UNFREEZE_GC=1 undoes the lifespan's gc.freeze() once start-up is done:
the same app as the collector would see it without that line.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from snippets.inventory import create_app

app = create_app()

if os.environ.get("BENCH_UNFREEZE_GC") == "1":
    frozen = app.router.lifespan_context

    @asynccontextmanager
    async def unfrozen(app: FastAPI) -> AsyncIterator[Any]:
        async with frozen(app) as state:
            gc.unfreeze()
            yield state

    app.router.lifespan_context = unfrozen


@app.get("/bench/const/{item_id}", include_in_schema=False)
async def const(item_id: int) -> dict[str, object]:
    return {"id": item_id, "name": "constant", "price": "9.99", "stock": 10}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")

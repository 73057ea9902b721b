"""The reference API plus a no-database route, served by uvicorn (for api.py)."""

from __future__ import annotations

import sys

import uvicorn

from snippets.inventory import create_app

app = create_app()


@app.get("/bench/const/{item_id}", include_in_schema=False)
async def const(item_id: int) -> dict[str, object]:
    return {"id": item_id, "name": "constant", "price": "9.99", "stock": 10}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")

"""Serve one app of the peers benchmark under uvicorn (for __main__.py).

    python -m benchmarks.peers.server MODULE PORT    # DATABASE_URL in env

Each app also gets a route that touches no database, so each is measured
beside its own limit: the same framework, middleware and server.
"""

from __future__ import annotations

import importlib
import sys

import uvicorn


def main() -> None:
    module, port = sys.argv[1], int(sys.argv[2])
    app = importlib.import_module(f"benchmarks.peers.{module}").app

    @app.get("/bench/const/{item_id}", include_in_schema=False)
    async def const(item_id: int) -> dict[str, object]:
        return {"id": item_id, "name": "constant", "price": "9.99", "stock": 10}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()

"""Property-based fuzzing of the reference API from its own OpenAPI schema.

Schemathesis generates valid and invalid requests for every operation and
sends them in process. A 5xx, an
undocumented status code, or a response that violates its documented schema
fails the test. SQLite only: the generated input is what is under test, and
the behavioural tests cover both backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import BaseSchema, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from snippets.inventory import create_app

# Per operation: 13 operations x (15 + 8) = 299 requests. Negative cases
# (invalid input) cost more to generate.
EXAMPLES = {GenerationMode.POSITIVE: 15, GenerationMode.NEGATIVE: 8}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


async def seed(url: str) -> None:
    """A few items (one deleted) and an order, so that ids 1-3 exist."""
    app = create_app(url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            rows = [
                {"name": f"item{n}", "category": "c", "price": "2.50", "stock": 50}
                for n in range(4)
            ]
            assert (await c.post("/items/bulk", json={"items": rows})).is_success
            await c.delete("/items/4")
            order = {"customer": "Ada", "lines": [{"item_id": 1, "quantity": 1}]}
            assert (await c.post("/orders", json=order)).is_success


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaseSchema]:
    database = Path(tmp_path_factory.mktemp("fuzz")) / "fuzz.db"
    url = f"sqlite+aiosqlite:///{database}"
    asyncio.run(seed(url))
    # Schemathesis runs the app's lifespan in its own event loop thread.
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(url))
    asgi.shutdown_lifespans()  # dispose of the engine


def fuzz(strategy: st.SearchStrategy[schemathesis.Case], examples: int) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same cases on every run: no flaky CI
        database=None,
    )
    @given(case=strategy)
    def send(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS)

    send()


@pytest.mark.parametrize("mode", list(GenerationMode), ids=str)
def test_no_request_yields_a_5xx_or_breaks_the_schema(
    api_schema: BaseSchema, mode: GenerationMode
):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 13
    for operation in operations:
        fuzz(operation.as_strategy(generation_mode=mode), EXAMPLES[mode])

"""A tour of the inventory service: every route, in process, on SQLite.

Run it: python -m snippets.inventory
"""

# --8<-- [start:tour_imports]
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import httpx

from snippets.inventory import create_app

# --8<-- [end:tour_imports]


# --8<-- [start:tour_helpers]
def pick(body: Any, *fields: str) -> dict[str, Any]:
    """A few fields of a JSON object: the tour prints no timestamps."""
    return {field: body[field] for field in fields}


def problems(reply: httpx.Response) -> list[str]:
    """Where each problem of a 422 is: 'body.price', 'query.sort'..."""
    return [".".join(map(str, e["loc"])) for e in reply.json()["detail"]]


MUG = {"name": "Blue mug", "category": "kitchen", "price": "12.50"}
# --8<-- [end:tour_helpers]


# --8<-- [start:demo_create]
async def demo_create(client: httpx.AsyncClient) -> None:
    reply = await client.post("/items", json={**MUG, "stock": 5})
    print(reply.status_code, reply.headers["ETag"])
    #> 201 "1"
    print(pick(reply.json(), "id", "name", "price", "version"))
    #> {'id': 1, 'name': 'Blue mug', 'price': '12.50', 'version': 1}

    again = await client.post("/items", json=MUG)
    print(again.status_code, again.json())
    #> 409 {'detail': "already used by a live item: 'Blue mug'"}

    bad = {**MUG, "name": "", "price": 1.234, "colour": "red"}
    reply = await client.post("/items", json=bad)
    print(reply.status_code, problems(reply))
    #> 422 ['body.name', 'body.price', 'body.colour']


# --8<-- [end:demo_create]


# --8<-- [start:demo_bulk]
async def demo_bulk(client: httpx.AsyncClient) -> None:
    rows = [
        {"name": name, "category": "office", "price": price, "stock": 10}
        for name, price in [("Pen", "1.20"), ("Pad", "3.00"), ("Ink", "3.00")]
    ]
    reply = await client.post("/items/bulk", json={"items": rows})
    print(reply.status_code, [item["id"] for item in reply.json()["items"]])
    #> 201 [2, 3, 4]

    twice = [{**MUG, "name": "Cup"}, {**MUG, "name": "Cup"}]
    reply = await client.post("/items/bulk", json={"items": twice})
    print(reply.status_code, reply.json()["detail"])
    #> 409 already used by a live item: 'Cup'

    change = {"ids": [2, 3], "values": {"status": "active"}}
    reply = await client.patch("/items/bulk", json=change)
    print(reply.status_code, reply.json())
    #> 200 {'updated': 2}
    unknown = {"ids": [2, 98, 99], "values": {"status": "archived"}}
    reply = await client.patch("/items/bulk", json=unknown)
    print(reply.status_code, reply.json())
    #> 404 {'detail': 'unknown or deleted items: 98, 99'}

    # The versions this client read before the change above: 2 is stale.
    read = {"2": 1, "4": 1}
    change = {"ids": [2, 4], "values": {"stock": 0}, "expected_versions": read}
    reply = await client.patch("/items/bulk", json=change)
    print(reply.status_code, reply.json())
    #> 409 {'detail': 'changed since you read them: 2'}


# --8<-- [end:demo_bulk]


# --8<-- [start:demo_update]
async def demo_update(client: httpx.AsyncClient) -> None:
    read = await client.get("/items/1")
    etag = read.headers["ETag"]
    print(read.status_code, etag, read.json()["stock"])
    #> 200 "1" 5

    reply = await client.patch(
        "/items/1", json={"stock": 8}, headers={"If-Match": etag}
    )
    print(reply.status_code, reply.headers["ETag"], reply.json()["stock"])
    #> 200 "2" 8

    # A second client still holds version 1: its write is refused.
    stale = await client.patch(
        "/items/1", json={"stock": 0}, headers={"If-Match": etag}
    )
    print(stale.status_code, stale.json())
    #> 412 {'detail': 'item 1 is at version 2, not 1'}
    by_body = await client.patch("/items/1", json={"stock": 0, "version": 1})
    print(by_body.status_code)
    #> 409
    blind = await client.patch("/items/1", json={"stock": 0})
    print(blind.status_code, blind.json())
    #> 428 {'detail': 'send If-Match or version: what you read'}
    null = await client.patch("/items/1", json={"name": None, "version": 2})
    print(null.status_code, problems(null))
    #> 422 ['body.name']

    # A client that still holds the current ETag gets no body back.
    fresh = await client.get("/items/1", headers={"If-None-Match": '"2"'})
    print(fresh.status_code, fresh.headers["ETag"], fresh.content)
    #> 304 "2" b''


# --8<-- [end:demo_update]


# --8<-- [start:demo_list]
async def demo_list(client: httpx.AsyncClient) -> None:
    params: dict[str, Any] = {"sort": "-price,name", "limit": 3}
    page = (await client.get("/items", params=params)).json()
    print([(i["name"], i["price"]) for i in page["items"]], page["total"])
    #> [('Blue mug', '12.50'), ('Ink', '3.00'), ('Pad', '3.00')] 4

    params = {"status": ["active", "archived"], "max_price": "3", "q": "P"}
    page = (await client.get("/items", params=params)).json()
    print([i["name"] for i in page["items"]])
    #> ['Pen', 'Pad']

    reply = await client.get("/items", params={"sort": "password"})
    print(reply.status_code, problems(reply))
    #> 422 ['query.sort']
    reply = await client.get("/items", params={"min_price": 5, "max_price": 1})
    print(reply.status_code, problems(reply))
    #> 422 ['query.min_price']


# --8<-- [end:demo_list]


# --8<-- [start:demo_keyset]
async def demo_keyset(client: httpx.AsyncClient) -> None:
    params: dict[str, Any] = {"sort": "-price", "limit": 3}
    cursor = None
    while True:
        if cursor is not None:
            params["cursor"] = cursor
        page = (await client.get("/items/keyset", params=params)).json()
        print([item["name"] for item in page["items"]])
        #> ['Blue mug', 'Pad', 'Ink']
        #> ['Pen']
        cursor = page["next_cursor"]
        if cursor is None:
            break

    first = (await client.get("/items/keyset", params={"limit": 1})).json()
    body, signature = first["next_cursor"].split(".")
    forged = f"{body}x.{signature}"  # any change breaks the signature
    for params in (
        {"cursor": forged},
        {"cursor": first["next_cursor"], "sort": "name"},
    ):
        reply = await client.get("/items/keyset", params=params)
        print(reply.status_code, reply.json())
        #> 400 {'detail': 'cursor signature does not match'}
        #> 400 {'detail': 'this cursor was made for another sort or filter'}


# --8<-- [end:demo_keyset]


# --8<-- [start:demo_orders]
async def demo_orders(client: httpx.AsyncClient) -> None:
    lines = [
        {"item_id": 2, "quantity": 4},
        {"item_id": 1, "quantity": 2},
        {"item_id": 2, "quantity": 1},
    ]
    order = {"customer": "Ada", "lines": lines}
    reply = await client.post("/orders", json=order)
    order = reply.json()
    print(reply.status_code, order["total"], order["lines"][1])
    #> 201 31.00 {'item_id': 1, 'quantity': 2, 'unit_price': '12.50'}

    too_many = [{"item_id": 3, "quantity": 1}, {"item_id": 1, "quantity": 7}]
    body = {"customer": "Bob", "lines": too_many}
    reply = await client.post("/orders", json=body)
    print(reply.status_code, reply.json())
    #> 409 {'detail': 'item 1 has fewer than 7 in stock'}
    stock = [(await client.get(f"/items/{i}")).json()["stock"] for i in (1, 3)]
    print("stock of items 1 and 3:", stock)  # the failed order took nothing
    #> stock of items 1 and 3: [6, 10]

    # Item 1 is at version 3 (created, patched, one order; the failed
    # order changed nothing). Send the version read, never a typed one.
    mug = (await client.get("/items/1")).json()
    change = {"price": "15.00", "version": mug["version"]}
    print(
        mug["version"],
        (await client.patch("/items/1", json=change)).status_code,
    )
    #> 3 200
    reply = await client.get(f"/orders/{order['id']}")
    print(reply.status_code, reply.json()["lines"][1]["unit_price"])
    #> 200 12.50


# --8<-- [end:demo_orders]


# --8<-- [start:demo_trash]
async def demo_trash(client: httpx.AsyncClient) -> None:
    reply = await client.delete("/items/4")
    print(reply.status_code, (await client.get("/items/4")).status_code)
    #> 204 404
    trash = (await client.get("/items/deleted")).json()
    print([(i["name"], i["version"]) for i in trash["items"]])
    #> [('Ink', 2)]

    stale = await client.post("/items/4/restore", headers={"If-Match": '"1"'})
    print(stale.status_code, stale.json())  # the trash shows version 2
    #> 412 {'detail': 'item 4 is at version 2, not 1'}

    ink = {"name": "Ink", "category": "office", "price": "4.00"}
    print((await client.post("/items", json=ink)).status_code)  # name free
    #> 201
    reply = await client.post("/items/4/restore")
    print(reply.status_code, reply.json())
    #> 409 {'detail': "already used by a live item: 'Ink'"}

    await client.patch("/items/5", json={"name": "Ink refill", "version": 1})
    reply = await client.post("/items/4/restore", headers={"If-Match": '"2"'})
    print(reply.status_code, reply.headers["ETag"], reply.json()["name"])
    #> 200 "3" Ink


# --8<-- [end:demo_trash]


# --8<-- [start:demo_hostile]
async def demo_hostile(client: httpx.AsyncClient) -> None:
    json_type = {"content-type": "application/json"}
    bodies = [
        b'{"name": "a", "category": "b", "price": NaN}',
        b'{"name": "a", "category": "b", "price": 1e400}',
        b'{"name": "\\ud800", "category": "b", "price": 1}',
        b'{"name": "a", "category": "b", "price": 1, "stock": 1e20}',
        b'{"name": "a", "category": "b", ',
    ]
    replies = [
        (await client.post("/items", content=body, headers=json_type))
        for body in bodies
    ]
    print([reply.status_code for reply in replies])
    #> [422, 422, 422, 422, 400]
    urls = ["/items/99999999999999999999", "/orders/0", "/items?q=%00"]
    print([(await client.get(url)).status_code for url in urls])
    #> [422, 422, 422]


# --8<-- [end:demo_hostile]


# --8<-- [start:demo_replay]
async def demo_replay(client: httpx.AsyncClient) -> None:
    order = {"customer": "Cy", "lines": [{"item_id": 1, "quantity": 1}]}
    key = {"Idempotency-Key": "cy-2026-01-05-1"}
    for _ in range(2):  # the answer was lost: the client sends it again
        reply = await client.post("/orders", json=order, headers=key)
        print(reply.status_code, pick(reply.json(), "id", "total"))
        #> 201 {'id': 2, 'total': '15.00'}
        #> 201 {'id': 2, 'total': '15.00'}
    other = {**order, "customer": "Dee"}
    reply = await client.post("/orders", json=other, headers=key)
    print(reply.status_code, problems(reply))
    #> 422 ['header.Idempotency-Key']
    print((await client.get("/items/1")).json()["stock"])  # taken once
    #> 5


# --8<-- [end:demo_replay]


# --8<-- [start:demo_export]
async def demo_export(client: httpx.AsyncClient) -> None:
    reply = await client.get("/items/export", params={"category": "kitchen"})
    lines = reply.text.splitlines()
    print(reply.headers["content-type"], len(lines), "lines")
    #> text/csv; charset=utf-8 2 lines
    print(lines[0])
    #> id,name,category,status,price,stock,version,created_at,updated_at
    params = {"format": "ndjson", "q": "mug"}
    reply = await client.get("/items/export", params=params)
    print(reply.headers["content-type"])
    #> application/x-ndjson
    for line in reply.text.splitlines():
        print(pick(json.loads(line), "id", "name", "price", "stock"))
        #> {'id': 1, 'name': 'Blue mug', 'price': '15.00', 'stock': 5}


# --8<-- [end:demo_export]


# --8<-- [start:main]
async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(f"sqlite+aiosqlite:///{Path(tmp) / 'inventory.db'}")
        async with app.router.lifespan_context(app):  # tables, then dispose
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://inventory"
            ) as client:
                await demo_create(client)
                await demo_bulk(client)
                await demo_update(client)
                await demo_list(client)
                await demo_keyset(client)
                await demo_orders(client)
                await demo_trash(client)
                await demo_hostile(client)
                await demo_replay(client)
                await demo_export(client)


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]

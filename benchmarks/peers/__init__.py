"""The reference API beside the libraries a reader would use instead.

Each app serves the same two reads, `GET /items/{id}` and a page of 20 items,
written the way its own documentation writes them, over the same table shape
and the same rows. Importing this package imports none of the peers: they
come with the `bench` extra only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class App:
    name: str  # as the page shows it
    module: str  # benchmarks.peers.<module>, which defines `app` and `table`
    distribution: str | None  # the PyPI package it needs; None: ours
    item_path: str
    list_path: str
    transaction: str  # do writes share one transaction per request? (read
    # from the code: who commits, and when)


APPS = [
    App(
        "reference API (ours)",
        "reference",
        None,
        "/items/7",
        "/items?limit=20",
        "yes, committed before the response is sent",
    ),
    App(
        "FastCRUD",
        "fastcrud_app",
        "fastcrud",
        "/items/7",
        "/items?offset=0&limit=20&sort=id",
        "no: each CRUD call commits on its own",
    ),
    App(
        "Advanced Alchemy",
        "advanced_alchemy_app",
        "advanced-alchemy",
        "/items/7",
        "/items?pageSize=20",
        "yes, committed after the response has started",
    ),
    App(
        "SQLModel tutorial, async",
        "sqlmodel_app",
        "sqlmodel",
        "/items/7",
        "/items/?offset=0&limit=20",
        "no: each route calls commit itself",
    ),
]

DELETED_ID = 1001  # the one soft-deleted row: a filter answers 404

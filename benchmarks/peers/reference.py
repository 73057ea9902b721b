"""Ours: the reference API itself (snippets/inventory), unchanged.

`create_app()` reads DATABASE_URL and INVENTORY_POOL_SIZE (default 20).
"""

from __future__ import annotations

from snippets.inventory import create_app
from snippets.inventory.migrate import upgrade_to_head
from snippets.inventory.models import Base, Item

app = create_app()
metadata = Base.metadata
table = Item.__table__
create_schema = upgrade_to_head  # its own migrations, as its lifespan runs

__all__ = ["app", "create_schema", "metadata", "table"]

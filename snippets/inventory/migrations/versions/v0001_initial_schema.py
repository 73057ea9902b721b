"""The initial schema: items, orders and their lines.

Revision ID: 0001
Revises:
Create Date: 2026-12-06 10:00:00+00:00
"""

# --8<-- [start:initial_imports]
import sqlalchemy as sa
from alembic import op

# --8<-- [end:initial_imports]

# --8<-- [start:initial_revision]
revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None
# --8<-- [end:initial_revision]


# --8<-- [start:initial_items]
def upgrade() -> None:
    # Every constraint and index has the name NAMING_CONVENTION gives it, so
    # a later revision can drop or alter it by name on both databases. op.f()
    # marks a name final: the convention would prefix a CHECK name again.
    op.create_table(
        "items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("name_search", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=50), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),  # cents
        sa.Column("stock", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("_sentinel", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "stock >= 0", name=op.f("ck_items_stock_not_negative")
        ),
        sa.CheckConstraint(
            "price >= 0", name=op.f("ck_items_price_not_negative")
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'active', 'archived')",
            name=op.f("ck_items_known_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
    )
    # --8<-- [end:initial_items]
    # --8<-- [start:initial_indexes]
    # Unique among live items only: a soft-deleted item frees its name.
    live = sa.text("deleted_at IS NULL")
    op.create_index(
        op.f("uq_items_live_name"),
        "items",
        ["name"],
        unique=True,
        sqlite_where=live,
        postgresql_where=live,
    )
    op.create_index(
        op.f("ix_items_lower_name"), "items", [sa.text("lower(name)"), "id"]
    )
    for field in ("category", "status", "price", "stock"):
        op.create_index(op.f(f"ix_items_{field}_id"), "items", [field, "id"])
    for field in ("created_at", "updated_at"):
        op.create_index(op.f(f"ix_items_{field}_id"), "items", [field, "id"])
    # --8<-- [end:initial_indexes]
    # --8<-- [start:initial_orders]
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
    )
    op.create_table(
        "order_lines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_order_lines_order_id_orders"),
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_order_lines_item_id_items")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_lines")),
    )
    for field in ("order_id", "item_id"):
        op.create_index(op.f(f"ix_order_lines_{field}"), "order_lines", [field])
    # --8<-- [end:initial_orders]


# --8<-- [start:initial_downgrade]
def downgrade() -> None:
    # Dropping a table drops its indexes; children before parents.
    op.drop_table("order_lines")
    op.drop_table("orders")
    op.drop_table("items")


# --8<-- [end:initial_downgrade]

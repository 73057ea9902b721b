"""Idempotency keys for POST /orders: the second revision.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 10:40:00+00:00
"""

# --8<-- [start:keys_imports]
import sqlalchemy as sa
from alembic import op

# --8<-- [end:keys_imports]

# --8<-- [start:keys_revision]
revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None
# --8<-- [end:keys_revision]


# --8<-- [start:keys_upgrade]
def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("body", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        op.f("ix_idempotency_keys_created_at"),
        "idempotency_keys",
        ["created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys")  # its index goes with it


# --8<-- [end:keys_upgrade]

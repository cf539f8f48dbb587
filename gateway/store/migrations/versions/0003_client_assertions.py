"""client assertions (replay cache of the token endpoint)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 03:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "client_assertions",
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("jti", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name=op.f("pk_client_assertions")),
    )
    with op.batch_alter_table("client_assertions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_client_assertions_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("client_assertions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_client_assertions_expires_at"))
    op.drop_table("client_assertions")

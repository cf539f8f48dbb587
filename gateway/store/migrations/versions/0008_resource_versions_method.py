"""resource versions: the method that wrote each (history's request.method), indexes for type and system history

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 12:00:00.000000

Versions written before have no method: history shows them as before (POST for the first, PUT after).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("resource_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("method", sa.String(length=8), nullable=True))
        batch_op.create_index(batch_op.f("ix_resource_versions_last_updated"), ["last_updated"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_resource_versions_resource_type_last_updated"),
            ["resource_type", "last_updated"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("resource_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_resource_versions_resource_type_last_updated"))
        batch_op.drop_index(batch_op.f("ix_resource_versions_last_updated"))
        batch_op.drop_column("method")

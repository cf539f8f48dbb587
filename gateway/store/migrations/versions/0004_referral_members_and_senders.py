"""referral members and senders (visibility)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 04:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "referral_members",
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("service_request_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("resource_type", "resource_id", "service_request_id", name=op.f("pk_referral_members")),
    )
    op.create_table(
        "referral_senders",
        sa.Column("service_request_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("service_request_id", "client_id", name=op.f("pk_referral_senders")),
    )


def downgrade() -> None:
    op.drop_table("referral_senders")
    op.drop_table("referral_members")

"""resource versions: each version's content stored once — the current one in ``resources``, those it replaced in
``resource_versions``

Until now every version was written to ``resource_versions``, the current one included, so each resource written
was stored twice: its content (compressed twice over on PostgreSQL), and three index entries more per write (the
table's key and its two indexes on the update time). That was a tenth of the rows a referral writes and about 25
of the ~176 pages SQLite wrote to its journal per referral (issue 21). ``resources`` now carries the method that
wrote its version (history's ``request.method``), and an update moves the version it replaces to
``resource_versions``; history and vread read both (``all_versions``).

Upgrade: ``resources.method`` filled from each current version's row, then those rows removed from
``resource_versions``. Downgrade: the current versions copied back into ``resource_versions``, the column dropped.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 20:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = "resource_type, id, version_id, last_updated, content, method"
_SAME_VERSION = (
    "v.resource_type = resources.resource_type AND v.id = resources.id AND v.version_id = resources.version_id"
)


def upgrade() -> None:
    with op.batch_alter_table("resources") as batch_op:
        batch_op.add_column(sa.Column("method", sa.String(length=8), nullable=True))
    op.execute(f"UPDATE resources SET method = (SELECT v.method FROM resource_versions v WHERE {_SAME_VERSION})")
    op.execute(
        "DELETE FROM resource_versions WHERE EXISTS (SELECT 1 FROM resources r WHERE "
        "r.resource_type = resource_versions.resource_type AND r.id = resource_versions.id "
        "AND r.version_id = resource_versions.version_id)"
    )


def downgrade() -> None:
    op.execute(
        f"INSERT INTO resource_versions ({_COLUMNS}) SELECT {_COLUMNS} FROM resources WHERE NOT EXISTS "
        f"(SELECT 1 FROM resource_versions v WHERE {_SAME_VERSION})"
    )
    with op.batch_alter_table("resources") as batch_op:
        batch_op.drop_column("method")

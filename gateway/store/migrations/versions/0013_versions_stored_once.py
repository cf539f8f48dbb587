"""resource versions: each version's content stored once — the current one in ``resources``, those it replaced in
``resource_versions``; a name's family and given names indexed once

Until now every version was written to ``resource_versions``, the current one included, so each resource written
was stored twice: its content (compressed twice over on PostgreSQL), and three index entries more per write (the
table's key and its two indexes on the update time). That was a tenth of the rows a referral writes and about 25
of the ~176 pages SQLite wrote to its journal per referral (issue 21). ``resources`` now carries the method that
wrote its version (history's ``request.method``), and an update moves the version it replaces to
``resource_versions``; history and vread read both (``all_versions``).

The search index held a Patient's (or Practitioner's) family and given names twice: under ``family`` / ``given``
and again under ``name`` — five of the ~70 index rows of a referral. A search by ``name`` now reads the
``family`` and ``given`` rows too (``SearchParameter.shares``), and ``name`` rows hold ``name.text`` only.

Upgrade: ``resources.method`` filled from each current version's row, then those rows removed from
``resource_versions``; the ``name`` rows that repeat a ``family`` or ``given`` row of the same resource removed.
Downgrade: the current versions copied back into ``resource_versions``, the column dropped; a ``name`` row for each
``family`` and ``given`` row that has none.

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


_NAMED = "resource_type IN ('Patient', 'Practitioner')"
_SAME_NAME = (
    "o.resource_type = n.resource_type AND o.resource_id = n.resource_id AND o.param IN ('family', 'given') "
    "AND n.param = 'name' AND o.value = n.value"
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
    op.execute(
        f"DELETE FROM search_index WHERE {_NAMED} AND param = 'name' AND EXISTS (SELECT 1 FROM search_index o "
        "WHERE o.resource_type = search_index.resource_type AND o.resource_id = search_index.resource_id "
        "AND o.param IN ('family', 'given') AND o.value = search_index.value)"
    )


def downgrade() -> None:
    op.execute(
        "INSERT INTO search_index (resource_type, resource_id, param, system, value, folded) "
        "SELECT DISTINCT o.resource_type, o.resource_id, 'name', o.system, o.value, o.folded FROM search_index o "
        f"WHERE o.{_NAMED} AND o.param IN ('family', 'given') AND NOT EXISTS (SELECT 1 FROM search_index n "
        f"WHERE {_SAME_NAME})"
    )
    op.execute(
        f"INSERT INTO resource_versions ({_COLUMNS}) SELECT {_COLUMNS} FROM resources WHERE NOT EXISTS "
        f"(SELECT 1 FROM resource_versions v WHERE {_SAME_VERSION})"
    )
    with op.batch_alter_table("resources") as batch_op:
        batch_op.drop_column("method")

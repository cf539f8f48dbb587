"""search index: the folded strings' index holds string rows only

``folded`` is set on the rows of string parameters only (a Patient's or Practitioner's names, an Organization's
name): a referral writes about 70 index rows, of which about 10 are strings. The index on (resource_type, param,
folded) held every row all the same, the other 60 under NULL — one B-tree page more to write per parameter and
per referral, about a fifth of what SQLite wrote to its journal per referral (issue 21), and as many index
entries for PostgreSQL to maintain. It is now a partial index (``WHERE folded IS NOT NULL``). A string search
compares ``folded`` with LIKE, which both databases know holds for no NULL: the index serves it as before.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_search_index_resource_type_param_folded"
_COLUMNS = ["resource_type", "param", "folded"]
_STRINGS_ONLY = sa.text("folded IS NOT NULL")


def upgrade() -> None:
    op.drop_index(_INDEX, table_name="search_index")
    op.create_index(_INDEX, "search_index", _COLUMNS, sqlite_where=_STRINGS_ONLY, postgresql_where=_STRINGS_ONLY)


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="search_index")
    op.create_index(_INDEX, "search_index", _COLUMNS)

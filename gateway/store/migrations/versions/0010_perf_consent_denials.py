"""search index: a Consent that denies is indexed as a denial of its patient

Every referral brings a Consent, and the opposition look-up of each intake read every Consent of the patient to
keep the denials: a followed patient's referrals grew slower one after the other (issue 21). A Consent whose
provision denies now also gets its ``patient`` and ``patient:identifier`` rows under names of their own
(``gateway.fhir.search.DENIAL_PARAMS``), and the look-up reads those only.

The upgrade writes those rows for the Consents stored, with the function the gateway indexes with
(``index_entries``), resources read by id in batches; it deletes them first, so the rows are the same however often
it runs. The downgrade deletes them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 15:00:00.000000
"""

from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

from gateway.fhir.search import DENIAL_PARAMS, index_entries

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 5_000
_resources = sa.table(
    "resources", sa.column("resource_type", sa.String), sa.column("id", sa.String), sa.column("content", sa.Text)
)
_index = sa.table(
    "search_index",
    *(sa.column(name, sa.String) for name in ("resource_type", "resource_id", "param", "system", "value")),
)


def _delete() -> None:
    s = _index.c
    op.get_bind().execute(sa.delete(_index).where(s.resource_type == "Consent", s.param.in_(DENIAL_PARAMS)))


def upgrade() -> None:
    _delete()
    connection = op.get_bind()
    r = _resources.c
    after = ""
    while True:
        batch = connection.execute(
            sa.select(r.id, r.content).where(r.resource_type == "Consent", r.id > after).order_by(r.id).limit(_BATCH)
        ).all()
        if not batch:
            break
        after = batch[-1].id
        rows: list[dict[str, Any]] = [
            {"resource_type": "Consent", "resource_id": row.id, "param": entry.param}
            | {"system": entry.system, "value": entry.value}
            for row in batch
            for entry in index_entries(orjson.loads(row.content))
            if entry.param in DENIAL_PARAMS
        ]
        if rows:
            connection.execute(sa.insert(_index), rows)


def downgrade() -> None:
    _delete()

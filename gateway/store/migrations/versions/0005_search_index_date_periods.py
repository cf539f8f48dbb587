"""search index: dates as periods

An indexed date (Patient ``birthdate``, Task ``deadline``) was its text as posted, matched only exactly; it is now
the period it names — its start in ``value``, its end (exclusive) in ``system``, both instants in the fixed-width
UTC form ``fhir_instant`` writes — so that searches compare ranges (prefixes, partial dates). Rows written before
are rewritten here; a value that names no date is dropped (it could never match a date search).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 10:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gateway.fhir.primitives import fhir_instant
from gateway.fhir.search import date_period

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DATE_PARAMETERS = (("Patient", "birthdate"), ("Task", "deadline"))
_index = sa.table(
    "search_index",
    sa.column("row_id", sa.BigInteger),
    sa.column("resource_type", sa.String),
    sa.column("param", sa.String),
    sa.column("system", sa.String),
    sa.column("value", sa.String),
)


def upgrade() -> None:
    connection = op.get_bind()
    for resource_type, param in _DATE_PARAMETERS:
        rows = connection.execute(
            sa.select(_index.c.row_id, _index.c.value).where(
                _index.c.resource_type == resource_type, _index.c.param == param
            )
        ).all()
        for row in rows:
            period = date_period(row.value)
            if period is None:
                connection.execute(sa.delete(_index).where(_index.c.row_id == row.row_id))
            else:
                connection.execute(
                    sa.update(_index)
                    .where(_index.c.row_id == row.row_id)
                    .values(value=fhir_instant(period[0]), system=fhir_instant(period[1]))
                )


def downgrade() -> None:
    # The start of each period is what the gateway wrote for a deadline; a birth date keeps its day.
    connection = op.get_bind()
    connection.execute(
        sa.update(_index)
        .where(_index.c.resource_type == "Patient", _index.c.param == "birthdate")
        .values(value=sa.func.substr(_index.c.value, 1, 10), system=None)
    )
    connection.execute(
        sa.update(_index).where(_index.c.resource_type == "Task", _index.c.param == "deadline").values(system=None)
    )

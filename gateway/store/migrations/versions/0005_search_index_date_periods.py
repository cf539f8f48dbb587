"""search index: dates as periods

An indexed date (Patient ``birthdate``, Task ``deadline``) was its text as posted, matched only exactly; it is now
the period it names — its start in ``value``, its end (exclusive) in ``system``, both instants in the fixed-width
UTC form ``fhir_instant`` writes — so that searches compare ranges (prefixes, partial dates).

The rows of those parameters are recomputed from what they index, each resource's current content (the search
index holds current versions only), with the function the gateway indexes with (``index_entries``): deleted, then
written again. Rewriting each row from its own text instead would read the new form as a date too (``1941`` would
become the one-day period of its first instant on a second run); recomputing is the same whatever the rows hold, so
the migration may run again (after a ``stamp``, or a failed run) and gives the same rows. The downgrade writes the
former rows the same way: each date as posted, no system. Resources are read by id in batches and rows inserted
many at once: one statement per batch, never one per row.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 10:40:00.000000
"""

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

from gateway.fhir.search import index_entries

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Each date parameter: the type it belongs to, its name, and the path of the element it indexes.
_DATE_PARAMETERS = (("Patient", "birthdate", ("birthDate",)), ("Task", "deadline", ("restriction", "period", "end")))
_BATCH = 5_000

_resources = sa.table(
    "resources", sa.column("resource_type", sa.String), sa.column("id", sa.String), sa.column("content", sa.Text)
)
_index = sa.table(
    "search_index",
    sa.column("resource_type", sa.String),
    sa.column("resource_id", sa.String),
    sa.column("param", sa.String),
    sa.column("system", sa.String),
    sa.column("value", sa.String),
)

#: (resource, parameter name, path) → the (system, value) rows it gets.
_Rows = Callable[[dict[str, Any], str, tuple[str, ...]], Iterator[tuple[str | None, str]]]


def _periods(resource: dict[str, Any], param: str, path: tuple[str, ...]) -> Iterator[tuple[str | None, str]]:
    for entry in index_entries(resource):
        if entry.param == param:
            yield entry.system, entry.value


def _as_posted(resource: dict[str, Any], param: str, path: tuple[str, ...]) -> Iterator[tuple[str | None, str]]:
    # The index before this revision: the date's text as posted (at most 1,024 characters), no system.
    node: Any = resource
    for step in path:
        node = node.get(step) if isinstance(node, dict) else None
    if isinstance(node, str):
        yield None, node[:1024]


def _rewrite(rows: _Rows) -> None:
    connection = op.get_bind()
    r, s = _resources.c, _index.c
    for resource_type, param, path in _DATE_PARAMETERS:
        connection.execute(sa.delete(_index).where(s.resource_type == resource_type, s.param == param))
        after = ""
        while True:
            batch = connection.execute(
                sa.select(r.id, r.content)
                .where(r.resource_type == resource_type, r.id > after)
                .order_by(r.id)
                .limit(_BATCH)
            ).all()
            if not batch:
                break
            after = batch[-1].id
            written = [
                {
                    "resource_type": resource_type,
                    "resource_id": row.id,
                    "param": param,
                    "system": system,
                    "value": value,
                }
                for row in batch
                for system, value in dict.fromkeys(rows(orjson.loads(row.content), param, path))
            ]
            if written:
                connection.execute(sa.insert(_index), written)


def upgrade() -> None:
    _rewrite(_periods)


def downgrade() -> None:
    _rewrite(_as_posted)

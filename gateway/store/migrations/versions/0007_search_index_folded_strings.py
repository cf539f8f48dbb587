"""search index: strings folded beside their text

A string parameter (``family``, ``given``, ``name``) was indexed lower-cased only: ``given=helene`` missed "Hélène"
and ``given:exact=marcel`` matched "Marcel". R4 search.html#string: a search ignores case and accents, ``:exact``
does not. Each string row now keeps its text in ``value`` (what ``:exact`` compares) and its folded form in the new
column ``folded`` (NFKD without combining marks, case-folded: ``gateway.fhir.search.fold``; what a search without
modifier and ``:contains`` compare), indexed like ``value``.

A ServiceRequest's ``supporting-info`` is indexed too (its Consent and CareTeam, for
``_include=ServiceRequest:supporting-info``): written here for the ServiceRequests stored, removed on the way down.

The rows of the string parameters are recomputed from the resources' current content, with the function the
gateway indexes with (``index_entries``), as 0005 recomputes the dates: deleted, then written again, resources read
by id in batches and rows inserted many at once. The upgrade adds the column only where it is missing, and the
rows are the same however often it runs (after a ``stamp``, or a failed run); the downgrade writes the former rows
(lower-cased, spaces collapsed) the same way, then drops the column.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 11:45:00.000000
"""

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

from gateway.fhir.search import index_entries

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Each string parameter: its type, its name, and the paths of the elements it indexes.
_NAMES = ("name.family", "name.given", "name.text")
_STRING_PARAMETERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Patient", "family", ("name.family",)),
    ("Patient", "given", ("name.given",)),
    ("Patient", "name", _NAMES),
    ("Practitioner", "family", ("name.family",)),
    ("Practitioner", "given", ("name.given",)),
    ("Practitioner", "name", _NAMES),
    ("Organization", "name", ("name", "alias")),
)
#: The parameter this revision adds (none of its rows before it).
_ADDED = (("ServiceRequest", "supporting-info", ("supportingInfo",)),)
_BATCH = 5_000
_INDEX = "ix_search_index_resource_type_param_folded"

_resources = sa.table(
    "resources", sa.column("resource_type", sa.String), sa.column("id", sa.String), sa.column("content", sa.Text)
)


def _index(*, folded: bool) -> sa.TableClause:
    columns = ["resource_type", "resource_id", "param", "system", "value", *(["folded"] if folded else [])]
    return sa.table("search_index", *(sa.column(name, sa.String) for name in columns))


#: (resource, parameter name, paths) → the rows it gets, as dicts of the columns beside type, id and param.
_Rows = Callable[[dict[str, Any], str, tuple[str, ...]], Iterator[dict[str, str | None]]]


def _folded(resource: dict[str, Any], param: str, paths: tuple[str, ...]) -> Iterator[dict[str, str | None]]:
    for entry in index_entries(resource):
        if entry.param == param:
            yield {"system": entry.system, "value": entry.value, "folded": entry.folded}


def _walk(node: Any, steps: Sequence[str]) -> Iterator[Any]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, steps)
    elif not steps:
        yield node
    elif isinstance(node, dict):
        yield from _walk(node.get(steps[0]), steps[1:])


def _lowered(resource: dict[str, Any], param: str, paths: tuple[str, ...]) -> Iterator[dict[str, str | None]]:
    # The index before this revision: the text lower-cased (casefold), runs of spaces one space, at most 1,024.
    for path in paths:
        for value in _walk(resource, path.split(".")):
            if isinstance(value, str) and value.strip():
                yield {"system": None, "value": " ".join(value.casefold().split())[:1024]}


def _rewrite(rows: _Rows, parameters: Sequence[tuple[str, str, tuple[str, ...]]], *, folded: bool) -> None:
    connection = op.get_bind()
    index = _index(folded=folded)
    r, s = _resources.c, index.c
    for resource_type, param, paths in parameters:
        connection.execute(sa.delete(index).where(s.resource_type == resource_type, s.param == param))
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
            written: dict[tuple[Any, ...], dict[str, Any]] = {}
            for row in batch:
                for found in rows(orjson.loads(row.content), param, paths):
                    entry = {"resource_type": resource_type, "resource_id": row.id, "param": param, **found}
                    written[tuple(entry.values())] = entry
            if written:
                connection.execute(sa.insert(index), list(written.values()))


def _has_folded() -> bool:
    return any(column["name"] == "folded" for column in sa.inspect(op.get_bind()).get_columns("search_index"))


def upgrade() -> None:
    if not _has_folded():
        op.add_column("search_index", sa.Column("folded", sa.String(1024), nullable=True))
        op.create_index(_INDEX, "search_index", ["resource_type", "param", "folded"])
    _rewrite(_folded, (*_STRING_PARAMETERS, *_ADDED), folded=True)


def downgrade() -> None:
    _rewrite(_lowered, _STRING_PARAMETERS, folded=False)
    index = _index(folded=False)
    for resource_type, param, _ in _ADDED:
        op.get_bind().execute(sa.delete(index).where(index.c.resource_type == resource_type, index.c.param == param))
    if _has_folded():
        op.drop_index(_INDEX, table_name="search_index")
        with op.batch_alter_table("search_index") as batch:
            batch.drop_column("folded")

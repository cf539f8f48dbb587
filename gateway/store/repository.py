"""Repositories: the only code that knows the SQL. Callers see ``StoredResource``s and search results.

Writes are buffered and sent in bulk when the unit of work flushes — before any read in the same transaction
and at commit. On SQLite that is one ``executemany`` per table. On PostgreSQL it is one statement for every table
(``_BulkInsert``): each round trip to the server costs the gateway a socket write and a wake-up of the server
process, more than the rows themselves, and a referral fills nine tables.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.fhir.primitives import fhir_instant, new_id, utc_now
from gateway.fhir.search import (
    DENIAL_PARAMS,
    IDENTIFIER_MODIFIER,
    SEARCH_PARAMETERS,
    Cursor,
    Include,
    ParamType,
    SearchQuery,
    index_entries,
    indexed_as,
    is_last_updated,
)
from gateway.fhir.types import JSONObject, Resource
from gateway.store.tables import (
    idempotency_keys,
    outbox,
    pending_deadlines,
    referral_members,
    referral_origins,
    referral_senders,
    resource_identities,
    resource_versions,
    resources,
    search_index,
    subscription_events,
)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StoredResource:
    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    content: Resource
    #: What wrote this version (POST, PUT, PATCH), as history tells it; None when not recorded (before 0008).
    method: str | None = None
    #: The content as stored (JSON text), read from the database or written in this unit of work: what an update
    #: moves to ``resource_versions`` as the version it replaces, byte for byte.
    text: str | None = field(default=None, compare=False, repr=False)

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}"

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @classmethod
    def from_row(cls, row: Any) -> StoredResource:
        return cls(
            row.resource_type,
            row.id,
            row.version_id,
            as_utc(row.last_updated),
            orjson.loads(row.content),
            getattr(row, "method", None),
            row.content,
        )


@dataclass(frozen=True, slots=True)
class SearchPage:
    """A page of a search: the total of the matches (None when not asked for), this page's, and where the next
    page starts (None: this is the last)."""

    total: int | None
    found: list[StoredResource]
    next: Cursor | None


#: How many times ``:iterate`` includes apply to what was included (the first pass included): a referral's
#: ServiceRequest → its Patient → the Patient's Consents is two.
_INCLUDE_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class Change:
    """A resource written in a unit of work: its content before (None when created) and the version written —
    what the unit of work's listeners see before it commits (``gateway.notify`` numbers its events from them)."""

    before: Resource | None
    after: StoredResource


@dataclass
class PendingWrites:
    """Rows waiting for the next flush, per table, in insertion order."""

    rows: dict[sa.Table, list[dict[str, Any]]] = field(default_factory=dict)
    #: Every resource version staged in this unit of work, flushed or not ("Task/1/_history/2"): what its
    #: AuditEvent names.
    written: list[str] = field(default_factory=list)
    #: Every resource written in this unit of work, in order, with what it was before (``Change``).
    changes: list[Change] = field(default_factory=list)

    def add(self, table: sa.Table, row: dict[str, Any]) -> None:
        self.rows.setdefault(table, []).append(row)

    def wrote(self, stored: StoredResource) -> None:
        """``stored`` is a version written in this unit of work (what its AuditEvent names, AuditEvents aside)."""
        if stored.resource_type != "AuditEvent":
            self.written.append(f"{stored.resource_type}/{stored.id}/_history/{stored.version_id}")

    async def flush(self, connection: AsyncConnection) -> None:
        batches = [(table, rows) for table in _FLUSH_ORDER if (rows := self.rows.pop(table, None))]
        if not batches:
            return
        if connection.dialect.name == "postgresql":
            statement, parameters = _bulk_insert(batches, connection.dialect)
            await connection.execute(statement, parameters)
            return
        for table, rows in batches:
            sql, values = _sqlite_insert(table, rows, connection.dialect)
            await connection.exec_driver_sql(sql, values)


# Identities and idempotency keys first: on SQLite, where each table is a statement of its own, a duplicate fails
# fast, before the bulk of the rows is sent.
_FLUSH_ORDER = (
    resource_identities,
    idempotency_keys,
    resources,
    resource_versions,
    search_index,
    outbox,
    referral_origins,
    referral_members,
    referral_senders,
    subscription_events,
    pending_deadlines,
)


class _BulkInsert:
    """One PostgreSQL statement that inserts rows into several tables: each table's rows go as one array per
    column, turned back into rows by ``unnest``, each table's INSERT a data-modifying CTE of the statement::

        WITH t0 AS (INSERT INTO resources (…) SELECT * FROM unnest(CAST(:t0_c0 AS VARCHAR(64)[]), …)), …
        INSERT INTO search_index (…) SELECT * FROM unnest(…)

    One round trip and one execution on the server, where ``executemany`` was a round trip per table and an
    execution per row (a referral is about a hundred rows). It is atomic like any statement: a duplicate key
    in any table fails it whole (IntegrityError, as before). The statement depends only on which tables and
    columns are written, so there are few of them and each is prepared once per connection."""

    def __init__(self) -> None:
        self._statements: dict[tuple[tuple[str, tuple[str, ...]], ...], sa.TextClause] = {}

    def __call__(
        self, batches: Sequence[tuple[sa.Table, list[dict[str, Any]]]], dialect: sa.Dialect
    ) -> tuple[sa.TextClause, dict[str, Any]]:
        # Every row of a table names the same columns (as executemany requires): the first one's.
        groups = [(table, tuple(rows[0]), rows) for table, rows in batches]
        shape = tuple((table.name, columns) for table, columns, _ in groups)
        statement = self._statements.get(shape)
        if statement is None:
            statement = self._statements[shape] = self._build(groups, dialect)
        parameters = {
            f"t{g}_c{c}": [row[column] for row in rows]
            for g, (_, columns, rows) in enumerate(groups)
            for c, column in enumerate(columns)
        }
        return statement, parameters

    @staticmethod
    def _build(
        groups: Sequence[tuple[sa.Table, tuple[str, ...], list[dict[str, Any]]]], dialect: sa.Dialect
    ) -> sa.TextClause:
        quote = dialect.identifier_preparer
        inserts = []
        for g, (table, columns, _) in enumerate(groups):
            arrays = ", ".join(
                f"CAST(:t{g}_c{c} AS {table.c[column].type.compile(dialect)}[])" for c, column in enumerate(columns)
            )
            names = ", ".join(quote.quote(column) for column in columns)
            inserts.append(f"INSERT INTO {quote.format_table(table)} ({names}) SELECT * FROM unnest({arrays})")
        *first, last = inserts
        ctes = ", ".join(f"t{g} AS ({insert})" for g, insert in enumerate(first))
        return sa.text(f"WITH {ctes} {last}" if ctes else last)


_bulk_insert = _BulkInsert()


def rows_in(columns: Sequence[sa.ColumnElement[Any]], rows: Iterable[tuple[Any, ...]]) -> sa.ColumnElement[bool]:
    """``(a, b, c) IN rows``, written so that the index on those columns serves it: SQLite answers a row-value IN
    list by scanning the whole table. Rows are grouped on all but the last column, and each group takes its last
    column with one expanding IN — a few groups (one per resource type, or type and system), however many rows,
    so the statement stays cached. (Look-ups run at every referral use ``KeyLookup``: the same shape,
    built once.)"""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        groups.setdefault(tuple(row[:-1]), []).append(row[-1])
    *leading, last = columns
    return sa.or_(
        *(
            sa.and_(*(column == value for column, value in zip(leading, key, strict=True)), last.in_(values))
            for key, values in groups.items()
        )
    )


def any_of(column: sa.ColumnElement[Any], name: str, value: Any = None) -> sa.ColumnElement[bool]:
    """``column = ANY(:name)`` (PostgreSQL): the values as one array parameter, so that the statement's text is the
    same whatever their number. Strings are bound without their length: an explicit cast to ``VARCHAR(n)[]`` would
    cut longer values, and a cut value could match another row."""
    element = sa.String() if isinstance(column.type, sa.String) else column.type
    return column == sa.any_(sa.bindparam(name, value, type_=postgresql.ARRAY(element)))


#: The statements a ``KeyLookup`` keeps (one per number of groups). A bundle with many identifier systems is a
#: look-up of as many groups, each a statement as long: kept without bound, a client sending bundles of 1, 2, …
#: n systems would leave n statements of up to n groups (and their compiled forms) in the process (issue 21).
#: A referral has a handful; past this, the oldest is dropped (built again if needed).
KEY_LOOKUP_STATEMENTS = 32


class KeyLookup:
    """``SELECT … WHERE (a, b, c) IN rows``, written so that the index on those columns serves it: SQLite answers a
    row-value IN list by scanning the whole table. Rows are grouped on all but the last column, and each group
    takes its last column with one expanding IN — a few groups (one per resource type, or type and system),
    however many rows. The statement for a number of groups is built once, with named parameters: building and
    cache-keying a fresh expression tree at each look-up cost ~0.3 ms, more than running it."""

    def __init__(
        self,
        selected: sa.Table | Sequence[sa.ColumnElement[Any]],
        key: Sequence[sa.Column[Any]],
        from_: sa.FromClause | None = None,
    ) -> None:
        self._selected = [selected] if isinstance(selected, sa.Table) else list(selected)
        self._key = list(key)
        self._from = from_
        self._statements: dict[tuple[int, bool, bool], sa.Select[Any]] = {}

    def _statement(self, groups: int, for_update: bool, arrays: bool) -> sa.Select[Any]:
        statement = self._statements.get((groups, for_update, arrays))
        if statement is None:
            *leading, last = self._key
            condition = sa.or_(
                *(
                    sa.and_(
                        *(column == sa.bindparam(f"k{g}_{c}") for c, column in enumerate(leading)),
                        any_of(last, f"v{g}") if arrays else last.in_(sa.bindparam(f"v{g}", expanding=True)),
                    )
                    for g in range(groups)
                )
            )
            statement = sa.select(*self._selected)
            if self._from is not None:
                statement = statement.select_from(self._from)
            statement = statement.where(condition)
            if for_update:  # locked in the key's order, so that two transactions locking the same rows cannot deadlock
                statement = statement.order_by(*self._key).with_for_update()
            if len(self._statements) >= KEY_LOOKUP_STATEMENTS:
                del self._statements[next(iter(self._statements))]
            self._statements[groups, for_update, arrays] = statement
        return statement

    def __call__(
        self, rows: Iterable[tuple[Any, ...]], *, for_update: bool = False, arrays: bool = False
    ) -> tuple[sa.Select[Any], dict[str, Any]]:
        """The statement and its parameters for these rows (at least one); ``for_update`` locks the rows found.
        ``arrays`` (PostgreSQL): each group's values as one array (``= ANY``), so that the statement's text is the
        same whatever their number — an expanding IN is a new text per length, each prepared anew by the driver."""
        groups: dict[tuple[Any, ...], list[Any]] = {}
        for row in rows:
            groups.setdefault(tuple(row[:-1]), []).append(row[-1])
        parameters: dict[str, Any] = {}
        for g, (leading, values) in enumerate(groups.items()):
            parameters.update({f"k{g}_{c}": value for c, value in enumerate(leading)})
            parameters[f"v{g}"] = values
        return self._statement(len(groups), for_update, arrays), parameters


_identity, _resource = resource_identities.c, resources.c
# The resources holding identifiers, with the identifiers: one statement where an identity look-up and a fetch of
# the resources were two.
_holders_by_identity = KeyLookup(
    [
        _identity.system,
        _identity.value,
        _resource.resource_type,
        _resource.id,
        _resource.version_id,
        _resource.last_updated,
        _resource.content,
        _resource.method,
    ],
    [_identity.resource_type, _identity.system, _identity.value],
    resource_identities.join(
        resources, sa.and_(_resource.resource_type == _identity.resource_type, _resource.id == _identity.resource_id)
    ),
)
_resources_by_reference = KeyLookup(resources, [resources.c.resource_type, resources.c.id])

_VERSION_COLUMNS = ("resource_type", "id", "version_id", "last_updated", "content", "method")
#: Every version of every resource, current ones (``resources``) and those they replaced (``resource_versions``):
#: what history, vread and the walks' snapshots read. Conditions on its columns reach both tables' indexes.
all_versions = sa.union_all(
    sa.select(*(resources.c[name] for name in _VERSION_COLUMNS)),
    sa.select(*(resource_versions.c[name] for name in _VERSION_COLUMNS)),
).subquery("all_versions")
# Statements run at every referral, built once (see KeyLookup for why).
_get_resource = sa.select(resources).where(
    resources.c.resource_type == sa.bindparam("resource_type"), resources.c.id == sa.bindparam("id")
)
_get_version = (
    sa.select(*(resources.c[name] for name in _VERSION_COLUMNS))
    .where(
        resources.c.resource_type == sa.bindparam("resource_type"),
        resources.c.id == sa.bindparam("id"),
        resources.c.version_id == sa.bindparam("version_id"),
    )
    .union_all(
        sa.select(*(resource_versions.c[name] for name in _VERSION_COLUMNS)).where(
            resource_versions.c.resource_type == sa.bindparam("resource_type"),
            resource_versions.c.id == sa.bindparam("id"),
            resource_versions.c.version_id == sa.bindparam("version_id"),
        )
    )
)
_resource_exists = sa.select(sa.literal(1)).where(
    resources.c.resource_type == sa.bindparam("resource_type"), resources.c.id == sa.bindparam("id")
)
_idempotency_by_key = sa.select(idempotency_keys.c.key, idempotency_keys.c.outcome).where(
    idempotency_keys.c.client_id == sa.bindparam("client_id"),
    idempotency_keys.c.key.in_(sa.bindparam("keys", expanding=True)),
)


@functools.lru_cache(maxsize=64)  # a few shapes per table; bounded, since each engine has a dialect of its own
def _sqlite_statement(
    table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect
) -> tuple[str, tuple[Callable[[Any], Any] | None, ...]]:
    """The INSERT of these columns into ``table`` as SQLite's driver takes it (``?`` placeholders), and each
    column's bind processor (a datetime to SQLAlchemy's text form; None: the value as it is)."""
    quote = dialect.identifier_preparer
    names = ", ".join(quote.quote(column) for column in columns)
    placeholders = ", ".join("?" for _ in columns)
    processors = tuple(table.c[column].type.dialect_impl(dialect).bind_processor(dialect) for column in columns)
    return f"INSERT INTO {quote.format_table(table)} ({names}) VALUES ({placeholders})", processors


def _sqlite_insert(
    table: sa.Table, rows: list[dict[str, Any]], dialect: sa.Dialect
) -> tuple[str, list[tuple[Any, ...]]]:
    """``executemany`` of the rows as the driver takes them: each row a tuple, each value through its column's bind
    processor, as SQLAlchemy's ``insert()`` would pass them — without compiling, caching and processing the
    statement's parameters row by row, which cost about as much as SQLite's own inserts (issue 21). Every row of a
    table names the same columns (as executemany requires): the first one's."""
    columns = tuple(rows[0])
    statement, processors = _sqlite_statement(table, columns, dialect)
    if not any(processors):
        return statement, [tuple(row[column] for column in columns) for row in rows]
    pairs = tuple(zip(columns, processors, strict=True))
    return statement, [
        tuple(row[column] if process is None else process(row[column]) for column, process in pairs) for row in rows
    ]


def _with_meta(resource: Resource, resource_id: str, version_id: int, moment: datetime) -> Resource:
    content = dict(resource)
    content["id"] = resource_id
    meta = dict(content.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = fhir_instant(moment)
    content["meta"] = meta
    # resourceType and id first, as FHIR JSON is usually written.
    return {
        "resourceType": content.pop("resourceType"),
        "id": content.pop("id"),
        "meta": content.pop("meta"),
    } | content


class ResourceRepository:
    def __init__(self, connection: AsyncConnection, pending: PendingWrites) -> None:
        self._connection = connection
        self._pending = pending
        self._postgresql = connection.dialect.name == "postgresql"

    async def _execute(
        self, statement: sa.Executable, parameters: dict[str, Any] | None = None
    ) -> sa.CursorResult[Any]:
        await self._pending.flush(self._connection)
        return await self._connection.execute(statement, parameters)

    # --- reads ---

    async def get(self, resource_type: str, resource_id: str) -> StoredResource | None:
        result = await self._execute(_get_resource, {"resource_type": resource_type, "id": resource_id})
        row = result.first()
        return StoredResource.from_row(row) if row else None

    async def get_version(self, resource_type: str, resource_id: str, version_id: int) -> StoredResource | None:
        result = await self._execute(
            _get_version, {"resource_type": resource_type, "id": resource_id, "version_id": version_id}
        )
        row = result.first()
        return StoredResource.from_row(row) if row else None

    async def history(self, resource_type: str, resource_id: str) -> list[StoredResource]:
        v = all_versions.c
        result = await self._execute(
            sa.select(all_versions)
            .where(v.resource_type == resource_type, v.id == resource_id)
            .order_by(v.version_id.desc())
        )
        return [StoredResource.from_row(row) for row in result]

    async def versions(
        self,
        visible: sa.ColumnElement[bool] | None,
        since: datetime | None,
        count: int,
        offset: int,
        resource_type: str | None = None,
        resource_id: str | None = None,
        snapshot: datetime | None = None,
    ) -> tuple[int, list[StoredResource]]:
        """A page of versions, newest first (R4 http.html#history), and how many there are: of one resource, of
        a type, or of every type; ``visible`` (on ``all_versions``' columns) what the reader may see;
        ``snapshot`` the walk's moment (versions written after it wait for the next walk: the offsets hold)."""
        v = all_versions.c
        conditions: list[sa.ColumnElement[bool]] = [] if visible is None else [visible]
        if resource_type is not None:
            conditions.append(v.resource_type == resource_type)
        if resource_id is not None:
            conditions.append(v.id == resource_id)
        if since is not None:
            conditions.append(v.last_updated >= since)
        if snapshot is not None:
            conditions.append(v.last_updated <= snapshot)
        total = (
            await self._execute(sa.select(sa.func.count()).select_from(all_versions).where(*conditions))
        ).scalar_one()
        if count == 0:
            return total, []
        page = (
            sa.select(all_versions)
            .where(*conditions)
            .order_by(v.last_updated.desc(), v.resource_type, v.id, v.version_id.desc())
            .limit(count)
            .offset(offset)
        )
        return total, [StoredResource.from_row(row) for row in await self._execute(page)]

    async def identify(self, resource_type: str, keys: Iterable[tuple[str, str]]) -> str | None:
        """The id of the resource holding any of these unique identifiers (system, value), if one does."""
        keys = list(keys)
        if not keys:
            return None
        i = resource_identities.c
        result = await self._execute(
            sa.select(i.resource_id, i.system, i.value).where(
                i.resource_type == resource_type,
                sa.or_(*(sa.and_(i.system == system, i.value == value) for system, value in keys)),
            )
        )
        found = {(row.system, row.value): row.resource_id for row in result}
        return next((found[key] for key in keys if key in found), None)

    async def identify_many(self, keys: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str, str], StoredResource]:
        """For each (resource type, system, value) held by a resource, that resource (current version) — one
        query."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        result = await self._execute(*_holders_by_identity(keys, arrays=self._postgresql))
        return {(row.resource_type, row.system, row.value): StoredResource.from_row(row) for row in result}

    async def get_many(
        self, references: Iterable[tuple[str, str]], *, for_update: bool = False
    ) -> dict[tuple[str, str], StoredResource]:
        """The current versions of several resources (type, id) — one query. ``for_update`` locks them until the
        transaction ends (PostgreSQL; SQLite's writer holds the whole database), so ``update_many`` cannot lose."""
        references = list(dict.fromkeys(references))
        if not references:
            return {}
        result = await self._execute(
            *_resources_by_reference(references, for_update=for_update, arrays=self._postgresql)
        )
        found = (StoredResource.from_row(row) for row in result)
        return {(stored.resource_type, stored.id): stored for stored in found}

    async def ids_below(self, resource_type: str, param: str, upper: str) -> list[str]:
        """Ids of resources whose index value for ``param`` sorts before ``upper`` (instants in UTC ``Z`` form
        sort as text), e.g. Tasks whose deadline has passed."""
        s = search_index.c
        result = await self._execute(
            sa.select(s.resource_id)
            .where(s.resource_type == resource_type, s.param == param, s.value < upper)
            .order_by(s.value)
        )
        return [row.resource_id for row in result]

    async def exists(self, resource_type: str, resource_id: str) -> bool:
        result = await self._execute(_resource_exists, {"resource_type": resource_type, "id": resource_id})
        return result.first() is not None

    async def find(
        self, query: SearchQuery, limit: int, visible: sa.ColumnElement[bool] | None = None
    ) -> list[StoredResource]:
        """Up to ``limit`` matches, without counting them all (conditional create, rule look-ups); ``visible``
        (``gateway.store.visibility``) filters them."""
        shape, parameters = _shape(query)
        statement = _matches(shape, query.descending, limit, 0)
        if visible is not None:  # the viewer's filter carries its own values: added to a copy, for this look-up
            statement = statement.where(visible)
        result = await self._execute(statement, parameters)
        return [StoredResource.from_row(row) for row in result]

    async def denials(
        self, patient_id: str | None, identifiers: Sequence[tuple[str, str]], limit: int
    ) -> list[StoredResource]:
        """The Consents whose provision denies (``DENIAL_PARAMS``) of the Patient ``patient_id`` or naming their
        patient by one of ``identifiers`` (system, value), oldest first: one look-up in the search index among a
        patient's denials only, not all its Consents (a referral brings one: a followed patient has thousands)."""
        groups: dict[str, list[str]] = {}
        for system, value in identifiers:
            groups.setdefault(system, []).append(value)
        if patient_id is None and not groups:
            return []
        parameters: dict[str, Any] = {} if patient_id is None else {"patient": patient_id}
        for g, (system, values) in enumerate(groups.items()):
            parameters |= {f"s{g}": system, f"v{g}": values}
        statement = _denials(patient_id is not None, len(groups), limit)
        return [StoredResource.from_row(row) for row in await self._execute(statement, parameters)]

    async def search(
        self, query: SearchQuery, visible: sa.ColumnElement[bool] | None = None
    ) -> tuple[int, list[StoredResource]]:
        """A page of matches and their total; ``visible`` (``gateway.store.visibility``) filters before both."""
        page = await self.page(query, utc_now(), visible)
        return (page.total if page.total is not None else len(page.found)), page.found

    async def page(
        self, query: SearchQuery, snapshot: datetime, visible: sa.ColumnElement[bool] | None = None
    ) -> SearchPage:
        """A page of matches, as they were at ``snapshot`` (the walk's first page), from ``query.cursor`` on, and
        their total (None with ``_total=none``); ``visible`` (``gateway.store.visibility``) filters before both.

        Keyset paging: the matches are sorted by their last update *as at the snapshot* (the version then current:
        ``_version_at``), id breaking ties, and each page starts after the last one's key. A resource updated during a
        walk keeps its place (its key is its update before the snapshot), one created after it is not shown: each
        match that existed at the first page is seen once, which an offset could not promise under
        ``_sort=-_lastUpdated`` (a new resource shifts every page)."""
        shape, parameters = _shape(query)
        parameters["snapshot"] = snapshot
        if query.cursor is not None:
            parameters |= {"cursor_moment": query.cursor.moment, "cursor_id": query.cursor.id}
        count = _count(shape, snapshot=True)
        page = _walk_page(shape, query.descending, query.cursor is not None, query.count + 1, query.offset, visible)
        if visible is not None:  # the viewer's filter carries its own values: added to a copy, for this search
            count = count.where(visible)
        total = (await self._execute(count, parameters)).scalar_one() if query.total else None
        if query.summary_count or query.count == 0:
            return SearchPage(total, [], None)
        rows = (await self._execute(page, parameters)).all()
        found = [StoredResource.from_row(row) for row in rows[: query.count]]
        after = (
            Cursor(as_utc(rows[query.count - 1].sort_key), rows[query.count - 1].id)
            if len(rows) > query.count
            else None
        )
        return SearchPage(total, found, after)

    async def included(
        self,
        includes: Sequence[Include],
        matches: Sequence[StoredResource],
        visible: Callable[[str], sa.ColumnElement[bool] | None],
        limit: int,
    ) -> list[StoredResource]:
        """The resources ``_include`` / ``_revinclude`` add to ``matches`` — each once, none of the matches, only what
        ``visible(resource_type)`` lets through (the viewer's filter, as for any read) — at most ``limit``. Those
        marked ``iterate`` apply to what was included too, up to ``_INCLUDE_ROUNDS`` levels."""
        seen = {(stored.resource_type, stored.id) for stored in matches}
        included: list[StoredResource] = []
        sources = list(matches)
        for depth in range(_INCLUDE_ROUNDS):
            added: list[StoredResource] = []
            for include in includes:
                if depth > 0 and not include.iterate:
                    continue
                for stored in await self._include(include, sources, visible):
                    if (stored.resource_type, stored.id) not in seen and len(included) < limit:
                        seen.add((stored.resource_type, stored.id))
                        added.append(stored)
                        included.append(stored)
            if not added:
                break
            sources = added
        return included

    async def _include(
        self,
        include: Include,
        sources: Sequence[StoredResource],
        visible: Callable[[str], sa.ColumnElement[bool] | None],
    ) -> list[StoredResource]:
        """What one ``_include`` / ``_revinclude`` finds from ``sources``: one statement per type found."""
        r, s = resources.c, search_index.c
        wanted: dict[str, list[str]] = {}  # resource type → ids of the resources to include
        if include.reverse:
            # The ``include.source`` resources whose reference parameter points to one of the sources.
            for stored in sources:
                if include.target in (None, stored.resource_type):
                    wanted.setdefault(stored.resource_type, []).append(stored.id)
            statements = [
                sa.select(resources).where(
                    r.resource_type == include.source,
                    r.id.in_(
                        sa.select(s.resource_id).where(
                            s.resource_type == include.source,
                            s.param == include.parameter,
                            s.system == target_type,
                            s.value.in_(ids),
                        )
                    ),
                )
                for target_type, ids in wanted.items()
            ]
            conditions = [visible(include.source)] * len(statements)
        else:
            ids = [stored.id for stored in sources if stored.resource_type == include.source]
            if not ids:
                return []
            links = await self._execute(
                sa.select(s.system, s.value).where(
                    s.resource_type == include.source, s.param == include.parameter, s.resource_id.in_(ids)
                )
            )
            for link in links:
                if link.system in SEARCH_PARAMETERS and include.target in (None, link.system):
                    wanted.setdefault(link.system, []).append(link.value)
            statements = [
                sa.select(resources).where(r.resource_type == target_type, r.id.in_(sorted(set(targets))))
                for target_type, targets in wanted.items()
            ]
            conditions = [visible(target_type) for target_type in wanted]
        found: list[StoredResource] = []
        for statement, condition in zip(statements, conditions, strict=True):
            result = await self._execute(statement if condition is None else statement.where(condition))
            found += [StoredResource.from_row(row) for row in result]
        return found

    # --- writes ---

    def _stage(self, stored: StoredResource, identity_keys: Sequence[tuple[str, str]]) -> None:
        """The rows of a new resource (version 1) or of a new version's index: the resource's own row is inserted
        here for a new one, updated in place (``update``) for a new version."""
        if stored.version_id == 1:
            self._pending.add(
                resources,
                {
                    "resource_type": stored.resource_type,
                    "id": stored.id,
                    "version_id": 1,
                    "last_updated": stored.last_updated,
                    "content": stored.text if stored.text is not None else orjson.dumps(stored.content).decode(),
                    "method": stored.method,
                },
            )
        self._pending.wrote(stored)
        for entry in index_entries(stored.content):
            self._pending.add(
                search_index,
                {
                    "resource_type": stored.resource_type,
                    "resource_id": stored.id,
                    "param": entry.param,
                    "system": entry.system,
                    "value": entry.value,
                    "folded": entry.folded,
                },
            )
        for system, value in identity_keys:
            self._pending.add(
                resource_identities,
                {
                    "resource_type": stored.resource_type,
                    "system": system,
                    "value": value,
                    "resource_id": stored.id,
                },
            )

    def add(
        self,
        resource: Resource,
        *,
        resource_id: str | None = None,
        identity_keys: Sequence[tuple[str, str]] = (),
    ) -> StoredResource:
        """Create version 1 of a resource (id assigned unless given). Written at the next flush."""
        moment = utc_now()
        resource_id = resource_id or new_id()
        content = _with_meta(resource, resource_id, 1, moment)
        text = orjson.dumps(content).decode()
        stored = StoredResource(content["resourceType"], resource_id, 1, moment, content, "POST", text)
        self._stage(stored, identity_keys)
        self._pending.changes.append(Change(None, stored))
        return stored

    async def update(
        self,
        current: StoredResource,
        resource: Resource,
        *,
        identity_keys: Sequence[tuple[str, str]] = (),
        method: str = "PUT",
    ) -> StoredResource | None:
        """Write the next version of ``current``; None when someone else changed it first. ``method``: what
        history says wrote it (PATCH for a JSON Patch)."""
        moment = utc_now()
        version_id = current.version_id + 1
        content = _with_meta(resource, current.id, version_id, moment)
        text = orjson.dumps(content).decode()
        r = resources.c
        result = await self._execute(
            sa.update(resources)
            .where(
                r.resource_type == current.resource_type,
                r.id == current.id,
                r.version_id == current.version_id,
            )
            .values(version_id=version_id, last_updated=moment, content=text, method=method)
        )
        if result.rowcount != 1:
            return None
        self._pending.add(resource_versions, _replaced(current))
        s = search_index.c
        await self._connection.execute(
            sa.delete(search_index).where(s.resource_type == current.resource_type, s.resource_id == current.id)
        )
        stored = StoredResource(current.resource_type, current.id, version_id, moment, content, method, text)
        self._stage(stored, identity_keys)
        self._pending.changes.append(Change(current.content, stored))
        return stored

    async def update_many(self, changes: Sequence[tuple[StoredResource, Resource]]) -> list[StoredResource]:
        """Write the next version of several resources in a few statements: one executemany for the rows, one
        for the index rows that no longer hold; the versions and the new index rows go at the next flush. Only
        the index rows that change are touched (a Task's new businessStatus is one row out, one in).

        Each ``current`` must have been read with ``get_many(…, for_update=True)`` in this transaction: the lock
        is what makes the version check hold."""
        if not changes:
            return []
        moment = utc_now()
        r, s = resources.c, search_index.c
        await self._pending.flush(self._connection)
        staged: list[StoredResource] = []
        updates: list[dict[str, Any]] = []
        gone: list[dict[str, Any]] = []
        for current, resource in changes:
            version_id = current.version_id + 1
            content = _with_meta(resource, current.id, version_id, moment)
            text = orjson.dumps(content).decode()
            stored = StoredResource(current.resource_type, current.id, version_id, moment, content, "PUT", text)
            staged.append(stored)
            self._pending.changes.append(Change(current.content, stored))
            self._pending.wrote(stored)
            updates.append(
                {"b_type": stored.resource_type, "b_id": stored.id, "b_version": current.version_id}
                | {"b_next": version_id, "b_content": text}
            )
            self._pending.add(resource_versions, _replaced(current))
            before, after = set(index_entries(current.content)), index_entries(content)
            for entry in before.difference(after):
                gone.append({"b_type": stored.resource_type, "b_id": stored.id, "b_param": entry.param}
                            | {"b_system": entry.system, "b_value": entry.value})  # fmt: skip
            for entry in after:
                if entry not in before:
                    self._pending.add(
                        search_index,
                        {"resource_type": stored.resource_type, "resource_id": stored.id, "param": entry.param}
                        | {"system": entry.system, "value": entry.value, "folded": entry.folded},
                    )
        if self._postgresql:
            # One execution each, from arrays: executemany would be an execution (and a plan) per row.
            await self._connection.execute(
                _UPDATE_FROM_ARRAYS,
                {"moment": moment} | _columns(updates, ("b_type", "b_id", "b_version", "b_next", "b_content")),
            )
            if gone:
                await self._connection.execute(
                    _DELETE_FROM_ARRAYS, _columns(gone, ("b_type", "b_id", "b_param", "b_system", "b_value"))
                )
            return staged
        await self._connection.execute(
            sa.update(resources)
            .where(
                r.resource_type == sa.bindparam("b_type"),
                r.id == sa.bindparam("b_id"),
                r.version_id == sa.bindparam("b_version"),
            )
            .values(
                version_id=sa.bindparam("b_next"),
                last_updated=moment,
                content=sa.bindparam("b_content"),
                method="PUT",
            ),
            updates,
        )
        if gone:
            await self._connection.execute(
                sa.delete(search_index).where(
                    s.resource_type == sa.bindparam("b_type"),
                    s.resource_id == sa.bindparam("b_id"),
                    s.param == sa.bindparam("b_param"),
                    s.system.is_not_distinct_from(sa.bindparam("b_system")),
                    s.value == sa.bindparam("b_value"),
                ),
                gone,
            )
        return staged


def _replaced(current: StoredResource) -> dict[str, Any]:
    """The ``resource_versions`` row of the version an update replaces, as it was stored in ``resources``: its
    text as read or as written (never its content dumped again: that shares the writer's nested objects, which it
    may have changed since)."""
    return {
        "resource_type": current.resource_type,
        "id": current.id,
        "version_id": current.version_id,
        "last_updated": current.last_updated,
        "content": current.text if current.text is not None else orjson.dumps(current.content).decode(),
        "method": current.method,
    }


def _columns(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, list[Any]]:
    """Rows as one list per key (for ``unnest``)."""
    return {key: [row[key] for row in rows] for key in keys}


#: ``update_many`` on PostgreSQL: the version check and the new contents of every row in one statement.
_UPDATE_FROM_ARRAYS = sa.text(
    "UPDATE resources AS r SET version_id = u.next_version, last_updated = :moment, content = u.content, "
    "method = 'PUT' "
    "FROM unnest(CAST(:b_type AS VARCHAR(64)[]), CAST(:b_id AS VARCHAR(64)[]), CAST(:b_version AS INTEGER[]), "
    "CAST(:b_next AS INTEGER[]), CAST(:b_content AS TEXT[])) "
    "AS u(resource_type, id, version_id, next_version, content) "
    "WHERE r.resource_type = u.resource_type AND r.id = u.id AND r.version_id = u.version_id"
).bindparams(sa.bindparam("moment", type_=sa.DateTime(timezone=True)))
#: ``update_many`` on PostgreSQL: the index rows that no longer hold, in one statement.
_DELETE_FROM_ARRAYS = sa.text(
    "DELETE FROM search_index AS s USING unnest(CAST(:b_type AS VARCHAR(64)[]), CAST(:b_id AS VARCHAR(64)[]), "
    "CAST(:b_param AS VARCHAR(64)[]), CAST(:b_system AS VARCHAR(512)[]), CAST(:b_value AS VARCHAR(1024)[])) "
    "AS g(resource_type, resource_id, param, system, value) "
    "WHERE s.resource_type = g.resource_type AND s.resource_id = g.resource_id AND s.param = g.param "
    "AND s.system IS NOT DISTINCT FROM g.system AND s.value = g.value"
)


# A search's statement depends on its shape — resource type, which criteria with how many values of which kind,
# sort, page — not on the values, which are bound as parameters p0, p1, … in the order ``_shape`` lists them and
# ``_Binder`` consumes them. So the statement is built (and cache-keyed by SQLAlchemy) once per shape: building it
# afresh cost more than running it (the opposition look-up runs at every intake).
Shape = tuple[Any, ...]
_LAST_UPDATED = "_lastUpdated"  # the shape of every criterion on the resources' storage time


def _shape(query: SearchQuery) -> tuple[Shape, dict[str, Any]]:
    """The query without its values, and the values as parameters."""
    values: list[Any] = []
    criteria: list[Shape] = []
    for criterion in query.criteria:
        parameter = criterion.parameter
        if criterion.modifier == "missing":
            criteria.append((parameter.name, "missing", criterion.missing))
        elif is_last_updated(parameter):  # _lastUpdated, or a date that is the storage time: the column
            for date in criterion.dates:
                values += [date.start, date.end]
            criteria.append((_LAST_UPDATED, tuple(date.prefix for date in criterion.dates)))
        elif parameter.type is ParamType.DATE:  # an indexed date: its period's start and end, as text
            for date in criterion.dates:
                values += [fhir_instant(date.start), fhir_instant(date.end)]
            criteria.append((parameter.name, "date", tuple(date.prefix for date in criterion.dates)))
        elif parameter.name == "_id":
            values.append([token.value for token in criterion.tokens if token.value])
            criteria.append((parameter.name,))
        elif parameter.type is ParamType.STRING:
            # Without a modifier the folded value starts with the folded text; :contains holds it anywhere.
            before = "%" if criterion.modifier == "contains" else ""
            escaped = (
                before + text.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
                for text in criterion.strings
            )
            exact = criterion.modifier == "exact"
            values += list(criterion.strings) if exact else list(escaped)
            criteria.append((parameter.name, "string", exact, len(criterion.strings)))
        else:
            tokens = []
            for token in criterion.tokens:
                values += [part for part in (token.value, token.system) if part]
                system = "any" if token.system is None else "none" if token.system == "" else "given"
                tokens.append((token.value is not None, system))
            criteria.append((parameter.name, "token", tuple(tokens), criterion.modifier == "not"))
    return (query.resource_type, tuple(criteria)), {f"p{i}": value for i, value in enumerate(values)}


class _Binder:
    def __init__(self) -> None:
        self._next = 0

    def __call__(self, *, expanding: bool = False) -> sa.BindParameter[Any]:
        name, self._next = f"p{self._next}", self._next + 1
        return sa.bindparam(name, expanding=expanding)


def _conditions(shape: Shape) -> list[sa.ColumnElement[bool]]:
    resource_type, criteria = shape
    bind = _Binder()
    return [resources.c.resource_type == resource_type, *(_condition(c, resource_type, bind) for c in criteria)]


def _order(shape: Shape, *, descending: bool) -> tuple[sa.ColumnElement[Any], ...]:
    """Oldest first (or newest with ``_sort=-_lastUpdated``), id breaking ties. With criteria on the search index,
    the sort key is an expression rather than the bare column: otherwise SQLite, without statistics, walks the
    (resource_type, last_updated) index over every resource of the type to save the sort, and tests each against
    the criteria — a look-up that grows with the table. The expression leaves it the plan that fetches the
    matches through the search index first (PostgreSQL plans either way on its own statistics)."""
    r = resources.c
    indexed = any(criterion[0] not in (_LAST_UPDATED, "_id") for criterion in shape[1])
    moment: sa.ColumnElement[Any] = sa.func.coalesce(r.last_updated, r.last_updated) if indexed else r.last_updated
    if descending:
        return moment.desc(), r.id.desc()
    return moment, r.id


def _version_at() -> sa.ColumnElement[Any]:
    """The last update of a resource's version current at the ``snapshot`` parameter (NULL for a resource created
    since): a resource changed since the snapshot sorts by it in a walk, so that an update during the walk moves
    nothing."""
    r, v = resources.c, resource_versions.c
    snapshot = sa.bindparam("snapshot", type_=sa.DateTime(timezone=True))
    replaced = (
        sa.select(sa.func.max(v.last_updated))
        .where(v.resource_type == r.resource_type, v.id == r.id, v.last_updated <= snapshot)
        .scalar_subquery()
    )
    # The current version is in ``resources`` (the row itself), those it replaced in ``resource_versions``.
    return sa.case((r.last_updated <= snapshot, r.last_updated), else_=replaced)


def _after(key: sa.ColumnElement[Any], *, descending: bool) -> sa.ColumnElement[bool]:
    """The rows past the cursor (``cursor_moment``, ``cursor_id``) in the walk's order."""
    r = resources.c
    moment = sa.bindparam("cursor_moment", type_=sa.DateTime(timezone=True))
    last_id = sa.bindparam("cursor_id", type_=sa.String())
    if descending:
        return sa.or_(key < moment, sa.and_(key == moment, r.id < last_id))
    return sa.or_(key > moment, sa.and_(key == moment, r.id > last_id))


@functools.lru_cache(maxsize=64)
def _denials(by_patient: bool, systems: int, limit: int) -> sa.Select[Any]:
    """``ResourceRepository.denials``' statement, built once per shape: by Patient id or not, and how many identifier
    systems (``s0``, ``v0`` …: each system's values, one expanding IN). One select per index row name, each on the
    (resource_type, param, value) index: under one OR, SQLite would walk every Consent's index rows."""
    s, r = search_index.c, resources.c
    by_id, by_identifier = DENIAL_PARAMS
    parts: list[sa.Select[Any]] = []
    if by_patient:
        parts.append(
            sa.select(s.resource_id).where(
                s.resource_type == "Consent",
                s.param == by_id,
                s.system == "Patient",
                s.value == sa.bindparam("patient"),
            )
        )
    if systems:
        named = [
            sa.and_(s.system == sa.bindparam(f"s{g}"), s.value.in_(sa.bindparam(f"v{g}", expanding=True)))
            for g in range(systems)
        ]
        parts.append(
            sa.select(s.resource_id).where(s.resource_type == "Consent", s.param == by_identifier, sa.or_(*named))
        )
    ids = parts[0] if len(parts) == 1 else sa.union_all(*parts)
    return (
        sa.select(resources)
        .where(r.resource_type == "Consent", r.id.in_(ids))
        # Not the bare column: SQLite would walk the (resource_type, last_updated) index over every Consent to save
        # the sort (``_order``); the expression leaves it the plan that starts from the denials.
        .order_by(sa.func.coalesce(r.last_updated, r.last_updated), r.id)
        .limit(limit)
    )


@functools.lru_cache(maxsize=512)
def _walk_parts(shape: Shape, descending: bool, after: bool) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """A walk's page, in two parts (``_walk_page`` joins them): the matches unchanged since the snapshot, sorted by
    their last update — the column itself, so the (resource_type, last_updated, id) index serves the order and
    the limit as before — and those changed since, few, sorted by their version then (``_version_at``)."""
    r = resources.c
    snapshot = sa.bindparam("snapshot", type_=sa.DateTime(timezone=True))
    unchanged = sa.select(resources, r.last_updated.label("sort_key")).where(
        *_conditions(shape), r.last_updated <= snapshot
    )
    then = _version_at()
    changed = sa.select(resources, then.label("sort_key")).where(
        *_conditions(shape), r.last_updated > snapshot, then.is_not(None)
    )
    if after:
        unchanged = unchanged.where(_after(r.last_updated, descending=descending))
        changed = changed.where(_after(then, descending=descending))
    return unchanged.order_by(*_order(shape, descending=descending)), changed


def _walk_page(
    shape: Shape, descending: bool, after: bool, limit: int, offset: int, visible: sa.ColumnElement[bool] | None
) -> sa.Select[Any]:
    """Up to ``limit`` matches of a walk (after ``offset``), in its order: its two parts, each filtered by the
    viewer's ``visible`` and cut to what a page can take, then merged."""
    unchanged, changed = _walk_parts(shape, descending, after)
    if visible is not None:  # the viewer's filter carries its own values: added to copies, for this search
        unchanged, changed = unchanged.where(visible), changed.where(visible)
    both = sa.union_all(sa.select(unchanged.limit(limit + offset).subquery()), changed).subquery()
    order = (both.c.sort_key.desc(), both.c.id.desc()) if descending else (both.c.sort_key, both.c.id)
    statement = sa.select(both).order_by(*order).limit(limit)
    return statement.offset(offset) if offset else statement


@functools.lru_cache(maxsize=512)
def _matches(shape: Shape, descending: bool, limit: int, offset: int) -> sa.Select[Any]:
    statement = sa.select(resources).where(*_conditions(shape)).order_by(*_order(shape, descending=descending))
    return statement.limit(limit).offset(offset) if offset else statement.limit(limit)


@functools.lru_cache(maxsize=128)
def _count(shape: Shape, *, snapshot: bool = False) -> sa.Select[Any]:
    """How many match (``snapshot``: of those that existed at the walk's snapshot, as ``_walk_page`` pages them)."""
    statement = sa.select(sa.func.count()).select_from(resources).where(*_conditions(shape))
    if not snapshot:
        return statement
    moment = sa.bindparam("snapshot", type_=sa.DateTime(timezone=True))
    return statement.where(sa.or_(resources.c.last_updated <= moment, _version_at().is_not(None)))


#: What each date prefix selects (R4 search.html#prefix), for a stored period [start, end) against the searched
#: one [low, high): eq, the searched period contains the stored one; ne, it does not; gt, the stored period reaches
#: past the searched one (the range above it intersects); lt, it begins before it; ge / le, gt / lt or eq; sa, it
#: starts at or after the searched end (no overlap, all above); eb, it ends at or before the searched start.
_DATE_PREFIXES: dict[str, Callable[[Any, Any, Any, Any], sa.ColumnElement[bool]]] = {
    "eq": lambda start, end, low, high: sa.and_(start >= low, end <= high),
    "ne": lambda start, end, low, high: sa.or_(start < low, end > high),
    "gt": lambda start, end, low, high: end > high,
    "lt": lambda start, end, low, high: start < low,
    "ge": lambda start, end, low, high: sa.or_(end > high, sa.and_(start >= low, end <= high)),
    "le": lambda start, end, low, high: sa.or_(start < low, sa.and_(start >= low, end <= high)),
    "sa": lambda start, end, low, high: start >= high,
    "eb": lambda start, end, low, high: end <= low,
}
#: The same for a storage time, an instant t (at most millisecond precision, so the period [t, t + 1 ms)).
_INSTANT_PREFIXES: dict[str, Callable[[Any, Any, Any], sa.ColumnElement[bool]]] = {
    "eq": lambda t, low, high: sa.and_(t >= low, t < high),
    "ne": lambda t, low, high: sa.or_(t < low, t >= high),
    "gt": lambda t, low, high: t >= high,
    "lt": lambda t, low, high: t < low,
    "ge": lambda t, low, high: t >= low,
    "le": lambda t, low, high: t < high,
    "sa": lambda t, low, high: t >= high,
    "eb": lambda t, low, high: t < low,
}


def _condition(criterion: Shape, resource_type: str, bind: _Binder) -> sa.ColumnElement[bool]:
    r = resources.c
    name = criterion[0]
    if name == _LAST_UPDATED:
        # Each bound is bound once (``bind()`` names the next value), then used as often as the prefix needs.
        return sa.or_(*(_INSTANT_PREFIXES[prefix](r.last_updated, bind(), bind()) for prefix in criterion[1]))
    if name == "_id":
        return r.id.in_(bind(expanding=True))
    s = search_index.c
    if criterion[1] == "missing":
        # Any row of the parameter is the element present; a reference given by identifier alone is one too.
        names = (*indexed_as(resource_type, name), f"{name}:{IDENTIFIER_MODIFIER}")
        present = sa.select(s.resource_id).where(s.resource_type == resource_type, s.param.in_(names))
        return r.id.not_in(present) if criterion[2] else r.id.in_(present)
    alternatives: list[sa.ColumnElement[bool]] = []
    if criterion[1] == "date":
        # The stored period [value, system) against the searched one. Both are instants in one fixed-width UTC form
        # (``fhir_instant``), so comparing them as text compares the instants.
        for prefix in criterion[2]:
            alternatives.append(_DATE_PREFIXES[prefix](s.value, s.system, bind(), bind()))
    elif criterion[1] == "string":
        _, _, exact, count = criterion
        for _ in range(count):
            alternatives.append(s.value == bind() if exact else s.folded.like(bind(), escape="/"))
    else:
        for has_value, system in criterion[2]:
            parts = []
            if has_value:
                parts.append(s.value == bind())
            if system == "none":
                parts.append(s.system.is_(None))
            elif system == "given":
                parts.append(s.system == bind())
            alternatives.append(sa.and_(*parts))
    # An uncorrelated IN on the (resource_type, param, value) index: the matching rows are found first, then their
    # resources — never a walk over every resource of the type testing each (what a correlated EXISTS made
    # SQLite do: an opposition look-up grew with the number of Consents stored).
    names = indexed_as(resource_type, name)
    param = s.param == name if len(names) == 1 else s.param.in_(names)
    matching = sa.select(s.resource_id).where(s.resource_type == resource_type, param, sa.or_(*alternatives))
    if criterion[1] == "token" and criterion[3]:  # :not — R4: those without the element as well
        return r.id.not_in(matching)
    return r.id.in_(matching)


class IdempotencyRepository:
    def __init__(self, connection: AsyncConnection, pending: PendingWrites) -> None:
        self._connection = connection
        self._pending = pending

    async def find(self, keys: Sequence[str], client_id: str | None) -> JSONObject | None:
        """The recorded outcome under the first of these keys that has one, among those ``client_id`` recorded
        (None: authentication off, one caller)."""
        if not keys:
            return None
        await self._pending.flush(self._connection)
        result = await self._connection.execute(_idempotency_by_key, {"client_id": client_id or "", "keys": list(keys)})
        found = {row.key: row.outcome for row in result}
        for key in keys:
            if key in found:
                outcome: JSONObject = orjson.loads(found[key])
                return outcome
        return None

    def add(self, keys: Sequence[str], client_id: str | None, service_request_id: str, outcome: JSONObject) -> None:
        text = orjson.dumps(outcome).decode()
        moment = utc_now()
        for key in dict.fromkeys(keys):
            self._pending.add(
                idempotency_keys,
                {
                    "client_id": client_id or "",
                    "key": key,
                    "service_request_id": service_request_id,
                    "outcome": text,
                    "created_at": moment,
                },
            )

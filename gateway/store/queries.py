"""Reads: one resource, one version, its history, a search. Each opens a read-only unit of work.

Each read is made for a ``Viewer``: what it may not see answers exactly as what does not exist (404), and a
search counts and pages only what it may see — so nobody learns that a referral they are no party to exists. What
it may see it reads as ``VisibilityRepository.as_seen`` shows it (a Consent names a Patient it may not see by INS),
and searches likewise (``searchable``: no search by that Patient's id finds the Consent).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from gateway.errors import IssueCode, ResourceNotFound
from gateway.fhir.history import HistoryQuery
from gateway.fhir.primitives import is_id, utc_now
from gateway.fhir.search import SEARCH_PARAMETERS, SearchQuery
from gateway.store.database import Database
from gateway.store.repository import SearchPage, StoredResource, all_versions
from gateway.store.unit_of_work import UnitOfWork
from gateway.store.visibility import EVERYTHING, Viewer, searchable, visible, visible_type

SERVED_TYPES = frozenset(SEARCH_PARAMETERS)


def require_served(resource_type: str) -> None:
    if resource_type not in SERVED_TYPES:
        raise ResourceNotFound.single(
            IssueCode.RESOURCE_TYPE_UNSUPPORTED,
            f"the gateway does not serve {resource_type}; it serves {', '.join(sorted(SERVED_TYPES))}",
            None,
            "not-supported",
        )


def _not_found(resource_type: str, resource_id: str) -> ResourceNotFound:
    return ResourceNotFound.single(IssueCode.RESOURCE_NOT_FOUND, f"{resource_type}/{resource_id} is not known")


def _require_id(resource_type: str, resource_id: str) -> None:
    """An id no resource can have (R4's id type) is not looked up: it is unknown — and a NUL, which PostgreSQL text
    cannot hold, would be the driver's error (a 500) rather than a 404."""
    if not is_id(resource_id):
        raise _not_found(resource_type, resource_id[:64].replace("\x00", "?"))


async def read(database: Database, resource_type: str, resource_id: str, viewer: Viewer = EVERYTHING) -> StoredResource:
    require_served(resource_type)
    _require_id(resource_type, resource_id)
    async with UnitOfWork(database, write=False) as uow:
        stored = await uow.resources.get(resource_type, resource_id)
        # Asked whether it exists or not: another party's id and an unknown one cost the same look-ups (issue 23:
        # skipped for an unknown id, the visibility query made another party's 404 measurably slower).
        seen = await uow.visibility.can_see(viewer, resource_type, resource_id)
        if stored is not None:
            stored = (await uow.visibility.as_seen(viewer, [stored]))[0] if seen else None
    if stored is None:
        raise _not_found(resource_type, resource_id)
    return stored


async def read_version(
    database: Database, resource_type: str, resource_id: str, version: str, viewer: Viewer = EVERYTHING
) -> StoredResource:
    require_served(resource_type)
    _require_id(resource_type, resource_id)
    stored = None
    if version.isascii() and version.isdigit() and len(version) <= 9:
        async with UnitOfWork(database, write=False) as uow:
            stored = await uow.resources.get_version(resource_type, resource_id, int(version))
            # Every look-up, whatever the answers: the same statements for a hidden id as for an unknown one.
            exists = await uow.resources.exists(resource_type, resource_id)
            exists = await uow.visibility.can_see(viewer, resource_type, resource_id) and exists
            if exists and stored is not None:
                stored = (await uow.visibility.as_seen(viewer, [stored]))[0]
        if not exists:
            raise _not_found(resource_type, resource_id)
    if stored is None:
        raise ResourceNotFound.single(
            IssueCode.VERSION_NOT_FOUND, f"{resource_type}/{resource_id} has no version {version!r}"
        )
    return stored


async def history(
    database: Database,
    query: HistoryQuery,
    viewer: Viewer = EVERYTHING,
    resource_type: str | None = None,
    resource_id: str | None = None,
    types: Iterable[str] = SERVED_TYPES,
) -> tuple[int, list[StoredResource]]:
    """A page of the history of one resource (a 404 when the reader may not see it), of a type, or of the whole
    system (of ``types``: those the reader's scopes cover) — how many versions in all, and the page, as the reader
    may read them."""
    if resource_type is not None:
        require_served(resource_type)
    if resource_id is not None:
        assert resource_type is not None
        _require_id(resource_type, resource_id)
    async with UnitOfWork(database, write=False) as uow:
        if resource_id is not None:
            assert resource_type is not None
            # Both questions asked whether the id exists or not: a hidden id answers as a missing one does.
            exists = await uow.resources.exists(resource_type, resource_id)
            if not await uow.visibility.can_see(viewer, resource_type, resource_id) or not exists:
                raise _not_found(resource_type, resource_id)
            condition = None  # seen as a whole: checked above
        else:
            condition = _visible_versions(viewer, [resource_type] if resource_type else sorted(types))
        total, versions = await uow.resources.versions(
            condition, query.since, query.count, query.offset, resource_type, resource_id, query.snapshot
        )
        return total, await uow.visibility.as_seen(viewer, versions)


def _visible_versions(viewer: Viewer, types: list[str]) -> sa.ColumnElement[bool]:
    """The versions of the resources of ``types`` the viewer may see."""
    v = all_versions.c
    if viewer.everything:
        return v.resource_type.in_(types)
    alternatives = []
    for served in types:
        condition = visible(viewer, served, v.id)
        alternatives.append(
            v.resource_type == served if condition is None else sa.and_(v.resource_type == served, condition)
        )
    return sa.or_(*alternatives) if alternatives else sa.false()


def _includable(viewer: Viewer, readable: Callable[[str], bool], resource_type: str) -> sa.ColumnElement[bool] | None:
    """What an include may add of ``resource_type``: nothing of a type the token has no read scope for (a read of
    it is a 403), else what the viewer may see."""
    return visible_type(viewer, resource_type) if readable(resource_type) else sa.false()


#: At most this many resources are included in one page (``_include`` / ``_revinclude``), whatever the links.
MAX_INCLUDED = 1000


@dataclass(frozen=True, slots=True)
class SearchResult:
    """A page of a search as the viewer may see it: the page (``SearchPage``), what ``_include`` / ``_revinclude``
    add to it, and the snapshot the walk runs at (what the next links carry)."""

    page: SearchPage
    included: list[StoredResource]
    snapshot: datetime


async def search(
    database: Database,
    query: SearchQuery,
    viewer: Viewer = EVERYTHING,
    readable: Callable[[str], bool] = lambda _: True,
) -> SearchResult:
    """A page of ``query`` as the viewer sees it; what ``_include`` / ``_revinclude`` add, only of the types the
    caller's token may read (``readable``: its scopes) and only what a read would show."""
    snapshot = query.snapshot or utc_now()
    async with UnitOfWork(database, write=False) as uow:
        page = await uow.resources.page(query, snapshot, searchable(viewer, query))
        page = dataclasses.replace(page, found=await uow.visibility.as_seen(viewer, page.found))
        included: list[StoredResource] = []
        if query.includes and page.found:
            # Through the viewer's filter, as any read: an include never shows what a read would answer 404.
            found = await uow.resources.included(
                query.includes, page.found, functools.partial(_includable, viewer, readable), MAX_INCLUDED
            )
            included = await uow.visibility.as_seen(viewer, found)
        return SearchResult(page, included, snapshot)

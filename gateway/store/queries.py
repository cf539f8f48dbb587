"""Reads: one resource, one version, its history, a search. Each opens a read-only unit of work.

Each read is made for a ``Viewer``: what it may not see answers exactly as what does not exist (404), and a
search counts and pages only what it may see — so nobody learns that a referral they are no party to exists. What
it may see it reads as ``VisibilityRepository.as_seen`` shows it (a Consent names a Patient it may not see by INS),
and searches likewise (``searchable``: no search by that Patient's id finds the Consent).
"""

from __future__ import annotations

from gateway.errors import IssueCode, ResourceNotFound
from gateway.fhir.primitives import is_id
from gateway.fhir.search import SEARCH_PARAMETERS, SearchQuery
from gateway.store.database import Database
from gateway.store.repository import StoredResource
from gateway.store.unit_of_work import UnitOfWork
from gateway.store.visibility import EVERYTHING, Viewer, searchable

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
    database: Database, resource_type: str, resource_id: str, viewer: Viewer = EVERYTHING
) -> list[StoredResource]:
    require_served(resource_type)
    _require_id(resource_type, resource_id)
    async with UnitOfWork(database, write=False) as uow:
        versions = await uow.resources.history(resource_type, resource_id)
        if not await uow.visibility.can_see(viewer, resource_type, resource_id):  # asked for an unknown id too
            versions = []
        versions = await uow.visibility.as_seen(viewer, versions)
    if not versions:
        raise _not_found(resource_type, resource_id)
    return versions


async def search(
    database: Database, query: SearchQuery, viewer: Viewer = EVERYTHING
) -> tuple[int, list[StoredResource]]:
    async with UnitOfWork(database, write=False) as uow:
        total, found = await uow.resources.search(query, searchable(viewer, query))
        return total, await uow.visibility.as_seen(viewer, found)

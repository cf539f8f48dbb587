"""Searchset and history Bundles, with paging links."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import urlencode

from gateway.errors import Issue, IssueCode
from gateway.fhir.outcome import operation_outcome
from gateway.fhir.primitives import fhir_instant, new_id, utc_now
from gateway.fhir.search import Cursor, SearchQuery, paging_instant
from gateway.fhir.subset import ElementFlags, subset
from gateway.fhir.types import Resource
from gateway.store.queries import SearchResult
from gateway.store.repository import StoredResource


def _page_url(base_url: str, query: SearchQuery, position: Sequence[tuple[str, str]]) -> str:
    params = [*query.echo, ("_count", str(query.count)), *position]
    return f"{base_url}/{query.resource_type}?{urlencode(params)}"


def _cursor(cursor: Cursor) -> tuple[str, str]:
    return "_cursor", f"{paging_instant(cursor.moment)},{cursor.id}"


def _ignored(query: SearchQuery) -> Resource:
    """What ``Prefer: handling=lenient`` left out, said in an OperationOutcome (R4 search.html#errors)."""
    return operation_outcome(
        Issue(
            IssueCode.SEARCH_PARAMETER_UNKNOWN,
            f"{query.resource_type} has no search parameter {name!r}: ignored (Prefer: handling=lenient)",
            name,
            "not-supported",
            "warning",
        )
        for name in query.ignored
    )


def searchset(
    base_url: str,
    query: SearchQuery,
    result: SearchResult,
    flags: Callable[[str], ElementFlags | None] = lambda _: None,
) -> Resource:
    """The Bundle of a page. Its links page by keyset (``gateway.store.repository``): ``first`` and ``next`` carry
    the walk's ``_snapshot`` and ``next`` where it resumes (``_cursor``), so each match that existed at the first
    page is seen once however the store changes meanwhile; there is no ``previous`` or ``last``. The matches are
    cut as ``_summary`` / ``_elements`` ask (``flags``: each type's summary and mandatory elements); what
    ``_include`` / ``_revinclude`` added follows them whole (``search.mode`` include)."""
    page, snapshot = result.page, ("_snapshot", paging_instant(result.snapshot))
    here = [
        snapshot,
        *([_cursor(query.cursor)] if query.cursor else []),
        *([("_offset", str(query.offset))] if query.offset else []),
    ]
    links = [{"relation": "self", "url": _page_url(base_url, query, here)}]
    if not query.summary_count and query.count:
        links.append({"relation": "first", "url": _page_url(base_url, query, [snapshot])})
        if page.next is not None:
            links.append({"relation": "next", "url": _page_url(base_url, query, [snapshot, _cursor(page.next)])})
    bundle: Resource = {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": fhir_instant(utc_now())},
        "type": "searchset",
    }
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = links

    def shown(stored: StoredResource) -> Resource:
        return subset(stored.content, query.summary, query.elements, flags(stored.resource_type))

    entries: list[Resource] = [
        {"fullUrl": f"{base_url}/{stored.reference}", "resource": shown(stored), "search": {"mode": "match"}}
        for stored in page.found
    ]
    entries += [
        {"fullUrl": f"{base_url}/{stored.reference}", "resource": stored.content, "search": {"mode": "include"}}
        for stored in result.included
    ]
    if query.ignored:
        entries.append({"resource": _ignored(query), "search": {"mode": "outcome"}})
    return _with_entries(bundle, entries)


def _with_entries(bundle: Resource, entries: list[Resource]) -> Resource:
    """The Bundle with its entries — none when there are none: FHIR JSON has no empty arrays (json.html)."""
    if entries:
        bundle["entry"] = entries
    return bundle


def history(base_url: str, versions: Sequence[StoredResource]) -> Resource:
    entries: list[Resource] = []
    for stored in versions:
        is_first = stored.version_id == 1
        entries.append(
            {
                "fullUrl": f"{base_url}/{stored.reference}",
                "resource": stored.content,
                "request": {
                    "method": "POST" if is_first else "PUT",
                    "url": stored.resource_type if is_first else stored.reference,
                },
                "response": {
                    "status": "201 Created" if is_first else "200 OK",
                    "etag": stored.etag,
                    "lastModified": fhir_instant(stored.last_updated),
                },
            }
        )
    reference = versions[0].reference if versions else ""
    bundle: Resource = {
        "resourceType": "Bundle",
        "id": new_id(),
        "type": "history",
        "total": len(versions),
        "link": [{"relation": "self", "url": f"{base_url}/{reference}/_history"}],
    }
    return _with_entries(bundle, entries)


def conformance_searchset(
    base_url: str, resource_type: str, params: Sequence[tuple[str, str]], found: Sequence[Resource]
) -> Resource:
    """A search of the published conformance resources: a few dozen at most, so one page with all of them."""
    query = f"?{urlencode(params)}" if params else ""
    bundle: Resource = {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": fhir_instant(utc_now())},
        "type": "searchset",
        "total": len(found),
        "link": [{"relation": "self", "url": f"{base_url}/{resource_type}{query}"}],
    }
    entries = [
        {"fullUrl": f"{base_url}/{resource_type}/{resource['id']}", "resource": resource, "search": {"mode": "match"}}
        for resource in found
    ]
    return _with_entries(bundle, entries)

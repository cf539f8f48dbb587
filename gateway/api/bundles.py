"""Searchset and history Bundles, with paging links."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import urlencode

from gateway.errors import Issue, IssueCode
from gateway.fhir.history import HistoryQuery
from gateway.fhir.outcome import operation_outcome
from gateway.fhir.primitives import fhir_instant, new_id, utc_now
from gateway.fhir.search import Cursor, SearchQuery, paging_instant
from gateway.fhir.subset import ElementFlags, subset
from gateway.fhir.types import Resource
from gateway.store import queries
from gateway.store.database import Database
from gateway.store.queries import SearchResult
from gateway.store.repository import StoredResource
from gateway.store.visibility import Viewer


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


def _history_url(base_url: str, path: str, query: HistoryQuery, offset: int) -> str:
    params = [
        *query.echo,
        ("_count", str(query.count)),
        ("_snapshot", paging_instant(query.snapshot)),
        ("_offset", str(offset)),
    ]
    return f"{base_url}/{path}?{urlencode(params)}"


def history(base_url: str, path: str, query: HistoryQuery, total: int, versions: Sequence[StoredResource]) -> Resource:
    """A history Bundle of what ``path`` names (``_history``, ``Task/_history``, ``Task/1/_history``): a page of
    versions, newest first, each with the request that wrote it (POST, PUT or PATCH), and paging links."""
    entries: list[Resource] = []
    for stored in versions:
        method = stored.method or ("POST" if stored.version_id == 1 else "PUT")
        entries.append(
            {
                "fullUrl": f"{base_url}/{stored.reference}",
                "resource": stored.content,
                "request": {"method": method, "url": stored.resource_type if method == "POST" else stored.reference},
                "response": {
                    "status": "201 Created" if method == "POST" else "200 OK",
                    "etag": stored.etag,
                    "lastModified": fhir_instant(stored.last_updated),
                },
            }
        )
    links = [{"relation": "self", "url": _history_url(base_url, path, query, query.offset)}]
    if query.count:
        links.append({"relation": "first", "url": _history_url(base_url, path, query, 0)})
        if query.offset > 0:
            previous = max(0, query.offset - query.count)
            links.append({"relation": "previous", "url": _history_url(base_url, path, query, previous)})
        if query.offset + query.count < total:
            links.append({"relation": "next", "url": _history_url(base_url, path, query, query.offset + query.count)})
    bundle: Resource = {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": fhir_instant(utc_now())},
        "type": "history",
        "total": total,
        "link": links,
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


async def transaction_as_preferred(
    bundle: Resource, preference: str | None, database: Database, viewer: Viewer
) -> Resource:
    """A transaction-response as ``Prefer: return=`` asks, entry by entry (R4 http.html#2.21.0.5.2): the default
    and ``minimal`` name what was written (``response`` alone); ``representation`` adds each resource, in the
    version written, as the caller may read it; ``OperationOutcome`` an outcome to each entry that has none."""
    if preference not in ("representation", "OperationOutcome"):
        return bundle
    for entry in bundle.get("entry", []):
        response = entry.get("response", {})
        location = str(response.get("location", ""))
        if preference == "OperationOutcome":
            response.setdefault(
                "outcome",
                {
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {"severity": "information", "code": "informational", "diagnostics": f"{location} written"}
                    ],
                },
            )
            continue
        reference, _, version = location.partition("/_history/")
        resource_type, _, resource_id = reference.partition("/")
        stored = await queries.read_version(database, resource_type, resource_id, version, viewer)
        entry["resource"] = stored.content
        entry["response"] = entry.pop("response")  # fullUrl, resource, response: the order R4 lists them in
    return bundle

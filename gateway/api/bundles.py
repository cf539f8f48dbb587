"""Searchset and history Bundles, with paging links."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlencode

from gateway.fhir.history import HistoryQuery
from gateway.fhir.primitives import fhir_instant, new_id, utc_now
from gateway.fhir.search import SearchQuery
from gateway.fhir.types import Resource
from gateway.store import queries
from gateway.store.database import Database
from gateway.store.repository import StoredResource
from gateway.store.visibility import Viewer


def _page_url(base_url: str, query: SearchQuery, offset: int) -> str:
    params = [*query.echo, ("_count", str(query.count)), ("_offset", str(offset))]
    return f"{base_url}/{query.resource_type}?{urlencode(params)}"


def searchset(base_url: str, query: SearchQuery, total: int, found: Sequence[StoredResource]) -> Resource:
    links = [{"relation": "self", "url": _page_url(base_url, query, query.offset)}]
    if not query.summary_count and query.count:
        links.append({"relation": "first", "url": _page_url(base_url, query, 0)})
        if query.offset > 0:
            links.append(
                {
                    "relation": "previous",
                    "url": _page_url(base_url, query, max(0, query.offset - query.count)),
                }
            )
        if query.offset + query.count < total:
            links.append({"relation": "next", "url": _page_url(base_url, query, query.offset + query.count)})
        last = max(0, (total - 1) // query.count * query.count)
        links.append({"relation": "last", "url": _page_url(base_url, query, last)})
    bundle: Resource = {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": fhir_instant(utc_now())},
        "type": "searchset",
        "total": total,
        "link": links,
    }
    return _with_entries(
        bundle,
        [
            {"fullUrl": f"{base_url}/{stored.reference}", "resource": stored.content, "search": {"mode": "match"}}
            for stored in found
        ],
    )


def _with_entries(bundle: Resource, entries: list[Resource]) -> Resource:
    """The Bundle with its entries — none when there are none: FHIR JSON has no empty arrays (json.html)."""
    if entries:
        bundle["entry"] = entries
    return bundle


def _history_url(base_url: str, path: str, query: HistoryQuery, offset: int) -> str:
    params = [*query.echo, ("_count", str(query.count)), ("_offset", str(offset))]
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

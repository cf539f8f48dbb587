"""Searchset and history Bundles, with paging links."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlencode

from gateway.fhir.primitives import fhir_instant, new_id, utc_now
from gateway.fhir.search import SearchQuery
from gateway.fhir.types import Resource
from gateway.store.repository import StoredResource


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

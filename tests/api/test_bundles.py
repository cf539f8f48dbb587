"""Searchset and history Bundles (gateway/api/bundles.py)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
from lxml import etree

from tests.support.referrals import fresh, renamed

FHIR_JSON = "application/fhir+json"

NOTHING = {"identifier": "https://nowhere.example.org/referral-id|none"}


async def test_a_search_that_finds_nothing_has_no_entry(client: httpx.AsyncClient) -> None:
    # FHIR JSON has no empty arrays (json.html; ele-1): "entry": [] is invalid, the element is left out.
    for params in (NOTHING, NOTHING | {"_summary": "count"}):
        response = await client.get("/fhir/ServiceRequest", params=params)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["type"] == "searchset" and bundle["total"] == 0 and "entry" not in bundle
        assert bundle["link"][0]["relation"] == "self"


async def test_every_searchset_link_carries_the_search_controls_honoured(client: httpx.AsyncClient) -> None:
    """A link the client follows must run the same search: ``_summary=count`` followed from its self link stays a
    count; ``_sort``, ``_total`` and ``_format`` are on the self, first, previous, next and last links alike."""
    for i in range(3):
        bundle = fresh(commune="75056")
        posted = await client.post("/fhir", json=renamed(bundle, f"-{i}"), headers={"content-type": FHIR_JSON})
        assert posted.status_code == 200, posted.text
    count = (await client.get("/fhir/ServiceRequest", params={"_summary": "count"})).json()
    self_link = next(link["url"] for link in count["link"] if link["relation"] == "self")
    assert parse_qs(urlsplit(self_link).query)["_summary"] == ["count"]
    followed = (await client.get(self_link)).json()
    assert followed["total"] == 3 and "entry" not in followed
    controls = {"_sort": "-_lastUpdated", "_total": "accurate", "_format": "json", "_summary": "false"}
    first = (await client.get("/fhir/ServiceRequest", params=controls | {"_count": "1"})).json()
    page = (await client.get(next(link["url"] for link in first["link"] if link["relation"] == "next"))).json()
    # Keyset paging: a next link resumes after this page's last match; there is no previous or last.
    assert {link["relation"] for link in page["link"]} == {"self", "first", "next"}
    for link in page["link"]:
        query = parse_qs(urlsplit(link["url"]).query)
        assert {name: query.get(name) for name in controls} == {name: [value] for name, value in controls.items()}
        assert query["_count"] == ["1"]


async def test_a_format_in_a_search_form_is_honoured_like_in_the_url(client: httpx.AsyncClient) -> None:
    """POST _search: a ``_format`` in the form body means what it means in the URL — the answer is in it, and so
    are the pages its links lead to."""
    answer = await client.post("/fhir/ServiceRequest/_search", data={"_format": "xml", "_count": "1"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/fhir+xml")
    self_link = etree.fromstring(answer.content).find("{http://hl7.org/fhir}link/{http://hl7.org/fhir}url")
    assert self_link is not None and parse_qs(urlsplit(self_link.get("value")).query)["_format"] == ["xml"]

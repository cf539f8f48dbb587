"""History (R4 http.html#history) at instance, type and system level: newest first, ``_since``, ``_count`` with
paging links, and the method that wrote each version (a JSON Patch is a PATCH)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.referrals import fresh
from tests.workflow.test_decisions_api import _gp_validation

FHIR_JSON = {"content-type": "application/fhir+json"}
PATCH = {"content-type": "application/json-patch+json"}


async def _walk(client: httpx.AsyncClient, url: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every entry of a history, following its next links to the end."""
    entries: list[dict[str, Any]] = []
    page = (await client.get(url, params=params)).json()
    while True:
        entries += page.get("entry", [])
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            return entries
        assert following[0].startswith("http://gateway.test/fhir/")
        page = (await client.get(following[0])).json()


async def test_a_patched_version_is_recorded_as_patch_and_a_put_as_put(client: httpx.AsyncClient) -> None:
    _, task = await _gp_validation(client)
    patched = await client.patch(
        f"/fhir/Task/{task['id']}",
        json=[{"op": "replace", "path": "/status", "value": "completed"}],
        headers=PATCH | {"if-match": 'W/"1"'},
    )
    assert patched.status_code == 200, patched.text
    history = (await client.get(f"/fhir/Task/{task['id']}/_history")).json()
    assert [(e["request"]["method"], e["request"]["url"], e["response"]["status"]) for e in history["entry"]] == [
        ("PATCH", f"Task/{task['id']}", "200 OK"),
        ("POST", "Task", "201 Created"),
    ]
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    _, other = await _gp_validation_again(client)
    put = await client.put(
        f"/fhir/Task/{other['id']}", json=other | {"status": "completed"}, headers=FHIR_JSON | {"if-match": 'W/"1"'}
    )
    assert put.status_code == 200, put.text
    methods = [e["request"]["method"] for e in (await client.get(f"/fhir/Task/{other['id']}/_history")).json()["entry"]]
    assert methods == ["PUT", "POST"]


async def _gp_validation_again(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    import tests.workflow.test_decisions_api as decisions

    bundle = decisions.pta_2016_referral("-again")
    answer = await client.post("/fhir", json=bundle, headers=FHIR_JSON)
    sr = next(e for e in answer.json()["entry"] if "/ServiceRequest/" in e["fullUrl"])
    reference = sr["response"]["location"].split("/_history")[0]
    tasks = (await client.get("/fhir/Task", params={"focus": reference})).json()["entry"]
    (task,) = [t["resource"] for t in tasks if t["resource"]["code"]["coding"][0]["code"] == "gp-validation"]
    return sr, task


async def test_type_and_system_history_page_to_the_end(client: httpx.AsyncClient) -> None:
    for n in range(2):
        assert (await client.post("/fhir", json=fresh(tag=f"hist{n}"), headers=FHIR_JSON)).status_code == 200
    tasks = (await client.get("/fhir/Task", params={"_count": 100})).json()
    patients = (await client.get("/fhir/Patient")).json()
    task_history = await _walk(client, "/fhir/Task/_history", {"_count": 1})
    assert sorted(e["resource"]["id"] for e in task_history) == sorted(e["resource"]["id"] for e in tasks["entry"])
    assert {e["resource"]["resourceType"] for e in task_history} == {"Task"}
    first = (await client.get("/fhir/Task/_history", params={"_count": 1})).json()
    assert first["type"] == "history" and first["total"] == tasks["total"] and len(first["entry"]) == 1
    everything = await _walk(client, "/fhir/_history", {"_count": 3})
    kinds = {e["resource"]["resourceType"] for e in everything}
    assert {"Patient", "ServiceRequest", "Task", "Provenance"} <= kinds
    assert len(everything) == (await client.get("/fhir/_history")).json()["total"]
    assert len({(e["fullUrl"], e["resource"]["meta"]["versionId"]) for e in everything}) == len(everything)
    moments = [e["response"]["lastModified"] for e in everything]
    assert moments == sorted(moments, reverse=True)  # newest first
    assert sum(e["resource"]["resourceType"] == "Patient" for e in everything) == patients["total"]


async def test_since_keeps_the_versions_written_from_then(client: httpx.AsyncClient) -> None:
    _, task = await _gp_validation(client)
    await client.patch(
        f"/fhir/Task/{task['id']}",
        json=[{"op": "replace", "path": "/status", "value": "completed"}],
        headers=PATCH | {"if-match": 'W/"1"'},
    )
    history = (await client.get(f"/fhir/Task/{task['id']}/_history")).json()["entry"]
    since = history[0]["response"]["lastModified"]  # the PATCH's
    for url in (f"/fhir/Task/{task['id']}/_history", "/fhir/Task/_history"):
        found = (await client.get(url, params={"_since": since})).json()
        versions = [e["resource"]["meta"]["versionId"] for e in found["entry"] if e["resource"]["id"] == task["id"]]
        assert versions == ["2"], url  # the decision routed the referral: the new platform Task comes after it too
        assert all(e["response"]["lastModified"] >= since for e in found["entry"])
        assert all(f"_since={since.replace(':', '%3A').replace('+', '%2B')}" in link["url"] for link in found["link"])
    later = (await client.get("/fhir/_history", params={"_since": "2999-01-01T00:00:00Z"})).json()
    assert later["total"] == 0 and "entry" not in later


async def test_history_parameters_are_checked(client: httpx.AsyncClient) -> None:
    for params in ({"_since": "2026-12-01"}, {"_since": "yesterday"}, {"_count": "-1"}, {"family": "x"}):
        answer = await client.get("/fhir/Task/_history", params=params)
        assert answer.status_code == 400, params
        assert answer.json()["issue"][0]["expression"] == [next(iter(params))]
    capped = (await client.get("/fhir/_history", params={"_count": 100000})).json()
    assert "_count=500" in capped["link"][0]["url"]  # held to the maximum, not refused
    assert (await client.get("/fhir/Basic/_history")).status_code == 404
    assert (await client.get("/fhir/Task/unknown/_history")).status_code == 404


async def test_a_history_walk_is_not_shifted_by_writes_during_it(client: httpx.AsyncClient) -> None:
    """History pages newest first by offset: a referral posted between two pages pushed every version one or more
    places down, so the next page repeated what the last one showed (a platform walking ``Task/_history`` saw
    versions twice). The links now carry the walk's ``_snapshot``: the versions written up to the first page, the
    same offsets on every page; what was written since waits for the next walk."""
    for n in range(2):
        assert (await client.post("/fhir", json=fresh(tag=f"walk{n}"), headers=FHIR_JSON)).status_code == 200
    for url in ("/fhir/Task/_history", "/fhir/_history"):
        before = (await client.get(url, params={"_count": 1000})).json()
        expected = sorted((e["fullUrl"], e["resource"]["meta"]["versionId"]) for e in before["entry"])
        page = (await client.get(url, params={"_count": 2})).json()
        seen: list[tuple[str, str]] = []
        while True:
            seen += [(e["fullUrl"], e["resource"]["meta"]["versionId"]) for e in page.get("entry", [])]
            assert page["total"] == len(expected), url
            # a write during the walk: a whole referral, newer than everything walked
            posted = await client.post("/fhir", json=fresh(tag=f"during{len(seen)}"), headers=FHIR_JSON)
            assert posted.status_code == 200
            following = [link["url"] for link in page["link"] if link["relation"] == "next"]
            if not following:
                break
            assert "_snapshot=" in following[0]
            page = (await client.get(following[0])).json()
        assert sorted(seen) == expected, url

"""The console with authentication off, in Debian's chromium: post an example and see the answer and its Tasks;
validate an invalid referral and see the issue's line highlighted, a click going there; decide a Task through the
API and see the timeline update; replay a dead letter from the Outbox page; see a Subscription made through the API
listed active with its events, and its $status and last events."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import loopback_routing
from tests.e2e.test_subscriptions_e2e import Subscriber
from tests.notify.test_subscriptions import TASK_TOPIC, subscription
from tests.support.processes import GatewayProcess, Platform, running, wait_until
from tests.support.referrals import fresh

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FHIR_JSON = {"content-type": "application/fhir+json"}


class Console:
    def __init__(self, process: GatewayProcess, platform: Platform) -> None:
        self.process, self.platform = process, platform

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.process.port}"


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    directory = tmp_path_factory.mktemp("console-gateway")
    platform = Platform()
    routing, tokens = loopback_routing(directory, platform.endpoint)
    process = GatewayProcess(directory, routing, env=tokens)
    with running(platform, process):
        yield Console(process, platform)


async def shoot(page: Any, screenshots: Path, name: str) -> None:
    await page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


async def test_post_an_example_and_see_the_answer_and_its_tasks(console: Console, page: Any, screenshots: Path) -> None:
    from playwright.async_api import expect

    await page.goto(f"{console.root}/console")
    await expect(page).to_have_url(re.compile(r"/console/examples$"))
    await expect(page.get_by_role("link", name="Examples")).to_have_attribute("aria-current", "page")
    row = page.locator("tr", has=page.get_by_role("link", name="referral-hospital-nurse.json", exact=True))
    await expect(row.locator("td.expected")).to_contain_text("gp-information: requested")
    # By keyboard: the Post button takes the focus and Enter presses it.
    await row.get_by_role("button", name="Post").focus()
    await page.keyboard.press("Enter")
    answer = page.locator('.answer[data-for="referral-hospital-nurse.json"]')
    await expect(answer.locator(".answer-status")).to_contain_text("200")
    await expect(answer.locator(".entry-status")).to_have_text("201 Created")
    await expect(answer.locator(".sr-status")).to_have_text("active")
    tasks = answer.locator("table.tasks")
    await expect(tasks).to_contain_text("platform-intake")
    await expect(tasks).to_contain_text("gp-information")
    invalid = page.locator("tr", has=page.get_by_role("link", name="invalid/bad-ins-key.json", exact=True))
    await invalid.get_by_role("button", name="Post").click()
    refused = page.locator('.answer[data-for="invalid/bad-ins-key.json"]')
    await expect(refused.locator(".answer-status")).to_contain_text("422")
    await expect(refused.locator(".issues")).to_contain_text("ins-key-invalid")
    # An HL7 v2 message: its ACK, and the Tasks of the referral its MSA-3 names.
    v2 = page.locator("tr", has=page.get_by_role("link", name="hl7v2/ref-i12-discharge.hl7", exact=True))
    await v2.get_by_role("button", name="Post").click()
    acked = page.locator('.answer[data-for="hl7v2/ref-i12-discharge.hl7"]')
    await expect(acked.locator(".answer-status")).to_contain_text("200")
    await expect(acked.locator("table.tasks")).to_contain_text("patient-information")
    await expect(acked.locator("pre")).to_contain_text("MSA|AA|")
    await shoot(page, screenshots, "examples")
    # Nothing from elsewhere: every request the page made went to the gateway.
    assert all(url.startswith(console.root) for url in await _requests(page))


async def _requests(page: Any) -> list[str]:
    entries: list[str] = await page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    return entries


async def test_an_invalid_referral_has_its_issue_line_highlighted(
    console: Console, page: Any, screenshots: Path
) -> None:
    from playwright.async_api import expect

    text = (EXAMPLES / "invalid" / "bad-ins-key.json").read_text()
    line = 1 + text.splitlines().index(next(x for x in text.splitlines() if '"value": "238115951221460"' in x))
    await page.goto(f"{console.root}/console/validate")
    await page.get_by_role("textbox", name="Document").fill(text)
    await page.get_by_role("button", name="Validate").click()
    await expect(page.locator("#validate-state")).to_have_text("1 error(s)")
    issue = page.locator("#issues button.issue")
    await expect(issue).to_have_count(1)
    await expect(issue).to_contain_text("ins-key-invalid")
    await expect(issue).to_contain_text(f"line {line}")
    flagged = page.locator("#source li.flagged")
    await expect(flagged).to_have_count(1)
    await expect(flagged).to_have_attribute("id", f"L{line}")
    # Scroll away, then go back by the issue, with the keyboard.
    await page.locator("#L1").scroll_into_view_if_needed()
    await issue.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator(f"#L{line}")).to_have_class(re.compile(r"\bcurrent\b"))
    await expect(page.locator(f"#L{line}")).to_be_in_viewport()
    await shoot(page, screenshots, "validate-json")
    # XML too: the same mistake, pinned to its line in the XML document.
    xml = (EXAMPLES / "referral-hospital-nurse.xml").read_text().replace("238115951221459", "238115951221460")
    xml_line = 1 + next(n for n, x in enumerate(xml.splitlines()) if "238115951221460" in x)
    await page.get_by_role("textbox", name="Document").fill(xml)
    await page.get_by_role("button", name="Validate").click()
    await expect(page.locator("#source li.flagged")).to_have_attribute("id", f"L{xml_line}")
    await shoot(page, screenshots, "validate-xml")


def _tasks(console: Console, service_request: str) -> dict[str, dict[str, Any]]:
    found = httpx.get(f"{console.process.base}/Task", params={"focus": service_request}).json()
    return {t["resource"]["code"]["coding"][0]["code"]: t["resource"] for t in found.get("entry", [])}


async def test_a_decision_through_the_api_shows_in_the_timeline(console: Console, page: Any, screenshots: Path) -> None:
    from playwright.async_api import expect

    bundle = json.loads((EXAMPLES / "referral-nurse-pta-2016.json").read_text())
    async with httpx.AsyncClient(timeout=30) as http:
        posted = await http.post(console.process.base, json=bundle, headers=FHIR_JSON)
    assert posted.status_code == 200, posted.text
    identifier = next(
        e["resource"]["identifier"][0]["value"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "ServiceRequest"
    )
    await page.goto(f"{console.root}/console/referral")
    await page.get_by_label("ServiceRequest identifier").fill(identifier)
    await page.keyboard.press("Enter")
    await expect(page.locator("#service-request .sr-status")).to_have_text("draft")
    validation = page.locator('.task[data-task="gp-validation"] ol.timeline li')
    await expect(validation).to_have_count(1)
    await expect(validation.first).to_contain_text("requested")
    await shoot(page, screenshots, "referral-before")

    async with httpx.AsyncClient(timeout=30) as http:
        found = await http.get(f"{console.process.base}/ServiceRequest", params={"identifier": identifier})
        reference = "ServiceRequest/" + found.json()["entry"][0]["resource"]["id"]
        task = _tasks(console, reference)["gp-validation"]
        accepted = await http.put(
            f"{console.process.base}/Task/{task['id']}",
            json=task | {"status": "accepted"},
            headers=FHIR_JSON | {"if-match": f'W/"{task["meta"]["versionId"]}"'},
        )
    assert accepted.status_code == 200, accepted.text
    wait_until(lambda: console.platform.message_ids(), 20, 0.2, "the referral delivered after the GP accepted")
    await page.get_by_role("button", name="Refresh").click()
    await expect(page.locator("#service-request .sr-status")).to_have_text("active")
    await expect(validation).to_have_count(2)
    await expect(validation.nth(1)).to_contain_text("accepted")
    await expect(page.locator('.task[data-task="platform-intake"]')).to_be_visible()
    await expect(page.locator("#provenance table")).to_contain_text("Task/" + task["id"])
    deliveries = page.locator("#deliveries table")
    await expect(deliveries).to_contain_text("referral-request")
    await expect(deliveries).to_contain_text("delivered")
    await shoot(page, screenshots, "referral-after")


async def test_a_dead_letter_is_replayed_from_the_outbox_page(console: Console, page: Any, screenshots: Path) -> None:
    from playwright.async_api import expect

    def overview() -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{console.root}/console/data/outbox").json()
        return answer

    wait_until(lambda: all(d["pending"] == 0 for d in overview()["destinations"]), 20, 0.2, "an idle outbox")
    console.platform.script.append(400)  # the next delivery is refused for good: a dead letter
    bundle = fresh(commune="75056")
    async with httpx.AsyncClient(timeout=30) as http:
        posted = await http.post(console.process.base, json=bundle, headers=FHIR_JSON)
    assert posted.status_code == 200, posted.text
    wait_until(lambda: overview()["dead_letters"], 20, 0.2, "a dead letter")
    await page.goto(f"{console.root}/console/outbox")
    dead = page.locator("#dead-letters table tbody tr")
    await expect(dead).to_have_count(1)
    await expect(dead).to_contain_text("HTTP 400")
    await expect(page.locator("#destinations table")).to_contain_text("dac-75")
    await shoot(page, screenshots, "outbox-dead-letter")
    await dead.get_by_role("button", name="Replay").click()
    await expect(page.locator("#outbox-state")).to_contain_text("queued again")
    wait_until(lambda: not overview()["dead_letters"], 20, 0.2, "the replayed delivery delivered")
    await page.get_by_role("button", name="Refresh").click()
    await expect(page.locator("#dead-letters")).to_have_text("No dead letter.")
    await shoot(page, screenshots, "outbox-replayed")

    # The referral's timeline lists each attempt of that delivery with its time and answer: refused, then taken.
    identifier = next(
        e["resource"]["identifier"][0]["value"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "ServiceRequest"
    )
    await page.goto(f"{console.root}/console/referral")
    await page.get_by_label("ServiceRequest identifier").fill(identifier)
    await page.keyboard.press("Enter")
    attempts = page.locator("#deliveries ol.attempts li")
    await expect(attempts).to_have_count(2)
    await expect(attempts.nth(0)).to_contain_text("HTTP 400")
    await expect(attempts.nth(1)).to_contain_text("HTTP 200")
    await expect(attempts.nth(0).locator(".when")).to_contain_text("UTC")
    await shoot(page, screenshots, "referral-attempts")


async def test_a_subscription_is_listed_with_its_status_and_events(
    console: Console, page: Any, screenshots: Path
) -> None:
    from playwright.async_api import expect

    subscriber = Subscriber().start()
    try:
        hook = f"{subscriber.origin}/gp/notifications"
        resource = subscription(TASK_TOPIC, ("Task?code=platform-intake",), content="id-only", endpoint=hook)
        async with httpx.AsyncClient(timeout=30) as http:
            created = await http.post(f"{console.process.base}/Subscription", json=resource, headers=FHIR_JSON)
            assert created.status_code == 201, created.text
            sub_id = created.json()["id"]
            posted = await http.post(console.process.base, json=fresh(commune="75056"), headers=FHIR_JSON)
            assert posted.status_code == 200, posted.text

        def settled() -> int:
            """Its events count once every notification of it was received and nothing waits in the outbox."""
            outbox = httpx.get(f"{console.root}/console/data/outbox").json()
            [line] = [s for s in httpx.get(f"{console.root}/console/data/subscriptions").json()["subscriptions"]
                      if s["id"] == sub_id]  # fmt: skip
            idle = all(d["pending"] == 0 for d in outbox["destinations"])
            done = line["status"] == "active" and len(subscriber.events("/gp/notifications")) == line["events_count"]
            return int(line["events_count"]) if idle and done and line["events_count"] else 0

        events = wait_until(settled, 30, 0.2, "the Subscription's events notified")
    finally:
        subscriber.stop()
    await page.goto(f"{console.root}/console/subscriptions")
    await expect(page.get_by_role("link", name="Subscriptions")).to_have_attribute("aria-current", "page")
    row = page.locator(f'#subscriptions tr[data-id="{sub_id}"]')
    await expect(row.locator(".sub-status")).to_have_text("active")
    await expect(row.locator(".events-count")).to_have_text(str(events))
    await expect(row.locator(".filters")).to_have_text("Task?code=platform-intake")
    await expect(row.locator(".endpoint")).to_have_text(hook)
    await expect(row).to_contain_text("id-only · application/fhir+json")
    await expect(row).to_contain_text("task")  # the topic, by its name
    # By keyboard: the row's Show button, then Enter; the Subscription's $status and its last events.
    await row.get_by_role("button", name=f"Show Subscription {sub_id}").focus()
    await page.keyboard.press("Enter")
    selected = page.locator("#subscription")
    await expect(selected).to_be_focused()
    await expect(selected.locator("h2")).to_have_text(f"Subscription {sub_id}")
    await expect(selected.locator(".sub-status")).to_have_text("active")
    await expect(selected.locator(".events-since")).to_have_text(str(events))
    shown = selected.locator("table.events tbody tr")
    await expect(shown).to_have_count(min(events, 20))
    await expect(shown.first).to_contain_text(str(events))  # the last event first
    await expect(shown.first).to_contain_text("Task/")
    await expect(row).to_have_attribute("aria-current", "true")
    await shoot(page, screenshots, "subscriptions")
    assert all(url.startswith(console.root) for url in await _requests(page))


async def test_the_api_page_lists_the_routes_without_a_cdn(console: Console, page: Any, screenshots: Path) -> None:
    from playwright.async_api import expect

    await page.goto(f"{console.root}/console/api")
    await expect(page.locator("table.api")).to_contain_text("/fhir/$process-message")
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(f"{console.root}/docs")).status_code == 404
    assert all(url.startswith(console.root) for url in await _requests(page))
    await shoot(page, screenshots, "api")

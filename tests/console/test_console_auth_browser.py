"""The console with authentication on (GATEWAY_CONSOLE=on), in Debian's chromium: nothing without an operator's
token; with one, entered once in the page (kept in the tab's sessionStorage, never in a URL or a log), the same
flows as with authentication off — post an example, see an issue's line, the timeline, replay a dead letter."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.console.test_console_browser import EXAMPLES, shoot
from tests.support.auth import TEST_SECRET, SmartClient, write_clients
from tests.support.processes import GatewayProcess, Platform, running, wait_until, write_routing

pytestmark = pytest.mark.e2e
OPERATOR = SmartClient("console-ops", "operator", ["system/*.cruds", "system/AuditEvent.rs"])
SENDER = SmartClient("hospital", "sender", ["system/ServiceRequest.cr", "system/*.rs"])


class SecureConsole:
    def __init__(self, process: GatewayProcess, platform: Platform) -> None:
        self.process, self.platform = process, platform

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.process.port}"

    def token(self, client: SmartClient) -> str:
        url = f"{self.root}/auth/token"
        answer = httpx.post(url, data=client.token_form(url), timeout=30)
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        return token


@pytest.fixture(scope="module")
def secure_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureConsole]:
    directory = tmp_path_factory.mktemp("secure-console")
    platform = Platform()
    routing = write_routing(
        directory,
        {"dac-75": {"endpoint": platform.endpoint, "finess": "750000010"}},
        {"44": "dac-75", "75": "dac-75", "59": "dac-75"},
    )
    clients = write_clients(directory / "clients", [OPERATOR, SENDER])
    env = {
        "GATEWAY_AUTH": "on",
        "GATEWAY_CLIENTS": str(clients),
        "GATEWAY_AUTH_SECRET": TEST_SECRET,
        "GATEWAY_CONSOLE": "on",
    }
    process = GatewayProcess(directory, routing, env=env)
    with running(platform, process):
        yield SecureConsole(process, platform)


async def test_the_console_needs_an_operators_token(
    secure_console: SecureConsole, page: Any, screenshots: Path
) -> None:
    from playwright.async_api import expect

    root = secure_console.root
    sender = {"Authorization": f"Bearer {secure_console.token(SENDER)}"}
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(f"{root}/console/data/outbox")).status_code == 401
        assert (await http.get(f"{root}/console/data/outbox", headers=sender)).status_code == 403
    await page.goto(f"{root}/console/outbox")
    await expect(page.locator("#outbox-state")).to_contain_text("needs an operator token")
    await shoot(page, screenshots, "auth-outbox-without-token")
    await page.goto(f"{root}/console/subscriptions")
    await expect(page.locator("#subscriptions-state")).to_contain_text("needs an operator token")


async def test_with_an_operators_token_every_flow_works(
    secure_console: SecureConsole, page: Any, screenshots: Path
) -> None:
    from playwright.async_api import expect

    root = secure_console.root
    token = secure_console.token(OPERATOR)
    await page.goto(f"{root}/console/outbox")
    await page.get_by_label("Operator token").fill(token)
    await page.keyboard.press("Enter")
    await expect(page.locator("#token-state")).to_have_text("token set for this tab")
    await expect(page.locator("#destinations")).to_have_text("Nothing sent yet.")

    # Examples: the first delivery is refused for good, so a dead letter follows.
    secure_console.platform.script.append(400)
    await page.get_by_role("navigation").get_by_role("link", name="Examples", exact=True).click()
    row = page.locator("tr", has=page.get_by_role("link", name="referral-gp.json", exact=True))
    await row.get_by_role("button", name="Post").click()
    answer = page.locator('.answer[data-for="referral-gp.json"]')
    await expect(answer.locator(".entry-status")).to_have_text("201 Created")
    await expect(answer.locator("table.tasks")).to_contain_text("platform-intake")
    await shoot(page, screenshots, "auth-examples")

    # Validate: the line.
    await page.get_by_role("navigation").get_by_role("link", name="Validate", exact=True).click()
    await page.get_by_role("textbox", name="Document").fill((EXAMPLES / "invalid" / "bad-rpps-key.json").read_text())
    await page.get_by_role("button", name="Validate").click()
    await expect(page.locator("#issues")).to_contain_text("identifier-invalid")
    await expect(page.locator("#source li.flagged")).to_have_count(1)
    await shoot(page, screenshots, "auth-validate")

    # Outbox: the dead letter, replayed.
    await page.get_by_role("navigation").get_by_role("link", name="Outbox", exact=True).click()
    dead = page.locator("#dead-letters table tbody tr")
    await expect(dead).to_have_count(1)
    await dead.get_by_role("button", name="Replay").click()
    await expect(page.locator("#outbox-state")).to_contain_text("queued again")
    wait_until(lambda: secure_console.platform.message_ids(), 20, 0.2, "the replayed referral delivered")

    # The referral's timeline, its delivery delivered at the second try.
    await page.get_by_role("navigation").get_by_role("link", name="Referral", exact=True).click()
    await page.get_by_label("ServiceRequest identifier").fill("MSP-BDL-2025-000142")
    await page.keyboard.press("Enter")
    await expect(page.locator("#service-request .sr-status")).to_have_text("active")
    deliveries = page.locator("#deliveries table")
    await expect(deliveries).to_contain_text("referral-request")
    for _ in range(50):  # the worker records the delivery: bounded, by refreshing the page
        if "delivered" in await deliveries.inner_text():
            break
        await page.get_by_role("button", name="Refresh").click()
        await page.wait_for_timeout(200)
    await expect(deliveries).to_contain_text("delivered")
    # Each attempt with its answer, read by the operator's token from the attempts' AuditEvents.
    attempts = page.locator("#deliveries ol.attempts li")
    await expect(attempts).to_have_count(2)
    await expect(attempts.nth(0)).to_contain_text("HTTP 4")
    await expect(attempts.nth(1)).to_contain_text("HTTP 200")
    await shoot(page, screenshots, "auth-referral")

    # Subscriptions: the FHIR search and the console's data, with the same token (none made here).
    await page.get_by_role("navigation").get_by_role("link", name="Subscriptions", exact=True).click()
    await expect(page.locator("#subscriptions-state")).to_contain_text("0 Subscription(s)")
    await expect(page.locator("#subscriptions")).to_have_text("No Subscription.")

    # The token never went into a URL, nor into the gateway's log.
    assert token not in page.url and not re.search(re.escape(token), secure_console.process.log_path.read_text())

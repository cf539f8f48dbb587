"""The reliability suite (``-m reliability``): real ``gateway serve`` processes under load, faults and abuse.

Every gateway here is started by ``start_gateway`` and every client made by ``gateway_client`` /
``async_gateway_client``: the ONE place where a test gateway's environment and a client's credentials are set.
The suite runs with authentication off (``GATEWAY_AUTH=off`` below; authentication itself is tested in
tests/auth and tests/e2e/test_auth_e2e.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.processes import GatewayProcess, Platform, write_routing
from tests.support.referrals import fresh

#: Environment every gateway of this suite gets, and headers every client sends (credentials go here).
GATEWAY_ENV: dict[str, str] = {"GATEWAY_AUTH": "off"}
CLIENT_HEADERS: dict[str, str] = {}

FHIR_JSON = "application/fhir+json"
PARIS = "75056"


#: Every department of France, metropolitan and overseas.
DEPARTMENTS = [f"{n:02d}" for n in range(1, 96) if n != 20] + ["2A", "2B", "971", "972", "973", "974", "976"]


def start_gateway(directory: Path, platform: Platform, **env: str) -> GatewayProcess:
    """``gateway serve`` routing all of France to ``platform``, on a scratch database of the configured backend."""
    routing = write_routing(
        directory / "routing",
        {"dac-75": {"endpoint": platform.endpoint, "finess": "750000010"}},
        dict.fromkeys(DEPARTMENTS, "dac-75"),
    )
    return GatewayProcess(directory, routing, env={**GATEWAY_ENV, **env}).start()


def gateway_client(gateway: GatewayProcess, timeout: float = 60) -> httpx.Client:
    return httpx.Client(base_url=gateway.base, headers=CLIENT_HEADERS, timeout=timeout)


def async_gateway_client(gateway: GatewayProcess, connections: int = 64, timeout: float = 60) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=gateway.base,
        headers=CLIENT_HEADERS,
        timeout=timeout,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


def transaction_url(client: httpx.AsyncClient | httpx.Client) -> str:
    """``POST /fhir`` itself (httpx would add a slash to the base URL, which is a redirect)."""
    return str(client.base_url).rstrip("/")


def referral_body(tag: str) -> bytes:
    """A new referral, for a new patient living in Paris."""
    return json.dumps(fresh("referral-hospital-nurse.json", commune=PARIS, tag=tag)).encode()


def service_request_id(answer: httpx.Response) -> str:
    full_url = next(str(e["fullUrl"]) for e in answer.json()["entry"] if "/ServiceRequest/" in str(e["fullUrl"]))
    return full_url.rsplit("/ServiceRequest/", 1)[1].split("/")[0]


@dataclass
class Sender:
    """Posts referrals and remembers which ones the gateway acknowledged (a 2xx: the sender may forget them)."""

    acknowledged: dict[bytes, str] = field(default_factory=dict)  # body → ServiceRequest id
    refused: list[tuple[bytes, str]] = field(default_factory=list)  # body, "status: outcome" or the error

    async def post(self, client: httpx.AsyncClient, body: bytes) -> None:
        try:
            answer = await client.post(transaction_url(client), content=body, headers={"content-type": FHIR_JSON})
        except httpx.HTTPError as exc:
            self.refused.append((body, type(exc).__name__))
            return
        if 200 <= answer.status_code < 300:
            self.acknowledged[body] = service_request_id(answer)
        else:
            self.refused.append((body, f"{answer.status_code}: {answer.text[:300]}"))

    def send_all(self, gateway: GatewayProcess, bodies: list[bytes], concurrency: int) -> Sender:
        """Post ``bodies``, ``concurrency`` at a time (blocking; from any thread)."""

        async def run() -> None:
            gate = asyncio.Semaphore(concurrency)
            async with async_gateway_client(gateway, connections=concurrency) as client:

                async def one(body: bytes) -> None:
                    async with gate:
                        await self.post(client, body)

                await asyncio.gather(*(one(body) for body in bodies))

        asyncio.run(run())
        return self

    def send_in_background(self, gateway: GatewayProcess, bodies: list[bytes], concurrency: int) -> threading.Thread:
        thread = threading.Thread(target=self.send_all, args=(gateway, bodies, concurrency), daemon=True)
        thread.start()
        return thread


def delivered_focus(platform: Platform) -> set[str]:
    """The ServiceRequest ids of the referral-request messages the platform received."""
    return {
        str(m["entry"][0]["resource"]["focus"][0]["reference"]).rsplit("ServiceRequest/", 1)[-1]
        for m in list(platform.received)
        if m["entry"][0]["resource"]["eventCoding"]["code"] == "referral-request"
    }


def delivery_retries(gateway: GatewayProcess) -> float:
    """Delivery attempts that failed and will be retried, from the gateway's /metrics."""
    text = httpx.get(gateway.base.removesuffix("/fhir") + "/metrics", headers=CLIENT_HEADERS, timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_deliveries_total{") and 'verdict="retry"' in line
    )


@pytest.fixture
def platform() -> Iterator[Platform]:
    platform = Platform().start()
    yield platform
    platform.stop()

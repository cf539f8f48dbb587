"""PostgreSQL restarted under load: while it is down every request is a prompt 503 OperationOutcome
``store-unavailable`` (never a 500, never a hang); once it is back the same gateway process works again by
itself, and no acknowledged referral is lost. The test brings its own PostgreSQL cluster (the shared server is
never restarted), so it runs whichever backend the rest of the suite targets."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import (
    FHIR_JSON,
    GATEWAY_ENV,
    Sender,
    async_gateway_client,
    delivered_focus,
    gateway_client,
    referral_body,
    service_request_id,
    transaction_url,
)
from tests.reliability.invariants import half_stored, undelivered
from tests.support.postgres_cluster import PostgresCluster, postgres_bin
from tests.support.processes import GatewayProcess, Platform, wait_until, write_routing

pytestmark = pytest.mark.reliability


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    binaries = postgres_bin()
    if binaries is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI is set but the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        pytest.skip("the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    cluster = PostgresCluster(binaries).create()
    yield cluster
    cluster.destroy()


@dataclass
class Load:
    """Senders posting new referrals without pause, recording every answer, until stopped."""

    gateway: GatewayProcess
    concurrency: int = 8
    answers: list[tuple[bytes, int, str]] = field(default_factory=list)  # body, status, dac-issue code or ""
    errors: list[str] = field(default_factory=list)  # transport errors: a timeout here is a hang
    acknowledged: dict[bytes, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def statuses(self) -> Counter[int]:
        return Counter(status for _, status, _ in list(self.answers))

    async def _one_sender(self, client: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            body = referral_body("pg-restart")
            try:
                answer = await client.post(transaction_url(client), content=body, headers={"content-type": FHIR_JSON})
            except httpx.HTTPError as exc:
                self.errors.append(type(exc).__name__)
                continue
            code = ""
            if answer.status_code >= 300:
                issues = answer.json().get("issue", [{}])
                code = str(issues[0].get("details", {}).get("coding", [{}])[0].get("code", ""))
            else:
                self.acknowledged[body] = service_request_id(answer)
            self.answers.append((body, answer.status_code, code))

    def run(self) -> threading.Thread:
        async def main() -> None:
            async with async_gateway_client(self.gateway, self.concurrency, timeout=30) as client:
                await asyncio.gather(*(self._one_sender(client) for _ in range(self.concurrency)))

        thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        thread.start()
        return thread


def test_postgres_restart_under_load(tmp_path: Path, cluster: PostgresCluster, platform: Platform) -> None:
    routing = write_routing(
        tmp_path / "routing", {"dac-75": {"endpoint": platform.endpoint, "finess": "750000010"}}, {"75": "dac-75"}
    )
    gateway = GatewayProcess(tmp_path, routing, env=dict(GATEWAY_ENV), backend=cluster.url).start()
    load = Load(gateway)
    try:
        sending = load.run()
        wait_until(lambda: len(load.acknowledged) >= 20, 120, 0.05, "referrals before the outage")
        cluster.stop("fast")
        before_outage = len(load.answers)
        wait_until(lambda: load.statuses()[503] >= 20, 120, 0.1, "503 answers during the outage")
        with gateway_client(gateway, timeout=30) as client:  # reads too are a prompt 503
            read = client.get("ServiceRequest", params={"status": "active"})
            assert read.status_code == 503, read.text
        cluster.start()
        restarted = len(load.acknowledged)
        wait_until(lambda: len(load.acknowledged) >= restarted + 20, 120, 0.1, "referrals after the restart")
        load.stop.set()
        sending.join(60)

        assert not load.errors, f"requests that hung or broke: {Counter(load.errors)}"
        unexpected = {status for status in load.statuses() if status not in (200, 503)}
        assert not unexpected, [a[1:] for a in load.answers if a[1] in unexpected][:5]
        assert {code for _, status, code in load.answers if status == 503} == {"store-unavailable"}
        assert len(load.answers) > before_outage
        # The refused referrals are retried by their senders and accepted; none is lost, none doubled.
        refused = [body for body, status, _ in load.answers if status == 503 and body not in load.acknowledged]
        retry = Sender().send_all(gateway, refused, concurrency=8)
        assert not retry.refused, retry.refused[:3]
        every = set(load.acknowledged.values()) | set(retry.acknowledged.values())
        with gateway_client(gateway) as client:
            assert all(client.get(f"ServiceRequest/{sr}").status_code == 200 for sr in every)
        wait_until(lambda: every <= delivered_focus(platform), 120, 0.5, "every referral delivered")
        wait_until(lambda: undelivered(gateway.database_url) == 0, 60, 0.5, "the outbox emptied")
        assert half_stored(gateway.database_url) == []
    finally:
        load.stop.set()
        gateway.stop()

"""Load: many senders at once, and a platform that goes away for a while — nothing doubled, nothing lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import (
    FHIR_JSON,
    Sender,
    async_gateway_client,
    delivered_focus,
    delivery_retries,
    referral_body,
    service_request_id,
    start_gateway,
    transaction_url,
)
from tests.reliability.invariants import count, half_stored
from tests.support.processes import Platform, wait_until

pytestmark = pytest.mark.reliability


def test_fifty_concurrent_identical_posts_make_one_referral_and_one_delivery(
    tmp_path: Path, platform: Platform
) -> None:
    gateway = start_gateway(tmp_path, platform)
    try:
        body = referral_body("identical")

        async def post_fifty() -> list[httpx.Response]:
            async with async_gateway_client(gateway) as client:
                url = transaction_url(client)
                return await asyncio.gather(
                    *(client.post(url, content=body, headers={"content-type": FHIR_JSON}) for _ in range(50))
                )

        answers = asyncio.run(post_fifty())
        failures = [f"{a.status_code}: {a.text[:200]}" for a in answers if a.status_code != 200]
        assert not failures, failures
        assert len({service_request_id(a) for a in answers}) == 1
        wait_until(lambda: delivered_focus(platform), 60, what="the delivery")
        assert count(gateway.database_url, "ServiceRequest") == 1
        assert half_stored(gateway.database_url) == []
        assert len(set(platform.message_ids())) == 1 and len(platform.message_ids()) == 1
    finally:
        gateway.drop()


def test_platform_down_then_back_loses_none_of_100_referrals(tmp_path: Path, platform: Platform) -> None:
    # Enough attempts to outlast the outage with the suite's 1-second backoff cap (production: 12 attempts, hours).
    gateway = start_gateway(tmp_path, platform, GATEWAY_DELIVERY_MAX_ATTEMPTS="1000")
    try:
        platform.default = 503  # up, but failing
        sender = Sender().send_all(gateway, [referral_body("outage") for _ in range(50)], concurrency=16)
        wait_until(lambda: len(platform.received) >= 50, 60, what="the first attempts, answered 503")
        platform.stop()  # then gone: connection refused
        sender.send_all(gateway, [referral_body("outage") for _ in range(50)], concurrency=16)
        refused_before = delivery_retries(gateway)
        wait_until(lambda: delivery_retries(gateway) >= refused_before + 100, 60, 0.5, "refused connections")
        assert not sender.refused, sender.refused[:3]
        acknowledged = set(sender.acknowledged.values())
        assert len(acknowledged) == 100
        failed_before = len(platform.received)
        back = Platform(port=platform.port).start()  # back, on the same address
        try:
            wait_until(lambda: acknowledged <= delivered_focus(back), 120, 0.5, "every referral delivered")
            ids = back.message_ids()
            assert len(set(ids)) == 100, f"{len(set(ids))} distinct messages for 100 referrals"
            assert len(ids) >= 100 and failed_before >= 50
        finally:
            back.stop()
        assert half_stored(gateway.database_url) == []
    finally:
        gateway.drop()

"""kill -9 of the gateway in the middle of intake and of delivery, then a restart: every referral the gateway
acknowledged is stored whole and delivered; what it had not acknowledged is either whole or absent, and the
sender's retry (DESIGN §4: intake is idempotent) completes it without a duplicate."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.conftest import Sender, delivered_focus, gateway_client, referral_body, start_gateway
from tests.reliability.invariants import count, half_stored, undelivered
from tests.support.processes import GatewayProcess, Platform, wait_until

pytestmark = pytest.mark.reliability


def _all_stored(gateway: GatewayProcess, service_requests: set[str]) -> list[str]:
    with gateway_client(gateway) as client:
        return [sr for sr in sorted(service_requests) if client.get(f"ServiceRequest/{sr}").status_code != 200]


def test_kill_during_intake_loses_no_acknowledged_referral(tmp_path: Path, platform: Platform) -> None:
    gateway = start_gateway(tmp_path, platform)
    try:
        bodies = [referral_body("crash-intake") for _ in range(120)]
        sender = Sender()
        posting = sender.send_in_background(gateway, bodies, concurrency=60)
        wait_until(lambda: len(sender.acknowledged) >= 15, 120, 0.01, "the first acknowledgements")
        gateway.kill()  # 60 posts in flight: some committed and answered, some committed only, some neither
        posting.join(120)
        acknowledged = dict(sender.acknowledged)
        assert 15 <= len(acknowledged) < len(bodies), "the crash must fall in the middle of the load"
        assert half_stored(gateway.database_url) == []  # even before the restart: nothing half-stored

        gateway.start()
        assert _all_stored(gateway, set(acknowledged.values())) == []
        # The senders whose answer was lost retry, as they may: each gets its referral, none is doubled.
        retry = Sender().send_all(gateway, [body for body in bodies if body not in acknowledged], concurrency=8)
        assert not retry.refused, retry.refused[:3]
        assert all(retry.acknowledged[body] for body in bodies if body not in acknowledged)
        every = set(acknowledged.values()) | set(retry.acknowledged.values())
        assert len(every) == len(bodies) == count(gateway.database_url, "ServiceRequest")
        wait_until(lambda: every <= delivered_focus(platform), 120, 0.5, "every referral delivered")
        wait_until(lambda: undelivered(gateway.database_url) == 0, 60, 0.5, "the outbox emptied")
        assert half_stored(gateway.database_url) == []
    finally:
        gateway.drop()


def test_kill_during_delivery_loses_no_delivery(tmp_path: Path, platform: Platform) -> None:
    platform.script = [(200, 1.0)] * 400  # a slow platform: deliveries are in flight when the gateway dies
    gateway = start_gateway(tmp_path, platform, GATEWAY_DELIVERY_PER_DESTINATION="8")
    try:
        sender = Sender().send_all(gateway, [referral_body("crash-delivery") for _ in range(40)], concurrency=10)
        assert not sender.refused, sender.refused[:3]
        wait_until(lambda: len(platform.received) >= 10, 60, 0.05, "deliveries in flight")
        gateway.kill()
        in_flight_when_killed = len(platform.received)
        assert undelivered(gateway.database_url) > 0, "the crash must fall in the middle of the deliveries"
        gateway.start()  # leases of the dead worker expire (3 s here) and the new one takes the rows over
        acknowledged = set(sender.acknowledged.values())
        wait_until(lambda: undelivered(gateway.database_url) == 0, 120, 0.5, "every delivery confirmed")
        assert acknowledged <= delivered_focus(platform)
        ids = platform.message_ids()
        # One message per referral; one whose answer the dead gateway never read is sent again with the same id,
        # so the platform can drop it.
        assert len(set(ids)) == 40
        assert len(ids) >= 40 and in_flight_when_killed >= 10
        assert half_stored(gateway.database_url) == []
    finally:
        gateway.drop()

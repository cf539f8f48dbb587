#!/usr/bin/env python3
"""Subscription notifications (DESIGN §12) from ``gateway serve`` to a loopback subscriber (issue 18).

Two figures, on SQLite by default (``--backend postgresql``):

* **change → received latency** — ``--subscriptions`` Subscriptions to the referral-status topic (id-only, each
  its own rest-hook path), then referrals posted one by one at ``--rate`` per second: for each event, the time
  from the gateway's answer to the POST (the change committed, its notifications queued in the same transaction)
  to the subscriber receiving the notification (p50 / p99).
* **notifications/s draining a backlog** — the subscriber answers 503 while ``--burst`` referrals are posted, so
  every Subscription's first notification is retried and the others wait behind it (each Subscription's are sent
  in order, one at a time); then it comes back, the retries are made due, and the clock runs until every
  notification arrived.

The subscriber is ``bench/notify/receiver.py``, a raw asyncio server in a process of its own (it plays the
platform the referrals are routed to as well).

    .venv/bin/python bench/notify/bench_notify.py [--backend sqlite|postgresql] [--subscriptions 5] [--stream 60]
        [--rate 2] [--burst 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.fhir.primitives import utc_now  # noqa: E402
from gateway.store.database import Database  # noqa: E402
from gateway.store.tables import outbox  # noqa: E402
from tests.support.processes import GatewayProcess, free_port, wait_until, write_routing  # noqa: E402
from tests.support.referrals import fresh  # noqa: E402

POSTGRESQL = "postgresql://postgres@127.0.0.1:5432/test"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
TOPIC = "https://fhir.dac-gateway.org/SubscriptionTopic/referral-status"


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.notes: list[tuple[str, int, str, float]] = []

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("receiver.py")), str(self.port)])
        wait_until(lambda: self.get("/cpu") is not None, 10, 0.05, "the subscriber")

    def get(self, path: str) -> object:
        try:
            return httpx.get(f"{self.origin}{path}", timeout=10).json()
        except httpx.HTTPError:
            return None

    def fetch(self) -> int:
        self.notes += [tuple(note) for note in httpx.get(f"{self.origin}/received?since={len(self.notes)}").json()]  # type: ignore[misc]
        return len(self.notes)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


def subscription(endpoint: str, max_count: int) -> dict[str, object]:
    most = [{"url": f"{BACKPORT}/backport-max-count", "valuePositiveInt": max_count}] if max_count > 1 else []
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "bench",
        "criteria": TOPIC,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": "id-only"}]},
            **({"extension": most} if most else {}),
        },
    }


def referral() -> bytes:
    return orjson.dumps(fresh("referral-gp.json", commune="75056", tag="bench"))


def post(client: httpx.Client, base: str, body: bytes) -> tuple[str, float]:
    response = client.post(base, content=body, headers=FHIR_JSON)
    response.raise_for_status()
    location = next(e["response"]["location"] for e in response.json()["entry"] if "/ServiceRequest/" in e["fullUrl"])
    return location.split("/")[1], time.time()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def make_due(database_url: str) -> None:
    database = Database(database_url)
    try:
        # One UPDATE of every waiting row, in no particular order, while the worker records retries (rows taken in
        # the gateway's lock order): PostgreSQL may abort it as a deadlock's victim. It is then run again.
        for attempt in range(10):
            try:
                async with database.engine.begin() as connection:
                    await connection.execute(
                        sa.update(outbox).where(outbox.c.status == "pending").values(next_attempt_at=utc_now())
                    )
                return
            except sa.exc.DBAPIError:
                if attempt == 9:
                    raise
                await asyncio.sleep(0.05)
    finally:
        await database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--subscriptions", type=int, default=5)
    parser.add_argument("--stream", type=int, default=60)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--max-count", type=int, default=1, help="backport-max-count: events per notification")
    args = parser.parse_args()
    receiver = Receiver()
    receiver.start()
    directory = Path(tempfile.mkdtemp(prefix="bench-notify-"))
    platform = {"endpoint": f"{receiver.origin}/platform", "finess": "750000001", "policy": "dac-2022"}
    routing = write_routing(directory, {"dac-75": platform}, {"75": "dac-75"})
    env = {"GATEWAY_DELIVERY_MAX_ATTEMPTS": "100000", "GATEWAY_LOG_LEVEL": "warning"}
    gateway = GatewayProcess(directory, routing, env=env, backend=POSTGRESQL if args.backend == "postgresql" else "")
    gateway.start()
    try:
        with httpx.Client(timeout=60) as client:
            ids = []
            for n in range(args.subscriptions):
                answer = client.post(
                    f"{gateway.base}/Subscription",
                    json=subscription(f"{receiver.origin}/s{n}", args.max_count),
                    headers=FHIR_JSON,
                )
                answer.raise_for_status()
                ids.append(answer.json()["id"])

            def active() -> bool:
                return all(client.get(f"{gateway.base}/Subscription/{i}").json()["status"] == "active" for i in ids)

            wait_until(active, 30, 0.1, "every handshake taken")
            # 1. Latency: referrals one by one at a steady rate.
            answered: dict[str, float] = {}
            for _ in range(args.stream):
                started = time.monotonic()
                service_request, at = post(client, gateway.base, referral())
                answered[service_request] = at
                time.sleep(max(0.0, 1 / args.rate - (time.monotonic() - started)))
            expected = args.stream * args.subscriptions
            wait_until(lambda: receiver.fetch() >= expected, 120, 0.1, "every notification")
            latencies = [(at - answered[focus]) * 1000 for _, _, focus, at in receiver.notes if focus in answered]
            # 2. Throughput: a backlog behind a subscriber that was down.
            receiver.get("/down")
            bodies = [referral() for _ in range(args.burst)]
            for body in bodies:
                post(client, gateway.base, body)
            started = time.monotonic()
            receiver.get("/up")
            asyncio.run(make_due(gateway.database_url))
            total = expected + args.burst * args.subscriptions
            wait_until(lambda: receiver.fetch() >= total, 600, 0.05, "the backlog drained")
            elapsed = time.monotonic() - started
        gaps = 0
        by_path: dict[str, list[int]] = {}
        for path, number, _, _ in receiver.notes:
            by_path.setdefault(path, []).append(number)
        for numbers in by_path.values():
            gaps += numbers != list(range(1, len(numbers) + 1))
        print(
            f"backend {args.backend}; {args.subscriptions} Subscriptions (referral-status, id-only, "
            f"max-count {args.max_count})"
        )
        print(
            f"change → received: {len(latencies)} notifications, p50 {statistics.median(latencies):.1f} ms, "
            f"p99 {percentile(latencies, 0.99):.1f} ms (posted at {args.rate:g} referrals/s)"
        )
        print(
            f"backlog: {args.burst * args.subscriptions} events in {elapsed:.2f} s = "
            f"{args.burst * args.subscriptions / elapsed:.0f} events/s (each Subscription's in order)"
        )
        print(f"Subscriptions whose event numbers were not 1, 2, 3… in arrival order: {gaps}")
    finally:
        gateway.drop()
        receiver.stop()


if __name__ == "__main__":
    main()

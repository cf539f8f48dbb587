#!/usr/bin/env python3
"""Delivery from the outbox to a loopback platform that answers at once (issue #6).

Two figures, on PostgreSQL by default (``--backend sqlite`` for the embedded database):

* **deliveries/s** — N referrals are taken in while the platform is unreachable, so the outbox fills (every
  entry fails once and waits its backoff); then the platform comes up and the clock runs until all N arrived;
* **intake → delivery latency** — referrals posted at a steady rate with the platform up; for each, the time
  from the gateway's answer to the platform receiving it (p50 / p99).

    .venv/bin/python bench/delivery/bench_delivery.py [--referrals 1000] [--rate 20] [--backend postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.processes import GatewayProcess, Platform, wait_until, write_routing  # noqa: E402
from tests.support.referrals import fresh  # noqa: E402

POSTGRESQL = "postgresql://postgres@127.0.0.1:5432/test"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


async def post_all(base: str, bodies: list[bytes], clients: int = 8) -> list[tuple[str, float]]:
    """Post every body; (ServiceRequest id, answer time) for each."""
    answers: list[tuple[str, float]] = []
    queue = iter(bodies)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as client:

        async def loop() -> None:
            while (body := next(queue, None)) is not None:
                response = await client.post(base, content=body, headers=FHIR_JSON)
                response.raise_for_status()
                location = next(
                    e["response"]["location"] for e in response.json()["entry"] if "/ServiceRequest/" in e["fullUrl"]
                )
                answers.append((location.split("/")[1], time.time()))

        await asyncio.gather(*(loop() for _ in range(clients)))
    return answers


def focus_of(message: dict[str, object]) -> str:
    header = message["entry"][0]["resource"]  # type: ignore[index]
    return str(header["focus"][0]["reference"]).rsplit("/", 1)[-1]  # type: ignore[index]


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        platform = Platform()
        routing = write_routing(
            directory, {"dac-75": {"endpoint": platform.endpoint, "finess": "750000010"}}, {"75": "dac-75"}
        )
        backend = POSTGRESQL if args.backend == "postgresql" else ""
        env = {
            "GATEWAY_LOG_LEVEL": "WARNING",
            "GATEWAY_DELIVERY_BACKOFF_BASE": "2",
            "GATEWAY_DELIVERY_BACKOFF_CAP": "4",
        }
        gateway = GatewayProcess(directory, routing, env=env, backend=backend)
        await asyncio.to_thread(gateway.start)
        try:
            # 1. throughput: fill the outbox while the platform is down, then let it drain
            bodies = [orjson.dumps(fresh(commune="75056", tag=f"d{i}")) for i in range(args.referrals)]
            await post_all(gateway.base, bodies)
            await asyncio.sleep(5)  # every entry has failed once and waits (2–4 s)
            platform.start()
            started = time.perf_counter()
            await asyncio.to_thread(
                wait_until, lambda: len(set(platform.message_ids())) >= args.referrals, 600, 0.05, "the outbox to drain"
            )
            elapsed = time.perf_counter() - started
            duplicates = len(platform.message_ids()) - len(set(platform.message_ids()))
            print(f"backend {args.backend}: {args.referrals} deliveries in {elapsed:.1f} s = "
                  f"{args.referrals / elapsed:.0f} deliveries/s (duplicates: {duplicates})")  # fmt: skip

            # 2. latency: a steady stream with the platform up
            platform.received.clear()
            arrivals: dict[str, float] = {}
            original = platform._process_message

            async def timed(request):  # type: ignore[no-untyped-def]
                response = await original(request)
                arrivals[focus_of(platform.received[-1])] = time.time()
                return response

            platform._process_message = timed  # type: ignore[method-assign]
            await asyncio.to_thread(platform.stop)
            platform.start()
            answers: list[tuple[str, float]] = []
            stream = [orjson.dumps(fresh(commune="75056", tag=f"l{i}")) for i in range(args.stream)]
            for body in stream:
                answers += await post_all(gateway.base, [body], clients=1)
                await asyncio.sleep(1 / args.rate)
            await asyncio.to_thread(wait_until, lambda: len(arrivals) >= len(answers), 60, 0.05, "the stream")
            latencies = sorted((arrivals[sr] - answered) * 1000 for sr, answered in answers if sr in arrivals)
            p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
            print(f"intake → delivery at {args.rate}/s: p50 {statistics.median(latencies):.0f} ms, p99 {p99:.0f} ms "
                  f"({len(latencies)} referrals)")  # fmt: skip
        finally:
            await asyncio.to_thread(gateway.drop)
            platform.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--referrals", type=int, default=1000)
    parser.add_argument("--stream", type=int, default=200, help="referrals for the latency figure")
    parser.add_argument("--rate", type=float, default=20.0, help="referrals/s for the latency figure")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

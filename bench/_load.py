"""What the benchmarks share: distinct referrals, a closed-loop load with N clients, figures, process memory."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.referrals import fresh  # noqa: E402


def referral_bodies(count: int, commune: str = "75056") -> list[bytes]:
    """Distinct referrals (new ServiceRequest identifier, new patient with a valid INS), serialised ahead."""
    return [orjson.dumps(fresh(commune=commune, tag=f"bench{i}")) for i in range(count)]


@dataclass
class LoadResult:
    done: int
    seconds: float
    latencies: list[float]
    failures: int
    first_failure: str | None

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    def line(self, name: str, rss_mb: float | None) -> str:
        rss = f"{rss_mb:6.1f} MB" if rss_mb is not None else "   n/a"
        return (
            f"{name:<24} {self.done:6d} req  {self.rate:7.1f}/s  p50 {self.percentile(50):6.1f} ms  "
            f"p99 {self.percentile(99):6.1f} ms  non-2xx {self.failures}  peak RSS {rss}"
        )


async def closed_loop(url: str, bodies: list[bytes], clients: int, seconds: float, warmup: float) -> LoadResult:
    """``clients`` concurrent clients, each posting its next body as soon as the previous answer came."""
    headers = {"Content-Type": "application/fhir+json"}
    queue = iter(bodies)
    latencies: list[float] = []
    failures = 0
    first_failure: str | None = None
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal failures, first_failure
        while time.perf_counter() < stop_at:
            body = next(queue, None)
            if body is None:
                return
            sent = time.perf_counter()
            response = await client.post(url, content=body, headers=headers)
            received = time.perf_counter()
            if sent < measure_from:
                continue
            if 200 <= response.status_code < 300:
                latencies.append(received - sent)
            else:
                failures += 1
                first_failure = first_failure or f"{response.status_code} {response.text[:300]}"

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    elapsed = min(time.perf_counter(), stop_at) - measure_from
    return LoadResult(len(latencies), elapsed, latencies, failures, first_failure)


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")

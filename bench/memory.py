#!/usr/bin/env python3
"""A gateway process's memory as referrals go by (issue 21, target 4: RSS < 200 MB per process after 100,000).

Starts ``gateway serve`` (API and delivery worker in one process) on a fresh database (SQLite file, or a fresh
PostgreSQL database with ``--backend postgresql``), delivering to the loopback platform of
``bench/intake/sink_app.py``, and posts ``--referrals`` distinct referrals (the bodies of
``bench/intake/bench_intake.py``) with ``--clients`` clients; every ``--every`` referrals it reads the server's
resident memory (``VmRSS`` of ``/proc/<pid>/status``) once the worker has delivered what was taken in, and a
search (``ServiceRequest?_count=50``) is made every 10 referrals so that reads leave their AuditEvents too.

It prints RSS against referrals, the slope over the second half of the run (MB per 10,000 referrals: what keeps
growing once caches and pools are warm) and the RSS that slope gives at 100,000 referrals. Memory does not
depend on the machine's load the way times do: a short run's slope is meaningful.

    .venv/bin/python bench/memory.py --referrals 20000 --every 2000 [--backend postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.intake.bench_intake import (
    FHIR_JSON,
    SINK_APP,
    TEMPLATE,
    Referrals,
    clean_env,
    free_port,
    gateway_command,
    loopback_routing,
    postgres_database,
    proc_status_kb,
    serve,
    uvicorn_argv,
)

TARGET_MB, AT_REFERRALS = 200.0, 100_000


async def post(base_url: str, referrals: Referrals, start: int, count: int, clients: int) -> None:
    indexes = iter(range(start, start + count))
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=clients)) as http:

        async def client() -> None:
            for index in indexes:
                answer = await http.post("/fhir", content=referrals.body(index), headers=headers)
                if not 200 <= answer.status_code <= 299:
                    raise SystemExit(f"referral {index}: HTTP {answer.status_code}: {answer.text[:2000]}")
                if index % 10 == 0:
                    (await http.get("/fhir/ServiceRequest", params={"_count": 50})).raise_for_status()

        await asyncio.gather(*(client() for _ in range(clients)))


def delivered(sink_url: str) -> int:
    return int(httpx.get(f"{sink_url}/count", timeout=10).json()["count"])


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares MB per referral."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--referrals", type=int, default=20_000)
    parser.add_argument("--every", type=int, default=2_000, help="referrals between two readings")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    referrals = Referrals(TEMPLATE, 0)  # bodies made as they are posted
    with tempfile.TemporaryDirectory(prefix="dac-memory-") as scratch:
        work = Path(scratch)
        sink_port = free_port()
        sink_url = f"http://127.0.0.1:{sink_port}"
        with serve("sink", uvicorn_argv(SINK_APP, sink_port), clean_env(), work, sink_url, "/count", work):
            routing = loopback_routing(work / "routing", f"{sink_url}/fhir")
            place: AbstractContextManager[str] = (
                postgres_database() if args.backend == "postgresql" else nullcontext(f"sqlite:///{work}/gateway.db")
            )
            with place as url:
                env = clean_env(
                    GATEWAY_DATABASE_URL=url,
                    GATEWAY_LOG_LEVEL="WARNING",
                    GATEWAY_ROUTING=str(routing),
                    GATEWAY_AUTH="off",
                )
                subprocess.run([gateway_command(), "db", "upgrade"], env=env, cwd=work, check=True, capture_output=True)
                port = free_port()
                argv = [gateway_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
                base = f"http://127.0.0.1:{port}"
                with serve("gateway", argv, env, work, base, "/fhir/metadata", work) as server:
                    points: list[tuple[int, float]] = []
                    start_rss = (proc_status_kb(server.pid, "VmRSS") or 0) / 1024
                    print(f"backend {args.backend}: RSS at start {start_rss:.1f} MB")
                    print(f"{'referrals':>10} {'RSS MB':>8} {'peak MB':>8} {'s':>6}")
                    started = time.perf_counter()
                    for done in itertools.count(args.every, args.every):
                        if done > args.referrals:
                            break
                        asyncio.run(post(base, referrals, done - args.every, args.every, args.clients))
                        deadline = time.monotonic() + 120
                        while delivered(sink_url) < done and time.monotonic() < deadline:
                            time.sleep(0.2)
                        rss = (proc_status_kb(server.pid, "VmRSS") or 0) / 1024
                        peak = (proc_status_kb(server.pid, "VmHWM") or 0) / 1024
                        points.append((done, rss))
                        print(f"{done:>10} {rss:8.1f} {peak:8.1f} {time.perf_counter() - started:6.0f}", flush=True)
        second_half = points[len(points) // 2 :]
        per_referral = slope(second_half) if len(second_half) >= 2 else 0.0
        projected = points[-1][1] + per_referral * (AT_REFERRALS - points[-1][0])
        verdict = "ok" if projected < TARGET_MB else "MISS"
        print(
            f"slope over the second half: {per_referral * 10_000:.2f} MB per 10,000 referrals; "
            f"at {AT_REFERRALS:,} referrals: {projected:.0f} MB ({verdict}: target < {TARGET_MB:.0f} MB)"
        )


if __name__ == "__main__":
    main()

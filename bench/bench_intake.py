"""Referral intake throughput: the gateway (SQLite, then PostgreSQL) against the floor of DESIGN §9, side by
side in one run, 8 concurrent clients posting distinct referrals.

    .venv/bin/python bench/bench_intake.py [--seconds 15] [--clients 8] [--backends sqlite,postgresql]

Prints referrals/s, p50 / p99 latency, non-2xx answers and peak RSS of each server, then the ratios and whether
issue #3's targets hold (gateway/floor ≥ 0.5 on SQLite, no non-2xx, RSS < 200 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from _load import ROOT, LoadResult, closed_loop, peak_rss_mb, referral_bodies

from tests.support.processes import GatewayProcess, Platform, free_port, wait_until, write_routing  # noqa: E402

POSTGRESQL = "postgresql://postgres@127.0.0.1:5432/test"


def start_floor(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = os.environ | {"FLOOR_DB": str(directory / "floor.db")}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.floor_app:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 30, 0.1, "the floor app")
    return process, f"http://127.0.0.1:{port}/fhir"


def postgresql_reachable() -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode == 0


async def run(args: argparse.Namespace) -> dict[str, object]:
    figures: dict[str, object] = {}
    total = int(args.clients * (args.seconds + args.warmup) * 600) + 1000  # more bodies than any run can post
    print(f"preparing {total} distinct referrals…", flush=True)
    bodies = referral_bodies(total)
    results: dict[str, tuple[LoadResult, float | None]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        platform = Platform(default=200).start()  # deliveries go somewhere that answers at once
        try:
            routing = write_routing(directory, {"dac-75": {"endpoint": platform.endpoint, "finess": "750000010"}}, {"75": "dac-75"})
            process, url = start_floor(directory)
            try:
                result = await closed_loop(url, bodies[: total // 3], args.clients, args.seconds, args.warmup)
                results["floor (SQLite)"] = (result, peak_rss_mb(process.pid))
            finally:
                process.terminate()
                process.wait(10)
            for backend in args.backends:
                if backend == "postgresql" and not postgresql_reachable():
                    print("PostgreSQL not reachable on 127.0.0.1:5432: skipped")
                    continue
                (directory / backend).mkdir(exist_ok=True)
                gateway = GatewayProcess(
                    directory / backend,
                    routing,
                    env={"GATEWAY_LOG_LEVEL": "WARNING"},
                    backend=POSTGRESQL if backend == "postgresql" else "",
                )
                await asyncio.to_thread(gateway.start)
                try:
                    offset = total // 3 if backend == "sqlite" else 2 * total // 3
                    chunk = bodies[offset : offset + total // 3]
                    result = await closed_loop(gateway.base, chunk, args.clients, args.seconds, args.warmup)
                    assert gateway.process is not None
                    results[f"gateway ({backend})"] = (result, peak_rss_mb(gateway.process.pid))
                finally:
                    await asyncio.to_thread(gateway.drop)
        finally:
            platform.stop()

    print()
    for name, (result, rss) in results.items():
        print(result.line(name, rss))
        if result.first_failure:
            print(f"  first failure: {result.first_failure}")
        figures[name] = {
            "rate": round(result.rate, 1),
            "p50_ms": round(result.percentile(50), 1),
            "p99_ms": round(result.percentile(99), 1),
            "non_2xx": result.failures,
            "peak_rss_mb": round(rss, 1) if rss else None,
        }
    floor = results["floor (SQLite)"][0].rate
    print()
    for backend in args.backends:
        key = f"gateway ({backend})"
        if key in results and floor:
            ratio = results[key][0].rate / floor
            figures[f"ratio_{backend}"] = round(ratio, 2)
            print(f"ratio gateway ({backend}) / floor: {ratio:.2f}")
    if "gateway (sqlite)" in results:
        result, rss = results["gateway (sqlite)"]
        ratio = result.rate / floor if floor else 0
        targets = {
            "ratio ≥ 0.5 on SQLite": ratio >= 0.5,
            "no non-2xx": all(r.failures == 0 for r, _ in results.values()),
            "RSS < 200 MB": all((m or 0) < 200 for _, m in results.values()),
        }
        for target, held in targets.items():
            print(f"  {'✓' if held else '✗'} {target}")
        figures["targets"] = targets
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per target")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--backends", default="sqlite,postgresql", type=lambda v: v.split(","))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    if args.json:
        print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()

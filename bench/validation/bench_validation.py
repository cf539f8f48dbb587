#!/usr/bin/env python3
"""Validation time of one referral (issue #4, item 7): the profile engine compiled once, then the referral's
full check — the engine (R4 and our profiles, invariants) and the referral's rules (``read_referral``) — timed
per call after a warm-up. Wall and CPU time (``time.process_time``: what the process itself spent, steadier on a
shared machine), median and p90, and the number of distinct checks the engine compiled.

    .venv/bin/python bench/validation/bench_validation.py [--runs 2000] [FILE …]

Default file: examples/referral-hospital-nurse.json (10 KB, 9 entries).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.intake.reading import read_referral  # noqa: E402
from gateway.validation.engine import engine  # noqa: E402
from gateway.validation.validate import validate  # noqa: E402


def _quantiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.9)] * 1000


def bench(path: Path, runs: int) -> None:
    body = path.read_bytes()
    bundle = json.loads(body)
    assert validate(bundle) == [], f"{path} is not valid: the benchmark times valid referrals"
    kind = "message" if bundle.get("type") == "message" else "transaction"
    for _ in range(200):  # warm-up
        read_referral(bundle, kind)
    wall: list[float] = []
    cpu: list[float] = []
    engine_cpu: list[float] = []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        read_referral(bundle, kind)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
        started_cpu = time.process_time()
        engine().validate(bundle)
        engine_cpu.append(time.process_time() - started_cpu)
    wall_median, wall_p90 = _quantiles(wall)
    cpu_median, cpu_p90 = _quantiles(cpu)
    engine_median, _ = _quantiles(engine_cpu)
    print(f"{path.name} ({len(body) / 1024:.1f} KB, {len(bundle.get('entry', []))} entries), {runs} runs:")
    print(f"  read_referral (engine + referral rules)  wall median {wall_median:.3f} ms  p90 {wall_p90:.3f} ms")
    print(f"                                           CPU  median {cpu_median:.3f} ms  p90 {cpu_p90:.3f} ms")
    print(f"  engine alone                             CPU  median {engine_median:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("files", nargs="*", type=Path, default=[ROOT / "examples" / "referral-hospital-nurse.json"])
    arguments = parser.parse_args()
    started = time.process_time()
    compiled = engine()
    print(f"engine compiled in {(time.process_time() - started) * 1000:.0f} ms CPU: {compiled.check_count()} checks")
    for path in arguments.files:
        bench(path, arguments.runs)


if __name__ == "__main__":
    main()

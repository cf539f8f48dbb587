#!/usr/bin/env python3
"""A referral's cost against its size (issue 21, target 5: 10 → 100 entries at most 12× the cost).

Posts distinct referrals (``bench/intake/bench_intake.py``'s bodies) grown to ``--sizes`` entries with caregivers
(RelatedPerson entries, as ``examples/referral-social-worker.json`` has one), one after another, to the application
itself (``httpx.ASGITransport``: no socket, no delivery worker) on a fresh SQLite file, the sizes taking turns;
prints the median CPU time of this process per referral of each size, and each against the smallest. CPU, not
wall: on a shared machine the times of one run are comparable, not those of two.

    .venv/bin/python bench/bundle_size.py --sizes 10,100 --referrals 200
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.intake.bench_intake import FHIR_JSON, TEMPLATE, Referrals
from gateway.api.app import create_app
from gateway.config import Settings
from gateway.logging import configure_logging
from gateway.store import migrate

ROOT = Path(__file__).resolve().parents[1]
CAREGIVER = next(
    e
    for e in orjson.loads((ROOT / "examples" / "referral-social-worker.json").read_bytes())["entry"]
    if e["resource"]["resourceType"] == "RelatedPerson"
)


def grown(body: bytes, entries: int) -> bytes:
    """The referral with caregivers added until it has ``entries`` entries."""
    bundle: dict[str, Any] = orjson.loads(body)
    patient = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    while len(bundle["entry"]) < entries:
        caregiver = copy.deepcopy(CAREGIVER)
        caregiver["fullUrl"] = f"urn:uuid:{uuid.uuid4()}"
        caregiver["resource"]["patient"]["reference"] = patient["fullUrl"]
        bundle["entry"].append(caregiver)
    return orjson.dumps(bundle)


async def run(url: str, sizes: list[int], count: int) -> dict[int, list[float]]:
    settings = Settings(database_url=url, log_level="WARNING", auth="off")
    app = create_app(settings)
    referrals = Referrals(TEMPLATE, 0)
    bodies = {
        size: [grown(referrals.body(n * len(sizes) + k), size) for n in range(count)] for k, size in enumerate(sizes)
    }
    cpu: dict[int, list[float]] = {size: [] for size in sizes}
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gateway.bench") as http,
    ):
        for n in range(count):
            for size in sizes:
                started = time.process_time()
                answer = await http.post("/fhir", content=bodies[size][n], headers=headers)
                cpu[size].append((time.process_time() - started) * 1000)
                if not 200 <= answer.status_code <= 299:
                    raise SystemExit(f"{size} entries: HTTP {answer.status_code}: {answer.text[:2000]}")
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100", help="entries per referral (default 10,100)")
    parser.add_argument("--referrals", type=int, default=200, help="referrals of each size (default 200)")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    configure_logging("WARNING", False)
    with tempfile.TemporaryDirectory(prefix="dac-size-") as tmp:
        url = f"sqlite:///{tmp}/gateway.db"
        migrate.upgrade(url)
        cpu = asyncio.run(run(url, sizes, args.referrals))
    smallest = statistics.median(cpu[sizes[0]])
    print(f"{'entries':>8} {'CPU p50 ms':>11} {'× smallest':>11} {'per entry ms':>13}")
    for size in sizes:
        median = statistics.median(cpu[size])
        print(f"{size:>8} {median:11.2f} {median / smallest:11.2f} {median / size:13.3f}")
    ratio = statistics.median(cpu[sizes[-1]]) / smallest
    limit = 1.2 * sizes[-1] / sizes[0]
    print(
        f"{sizes[0]} → {sizes[-1]} entries: {ratio:.2f}× ({'ok' if ratio <= limit else 'MISS'}: target ≤ {limit:.0f}×)"
    )


if __name__ == "__main__":
    main()

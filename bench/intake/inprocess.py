#!/usr/bin/env python3
"""Intake alone, in one process: what taking a referral in costs, without HTTP sockets or the delivery worker.

``bench_intake.py`` measures the real server, whose CPU also pays for uvicorn and for delivering what it routes.
This script posts distinct referrals (the same bodies as ``bench_intake.py``) to the application itself through
``httpx.ASGITransport``, ``--clients`` at a time, on a fresh SQLite file (or ``--database-url``), and prints the
process's CPU time per referral — the load generator's share (httpx building requests) included, so compare
figures of this script with each other, not with the server's. ``--profile FILE`` writes cProfile statistics of
the counted referrals (``python -m pstats FILE``); py-spy works too (``py-spy record -- python …``).

    .venv/bin/python bench/intake/inprocess.py --referrals 600
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.intake.bench_intake import FHIR_JSON, TEMPLATE, Referrals
from gateway.api.app import create_app
from gateway.config import Settings
from gateway.logging import configure_logging
from gateway.store import migrate


async def run(
    settings: Settings, referrals: Referrals, count: int, clients: int, warmup: int, profile: str | None
) -> None:
    app = create_app(settings)  # no worker: nothing is delivered
    indexes = itertools.count()
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.bench") as http:

            async def post(times: int) -> None:
                for _ in range(times):
                    answer = await http.post("/fhir", content=referrals.body(next(indexes)), headers=headers)
                    if not 200 <= answer.status_code <= 299:
                        raise SystemExit(f"HTTP {answer.status_code}: {answer.text[:2000]}")

            await post(warmup)
            profiler = cProfile.Profile() if profile else None
            per_client = count // clients
            cpu, wall = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            await asyncio.gather(*(post(per_client) for _ in range(clients)))
            if profiler and profile:
                profiler.disable()
                profiler.dump_stats(profile)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = per_client * clients
    print(
        f"{done} referrals, {clients} clients: CPU {cpu * 1000 / done:.2f} ms/ref, wall {wall * 1000 / done:.2f} ms/ref"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--referrals", type=int, default=600, help="referrals counted (default 600)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--warmup", type=int, default=40, help="referrals posted first, not counted (default 40)")
    parser.add_argument("--database-url", help="default: a fresh SQLite file (PostgreSQL: run `gateway db upgrade`)")
    parser.add_argument("--profile", metavar="FILE", help="write cProfile statistics of the counted referrals")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dac-inprocess-") as tmp:
        url = args.database_url or f"sqlite:///{tmp}/gateway.db"
        settings = Settings(database_url=url, log_level="WARNING", auth="off")  # as bench_intake.py without --auth
        if settings.is_sqlite:
            migrate.upgrade(settings.database_url)  # before the event loop: alembic runs its own
        configure_logging(settings.log_level, settings.log_json)
        referrals = Referrals(TEMPLATE, args.referrals + args.warmup + args.clients)
        asyncio.run(run(settings, referrals, args.referrals, args.clients, args.warmup, args.profile))


if __name__ == "__main__":
    main()

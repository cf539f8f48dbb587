#!/usr/bin/env python3
"""A referral's cost against history (issue 21, target 1): the n-th referral of one patient against the first.

For each backend (a fresh SQLite file; a fresh PostgreSQL database on 127.0.0.1:5432) and each mode, this posts
``--referrals`` referrals one after another (one client: each waits for the previous answer) to the application
itself (``httpx.ASGITransport``: no socket, no delivery worker), and prints, per bucket of ``--bucket`` referrals,
the median latency (wall), the median CPU time of this process per referral, and the SQL statements each referral
ran (their count and the rows they returned, from SQLAlchemy's cursor events: deterministic, unlike the times).

Modes:

* ``same-patient`` — every referral is for the same patient (same INS-NIR), as an integrator reposting one
  example patient, or a long-followed patient. The requester, her hospital and the GP are the same every time
  too, so this is also one requester's, one platform's and one GP's history;
* ``distinct`` — a new patient each time (the bodies of ``bench/intake/bench_intake.py``), same requester,
  hospital, GP and platform: one requester's, one platform's and one GP's history only.

The figure to read is the last bucket's median over the first's (**growth**): 1.0 when a referral's cost does not
depend on what came before it. ``--top N`` also lists the N statements whose total time grew most from the first
bucket to the last (what to look at when it does).

    .venv/bin/python bench/history.py --referrals 2000 --bucket 250 [--backends sqlite,postgresql] [--top 5]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.intake.bench_intake import (
    FHIR_JSON,
    TEMPLATE,
    Referrals,
    postgres_database,
    postgres_error,
)
from gateway.api.app import create_app
from gateway.config import Settings
from gateway.logging import configure_logging
from gateway.store import migrate
from gateway.store.database import Database
from gateway.store.repository import StoredResource

MODES = ("same-patient", "distinct")


class SamePatient(Referrals):
    """Every referral for the patient of index 0; new ServiceRequest and Bundle identifiers each time."""

    def fields(self, index: int) -> tuple[str, str, str]:
        return super().fields(0)


@dataclass
class Sample:
    wall_ms: float
    cpu_ms: float
    statements: int
    rows: int


@dataclass
class Statements:
    """SQL statements run while counting: their number and time per normalised text, and the stored resources
    read (rows of ``resources`` decoded into a ``StoredResource``)."""

    count: int = 0
    rows: int = 0
    time_by_text: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    _started: float = 0.0

    def attach(self, database: Database) -> None:
        engine = database.engine.sync_engine
        from_row = StoredResource.from_row.__func__  # type: ignore[attr-defined]

        def counted(cls: type[StoredResource], row: Any) -> StoredResource:
            self.rows += 1
            return from_row(cls, row)  # type: ignore[no-any-return]

        StoredResource.from_row = classmethod(counted)  # type: ignore[assignment,method-assign]

        @event.listens_for(engine, "before_cursor_execute")
        def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
            self._started = time.perf_counter()

        @event.listens_for(engine, "after_cursor_execute")
        def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
            self.count += 1
            self.time_by_text[_normalised(statement)] += time.perf_counter() - self._started


def _normalised(statement: str) -> str:
    text = re.sub(r"\s+", " ", statement).strip()
    text = re.sub(r"\(\$\d+(?:::\w+)?(?:, \$\d+(?:::\w+)?)*\)", "(…)", text)
    text = re.sub(r"\(\?(?:, \?)*\)", "(…)", text)
    return text[:240]


async def run_mode(
    url: str, referrals: Referrals, count: int, bucket: int
) -> tuple[list[Sample], list[dict[str, float]]]:
    settings = Settings(database_url=url, log_level="WARNING", auth="off")
    database = Database(settings.database_url)
    statements = Statements()
    statements.attach(database)
    app = create_app(settings, database=database)  # no worker: nothing is delivered
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    samples: list[Sample] = []
    per_bucket: list[dict[str, float]] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.bench") as http:
            for index in range(count):
                if index % bucket == 0:
                    statements.time_by_text = defaultdict(float)
                body = referrals.body(index)
                before_count, before_rows = statements.count, statements.rows
                cpu, wall = time.process_time(), time.perf_counter()
                answer = await http.post("/fhir", content=body, headers=headers)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if not 200 <= answer.status_code <= 299:
                    raise SystemExit(f"referral {index}: HTTP {answer.status_code}: {answer.text[:2000]}")
                samples.append(
                    Sample(wall * 1000, cpu * 1000, statements.count - before_count, statements.rows - before_rows)
                )
                if index % bucket == bucket - 1 or index == count - 1:
                    per_bucket.append(dict(statements.time_by_text))
    return samples, per_bucket


def report(
    backend: str, mode: str, samples: list[Sample], per_bucket: list[dict[str, float]], bucket: int, top: int
) -> dict[str, float]:
    print(f"\n{backend} · {mode} · {len(samples)} referrals posted one after another")
    print(f"{'referrals':>13} {'p50 ms':>8} {'p90 ms':>8} {'CPU p50':>8} {'SQL stmts':>10} {'resources read':>15}")
    medians = []
    for start in range(0, len(samples), bucket):
        chunk = samples[start : start + bucket]
        wall = sorted(s.wall_ms for s in chunk)
        cpu_p50 = statistics.median(s.cpu_ms for s in chunk)
        medians.append((statistics.median(wall), cpu_p50))
        print(
            f"{start + 1:>6}–{start + len(chunk):<6} {statistics.median(wall):8.2f} {wall[int(len(wall) * 0.9)]:8.2f}"
            f" {cpu_p50:8.2f} {statistics.mean(s.statements for s in chunk):10.1f}"
            f" {statistics.mean(s.rows for s in chunk):15.1f}"
        )
    growth_wall = medians[-1][0] / medians[0][0]
    growth_cpu = medians[-1][1] / medians[0][1]
    print(f"growth (last bucket p50 / first): wall {growth_wall:.2f}×, CPU {growth_cpu:.2f}×")
    if top and len(per_bucket) > 1:
        first, last = per_bucket[0], per_bucket[-1]
        grown = sorted(last, key=lambda text: last[text] - first.get(text, 0.0), reverse=True)[:top]
        print("statements whose time grew most (ms per referral, first bucket → last):")
        n_first, n_last = min(bucket, len(samples)), len(samples) - bucket * (len(per_bucket) - 1)
        for text in grown:
            print(f"  {first.get(text, 0) * 1000 / n_first:7.3f} → {last[text] * 1000 / n_last:7.3f}  {text}")
    return {"wall": growth_wall, "cpu": growth_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--referrals", type=int, default=2000, help="referrals per mode (default 2000)")
    parser.add_argument("--bucket", type=int, default=250, help="referrals per line (default 250)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="sqlite, postgresql or both (default)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"of {', '.join(MODES)} (default both)")
    parser.add_argument("--top", type=int, default=0, help="list the N statements whose time grew most")
    args = parser.parse_args()
    configure_logging("WARNING", False)
    growths: list[tuple[str, str, dict[str, float]]] = []
    for backend in args.backends.split(","):
        if backend == "postgresql" and (error := postgres_error()):
            print(f"\npostgresql skipped: {error}")
            continue
        for mode in args.modes.split(","):
            maker = SamePatient if mode == "same-patient" else Referrals
            referrals = maker(TEMPLATE, args.referrals)
            with tempfile.TemporaryDirectory(prefix="dac-history-") as tmp:
                place: AbstractContextManager[str] = (
                    postgres_database() if backend == "postgresql" else nullcontext(f"sqlite:///{tmp}/gateway.db")
                )
                with place as url:
                    migrate.upgrade(url)  # before the event loop: alembic runs its own
                    samples, per_bucket = asyncio.run(run_mode(url, referrals, args.referrals, args.bucket))
            growths.append((backend, mode, report(backend, mode, samples, per_bucket, args.bucket, args.top)))
    print("\nsummary (last bucket p50 / first bucket p50; target ≤ 1.2):")
    for backend, mode, growth in growths:
        verdict = "ok  " if growth["wall"] <= 1.2 else "MISS"
        print(f"  {verdict} {backend:<11} {mode:<13} wall {growth['wall']:.2f}×  CPU {growth['cpu']:.2f}×")


if __name__ == "__main__":
    main()

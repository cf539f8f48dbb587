#!/usr/bin/env python3
"""A referral's cost against history (issue 21, target 1): the n-th referral of one patient against the first.

For each backend (a fresh SQLite file; a fresh PostgreSQL database on 127.0.0.1:5432) this posts ``--referrals``
referrals of each mode, the modes taking turns (one referral of each, then the next: the same database, the same
moment of the machine's load), one after another (each waits for the previous answer), to the application itself
(``httpx.ASGITransport``: no socket, no delivery worker). Per bucket of ``--bucket`` referrals of a mode it prints
the median latency (wall), the median CPU time of this process per referral, and the SQL statements each referral
ran and the stored resources it read (from SQLAlchemy's cursor events and the rows decoded: deterministic, unlike
the times).

Modes:

* ``same-patient`` — every referral is for the same patient (same INS-NIR), as an integrator reposting one
  example patient, or a long-followed patient. The requester, her hospital and the GP are the same every time
  too, so this is also one requester's, one platform's and one GP's history;
* ``distinct`` — a new patient each time (the bodies of ``bench/intake/bench_intake.py``), same requester,
  hospital, GP and platform: one requester's, one platform's and one GP's history only.

The figures to read: **growth**, a mode's last bucket median over its first (1.0 when a referral's cost does not
depend on what came before it — but the database grows too, and the machine's load may change during the run);
and **same / distinct**, the two modes' medians in the same bucket, side by side: what one patient's history adds,
whatever the database's size and the machine's load (1.0: nothing). On a shared machine, read the CPU columns and
the counts rather than the wall times. ``--top N`` also lists the N statements whose total time grew most from the
first bucket to the last.

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
    """Every referral for the patient of index 0; new ServiceRequest and Bundle identifiers each time (numbered
    apart from ``Distinct``'s)."""

    def fields(self, index: int) -> tuple[str, str, str]:
        return super().fields(0)

    def make(self, index: int) -> bytes:
        return super().make(10_000_000 + index)


class Distinct(Referrals):
    """A new patient each time, never the patient of index 0 (``SamePatient``'s)."""

    def make(self, index: int) -> bytes:
        return super().make(1 + index)


MAKERS: dict[str, type[Referrals]] = {"same-patient": SamePatient, "distinct": Distinct}


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


@dataclass
class Curve:
    """One mode's samples, and its statements' time per bucket."""

    referrals: Referrals
    samples: list[Sample] = field(default_factory=list)
    per_bucket: list[dict[str, float]] = field(default_factory=list)
    time_by_text: dict[str, float] = field(default_factory=lambda: defaultdict(float))


async def run(url: str, curves: dict[str, Curve], count: int, bucket: int) -> None:
    settings = Settings(database_url=url, log_level="WARNING", auth="off")
    database = Database(settings.database_url)
    statements = Statements()
    statements.attach(database)
    app = create_app(settings, database=database)  # no worker: nothing is delivered
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.bench") as http:
            for index in range(count):
                for curve in curves.values():  # the modes take turns
                    body = curve.referrals.body(index)
                    statements.time_by_text = curve.time_by_text
                    before_count, before_rows = statements.count, statements.rows
                    cpu, wall = time.process_time(), time.perf_counter()
                    answer = await http.post("/fhir", content=body, headers=headers)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    if not 200 <= answer.status_code <= 299:
                        raise SystemExit(f"referral {index}: HTTP {answer.status_code}: {answer.text[:2000]}")
                    curve.samples.append(
                        Sample(wall * 1000, cpu * 1000, statements.count - before_count, statements.rows - before_rows)
                    )
                    if index % bucket == bucket - 1 or index == count - 1:
                        curve.per_bucket.append(dict(curve.time_by_text))
                        curve.time_by_text = defaultdict(float)
    await database.dispose()


def _medians(samples: list[Sample], bucket: int) -> list[tuple[float, float]]:
    return [
        (statistics.median(s.wall_ms for s in chunk), statistics.median(s.cpu_ms for s in chunk))
        for start in range(0, len(samples), bucket)
        if (chunk := samples[start : start + bucket])
    ]


def report(backend: str, mode: str, curve: Curve, bucket: int, top: int) -> dict[str, float]:
    samples, per_bucket = curve.samples, curve.per_bucket
    print(f"\n{backend} · {mode} · {len(samples)} referrals posted one after another")
    print(f"{'referrals':>13} {'p50 ms':>8} {'p90 ms':>8} {'CPU p50':>8} {'SQL stmts':>10} {'resources read':>15}")
    for start in range(0, len(samples), bucket):
        chunk = samples[start : start + bucket]
        wall = sorted(s.wall_ms for s in chunk)
        print(
            f"{start + 1:>6}–{start + len(chunk):<6} {statistics.median(wall):8.2f} {wall[int(len(wall) * 0.9)]:8.2f}"
            f" {statistics.median(s.cpu_ms for s in chunk):8.2f} {statistics.mean(s.statements for s in chunk):10.1f}"
            f" {statistics.mean(s.rows for s in chunk):15.1f}"
        )
    medians = _medians(samples, bucket)
    growth_wall, growth_cpu = medians[-1][0] / medians[0][0], medians[-1][1] / medians[0][1]
    print(f"growth (last bucket p50 / first): wall {growth_wall:.2f}×, CPU {growth_cpu:.2f}×")
    if top and len(per_bucket) > 1:
        first, last = per_bucket[0], per_bucket[-1]
        grown = sorted(last, key=lambda text: last[text] - first.get(text, 0.0), reverse=True)[:top]
        print("statements whose time grew most (ms per referral, first bucket → last):")
        n_first, n_last = min(bucket, len(samples)), len(samples) - bucket * (len(per_bucket) - 1)
        for text in grown:
            print(f"  {first.get(text, 0) * 1000 / n_first:7.3f} → {last[text] * 1000 / n_last:7.3f}  {text}")
    return {"wall": growth_wall, "cpu": growth_cpu}


def side_by_side(backend: str, curves: dict[str, Curve], bucket: int) -> dict[str, float] | None:
    """Same patient against distinct patients, bucket by bucket (both modes ran, taking turns)."""
    if set(curves) != set(MODES):
        return None
    same, distinct = (_medians(curves[mode].samples, bucket) for mode in MODES)
    print(f"\n{backend} · same-patient / distinct, bucket by bucket (p50 over p50)")
    print(f"{'referrals':>13} {'wall':>6} {'CPU':>6}")
    for n, ((same_wall, same_cpu), (other_wall, other_cpu)) in enumerate(zip(same, distinct, strict=True)):
        print(f"{n * bucket + 1:>6}–{min((n + 1) * bucket, len(curves[MODES[0]].samples)):<6}"
              f" {same_wall / other_wall:6.2f} {same_cpu / other_cpu:6.2f}")  # fmt: skip
    return {"wall": same[-1][0] / distinct[-1][0], "cpu": same[-1][1] / distinct[-1][1]}


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
    modes = args.modes.split(",")
    for backend in args.backends.split(","):
        if backend == "postgresql" and (error := postgres_error()):
            print(f"\npostgresql skipped: {error}")
            continue
        curves = {mode: Curve(MAKERS[mode](TEMPLATE, args.referrals)) for mode in modes}
        with tempfile.TemporaryDirectory(prefix="dac-history-") as tmp:
            place: AbstractContextManager[str] = (
                postgres_database() if backend == "postgresql" else nullcontext(f"sqlite:///{tmp}/gateway.db")
            )
            with place as url:
                migrate.upgrade(url)  # before the event loop: alembic runs its own
                asyncio.run(run(url, curves, args.referrals, args.bucket))
        for mode, curve in curves.items():
            growths.append((backend, mode, report(backend, mode, curve, args.bucket, args.top)))
        if (ratio := side_by_side(backend, curves, args.bucket)) is not None:
            growths.append((backend, "same/distinct", ratio))
    print("\nsummary (growth: last bucket p50 / first; same/distinct: last bucket; target ≤ 1.2):")
    for backend, mode, growth in growths:
        verdict = "ok  " if growth["cpu"] <= 1.2 else "MISS"
        print(f"  {verdict} {backend:<11} {mode:<14} wall {growth['wall']:.2f}×  CPU {growth['cpu']:.2f}×")


if __name__ == "__main__":
    main()

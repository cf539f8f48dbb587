#!/usr/bin/env python3
"""The escalation scan's round time against the number of GP validations ever decided (issue 17, part 3).

The worker runs ``escalate_due`` every ``GATEWAY_SCHEDULER_INTERVAL``. It used to read every Task whose deadline
ever passed (``ids_below`` on the search index) and open a write transaction for each, decided ones too: its round
grew with the history. It now reads ``pending_deadlines``, the open validations only.

For each size, the database holds that many decided ``gp-validation`` Tasks, deadlines long passed (seeded by
direct inserts: resources, and their search-index rows as the gateway writes them), and real referrals held for the
GP (taken in by ``take_in``, pta-2016) whose deadlines are due. Figures, each the median of ``--rounds`` rounds:

* **round, D due** — one ``escalate_due`` escalating D validations (each a contact-gp Task, a message queued);
* **idle round** — one with nothing due, the worker's usual case;
* **old round** (up to ``--old-up-to`` decided Tasks) — the former scan, replayed: ``ids_below`` and a write
  transaction per candidate that finds it decided, for comparison.

    .venv/bin/python bench/escalation/bench_escalation.py [--backend sqlite|postgresql] [--sizes 100,1000,10000,100000]
        [--due 10] [--rounds 5] [--old-up-to 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import sqlalchemy as sa
import structlog

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.fhir.primitives import fhir_instant, utc_now  # noqa: E402
from gateway.fhir.search import index_entries  # noqa: E402
from gateway.intake import read_referral, take_in  # noqa: E402
from gateway.routing.config import RoutingTable, load_routing  # noqa: E402
from gateway.store import Database, UnitOfWork  # noqa: E402
from gateway.store.migrate import upgrade  # noqa: E402
from gateway.store.tables import resources, search_index  # noqa: E402
from gateway.workflow.deadlines import escalate_due, waiting  # noqa: E402
from tests.support.databases import drop_scratch_database, scratch_database_url  # noqa: E402
from tests.support.processes import write_routing  # noqa: E402
from tests.support.referrals import fresh  # noqa: E402

POSTGRESQL = "postgresql://postgres@127.0.0.1:5432/test"
TASK_TYPE = "https://fhir.dac-gateway.org/CodeSystem/dac-task-type"
BUSINESS = "https://fhir.dac-gateway.org/CodeSystem/dac-task-business-status"
LONG_AGO = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CHUNK = 5_000


def decided_task(n: int) -> dict[str, object]:
    """A gp-validation Task the GP answered long ago (accepted or rejected), as the gateway stores one."""
    accepted = n % 4 != 0
    return {
        "resourceType": "Task",
        "id": f"decided-{n}",
        "meta": {"versionId": "2", "profile": ["https://fhir.dac-gateway.org/StructureDefinition/dac-task"]},
        "status": "accepted" if accepted else "rejected",
        "intent": "order",
        "code": {"coding": [{"system": TASK_TYPE, "code": "gp-validation"}]},
        "businessStatus": {"coding": [{"system": BUSINESS, "code": "accepted" if accepted else "declined"}]},
        "focus": {"reference": f"ServiceRequest/sr-{n}"},
        "for": {"reference": f"Patient/p-{n % 5000}"},
        "requester": {"reference": f"PractitionerRole/r-{n % 300}"},
        "owner": {"reference": f"PractitionerRole/gp-{n % 800}"},
        "authoredOn": fhir_instant(LONG_AGO - timedelta(days=7)),
        "lastModified": fhir_instant(LONG_AGO),
        "restriction": {"period": {"end": fhir_instant(LONG_AGO - timedelta(minutes=n % 10_000))}},
        "executionPeriod": {"end": fhir_instant(LONG_AGO)},
    }


async def seed_decided(database: Database, start: int, stop: int) -> None:
    """Decided Tasks ``start``…``stop - 1`` by direct inserts: resources, versions, search-index rows."""
    for low in range(start, stop, CHUNK):
        tasks = [decided_task(n) for n in range(low, min(stop, low + CHUNK))]
        rows = [
            {
                "resource_type": "Task",
                "id": task["id"],
                "version_id": 2,
                "last_updated": LONG_AGO,
                "content": orjson.dumps(task).decode(),
            }
            for task in tasks
        ]
        index = [
            {
                "resource_type": "Task",
                "resource_id": task["id"],
                "param": entry.param,
                "system": entry.system,
                "value": entry.value,
                "folded": entry.folded,
            }
            for task in tasks
            for entry in index_entries(task)
        ]
        async with database.engine.begin() as connection:
            # The current versions: in ``resources`` only (0013).
            await connection.execute(sa.insert(resources), [row | {"method": "PUT"} for row in rows])
            await connection.execute(sa.insert(search_index), index)


async def seed_held(database: Database, routing: RoutingTable, count: int) -> None:
    """``count`` real referrals held for the GP (Valenciennes, pta-2016): their validations wait."""
    for _ in range(count):
        await take_in(database, read_referral(fresh(commune="59606", tag="bench"), "transaction"), routing)


async def old_round(database: Database, now: datetime) -> int:
    """The former scan: every Task whose deadline passed, each looked at in a write transaction."""
    async with UnitOfWork(database, write=False) as uow:
        candidates = await uow.resources.ids_below("Task", "deadline", fhir_instant(now))
    for task_id in candidates:
        async with UnitOfWork(database) as uow:
            current = await uow.resources.get("Task", task_id)
            if current is not None and waiting(current.content):
                raise AssertionError("the old round is measured with nothing due")
    return len(candidates)


async def timed(work: object) -> float:
    started = time.perf_counter()
    await work  # type: ignore[misc]
    return (time.perf_counter() - started) * 1000


async def timed_cpu(work: object) -> tuple[float, float]:
    """Wall-clock and this process's CPU milliseconds (on SQLite the database's work is in-process: its CPU is
    what stays meaningful on a shared, noisy machine, where the wall clock also waits for other people's work)."""
    started, cpu = time.perf_counter(), time.process_time()
    await work  # type: ignore[misc]
    return (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000


async def run(args: argparse.Namespace, url: str, routing: RoutingTable) -> list[tuple[int, float, float, float, str]]:
    database = Database(url)
    results = []
    seeded = 0
    try:
        for size in args.sizes:
            await seed_decided(database, seeded, size)
            seeded = size
            await seed_held(database, routing, args.due * args.rounds)
            later = utc_now() + timedelta(days=30)  # every held validation is due then
            due_rounds, due_cpu = [], []
            for _ in range(args.rounds):
                elapsed, cpu = await timed_cpu(escalate_due(database, later, routing=routing, limit=args.due))
                due_rounds.append(elapsed)
                due_cpu.append(cpu)
            async with UnitOfWork(database, write=False) as uow:
                assert await uow.deadlines.due(later, 1) == [], "every held validation escalated"
            idle = [await timed(escalate_due(database, later, routing=routing)) for _ in range(args.rounds)]
            old = "—"
            if size <= args.old_up_to:
                repeats = 3 if size <= 1_000 else 1
                old = f"{statistics.median([await timed(old_round(database, later)) for _ in range(repeats)]):,.1f}"
            results.append(
                (size, statistics.median(due_rounds), statistics.median(due_cpu), statistics.median(idle), old)
            )
            _, due, cpu_ms, idle_ms, _ = results[-1]
            print(
                f"  {size:>9,} decided: round, {args.due} due {due:8.1f} ms (CPU {cpu_ms:.1f} ms); "
                f"idle {idle_ms:6.2f} ms; old {old} ms",
                flush=True,
            )
    finally:
        await database.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--sizes", default="100,1000,10000,100000", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--due", type=int, default=10, help="validations due in each measured round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--old-up-to", type=int, default=10_000, help="largest size the former scan is replayed at")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # the figures only
    with tempfile.TemporaryDirectory() as directory:
        url = scratch_database_url(Path(directory), POSTGRESQL if args.backend == "postgresql" else "")
        try:
            upgrade(url)
            routing_file = write_routing(
                Path(directory),
                {"dac-59": {"endpoint": "http://127.0.0.1:9/fhir", "finess": "590000030", "policy": "pta-2016"}},
                {"59": "dac-59"},
            )
            print(f"escalation scan, {args.backend}: {args.due} due per round, median of {args.rounds} rounds")
            results = asyncio.run(run(args, url, load_routing(routing_file)))
        finally:
            drop_scratch_database(url)
    print()
    print(
        f"| decided Tasks | round, {args.due} due (ms) | its CPU (ms) | idle round (ms) | old round, nothing due (ms) |"
    )
    print("|---:|---:|---:|---:|---:|")
    for size, due, cpu, idle, old in results:
        print(f"| {size:,} | {due:.1f} | {cpu:.1f} | {idle:.2f} | {old} |")


if __name__ == "__main__":
    main()

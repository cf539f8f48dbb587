#!/usr/bin/env python3
"""Delivery from the outbox to a loopback platform that answers at once (issue #6).

Two figures, on PostgreSQL by default (``--backend sqlite`` for the embedded database):

* **deliveries/s draining a full outbox** — N referrals are taken in by ``gateway serve`` while the platform is
  unreachable, so every entry fails once and waits its backoff; then the platform comes up, every entry is made
  due at once, and the clock runs until all N arrived. Beside the rate, the CPU seconds per delivery of the
  gateway processes (``serve`` and any ``--workers`` extra ``gateway worker`` processes), of the database's
  backends serving this database (PostgreSQL: read from ``/proc`` for the pids of ``pg_stat_activity``) and of
  the platform — CPU time is what stays meaningful on a shared, noisy machine.
* **intake → delivery latency** — referrals posted one by one at a steady rate with the platform up; for each,
  the time from the gateway's answer to the platform receiving it (p50 / p99).

The platform is ``bench/delivery/receiver.py``, a raw asyncio server in its own process, so that it is not what
limits the figure (its CPU per delivery is printed too).

    .venv/bin/python bench/delivery/bench_delivery.py [--referrals 1000] [--workers 0] [--stream 100] [--rate 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.fhir.primitives import utc_now  # noqa: E402
from gateway.store.database import Database  # noqa: E402
from gateway.store.tables import outbox  # noqa: E402
from tests.support.processes import GATEWAY, GatewayProcess, free_port, wait_until, write_routing  # noqa: E402
from tests.support.referrals import fresh  # noqa: E402

POSTGRESQL = "postgresql://postgres@127.0.0.1:5432/test"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, from /proc (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


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


class Receiver:
    """The platform process, and what it received (fetched incrementally)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}/fhir"
        self.process: subprocess.Popen[bytes] | None = None
        self.notes: list[tuple[str, str, str, float]] = []

    def start(self) -> None:
        script = Path(__file__).with_name("receiver.py")
        self.process = subprocess.Popen([sys.executable, str(script), str(self.port)])
        wait_until(self._listening, 10, 0.05, "the platform")

    def _listening(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/cpu", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def fetch(self) -> int:
        response = httpx.get(f"http://127.0.0.1:{self.port}/received?since={len(self.notes)}", timeout=10)
        self.notes += [tuple(note) for note in response.json()]  # type: ignore[misc]
        return len(self.notes)

    def cpu(self) -> float:
        return float(httpx.get(f"http://127.0.0.1:{self.port}/cpu", timeout=10).json())

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


def start_profiler(output: str, pid: int) -> subprocess.Popen[bytes] | None:
    """py-spy on the delivering process (the last worker, else ``serve``) for the drain, if asked."""
    if not output:
        return None
    py_spy = Path(sys.executable).with_name("py-spy")
    flags = os.environ.get("BENCH_PY_SPY_FLAGS", "").split()  # e.g. --idle, to see where it waits
    return subprocess.Popen(
        [str(py_spy), "record", "-p", str(pid), "-o", output, "-f", "speedscope", "-r", "200", *flags]
    )


def start_workers(gateway: GatewayProcess, count: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [*GATEWAY, "worker"],
            env=gateway.environment(),
            stdout=(gateway.directory / f"worker-{n}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        for n in range(count)
    ]


async def backend_pids(database: Database) -> list[int]:
    if database.is_sqlite:
        return []  # SQLite runs inside the gateway's processes: its CPU is theirs
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            sa.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        )
        return [int(row.pid) for row in rows]


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        platform = Receiver()
        routing = write_routing(
            directory, {"dac-75": {"endpoint": platform.endpoint, "finess": "750000010"}}, {"75": "dac-75"}
        )
        env = {
            "GATEWAY_LOG_LEVEL": "WARNING",
            # While the outbox fills, each entry fails once (nobody listens) and waits; the bench then makes
            # them all due at once.
            "GATEWAY_DELIVERY_BACKOFF_BASE": "600",
            "GATEWAY_DELIVERY_BACKOFF_CAP": "600",
            "GATEWAY_DELIVERY_LEASE": "30",
        }
        if args.per_destination:
            env["GATEWAY_DELIVERY_PER_DESTINATION"] = str(args.per_destination)
        gateway = GatewayProcess(
            directory, routing, env=env, backend=POSTGRESQL if args.backend == "postgresql" else ""
        )
        await asyncio.to_thread(gateway.start)
        workers = await asyncio.to_thread(start_workers, gateway, args.workers)
        database = Database(gateway.database_url)
        try:
            assert gateway.process is not None
            gateway_pids = [gateway.process.pid, *(worker.pid for worker in workers)]

            # 1. throughput: fill the outbox while the platform is down, then let it drain
            bodies = [orjson.dumps(fresh(commune="75056", tag=f"d{i}")) for i in range(args.referrals)]
            filling = time.perf_counter()
            await post_all(gateway.base, bodies)
            print(f"filled the outbox: {args.referrals} referrals in {time.perf_counter() - filling:.0f} s")

            async def waiting() -> int:
                async with database.engine.connect() as connection:
                    o = outbox.c
                    query = sa.select(sa.func.count()).where(o.attempts >= 1, o.lease_owner.is_(None))
                    return int((await connection.execute(query)).scalar_one())

            while True:  # until every entry was tried once and waits its backoff
                if await waiting() >= args.referrals:
                    break
                await asyncio.sleep(0.2)
            await asyncio.to_thread(platform.start)
            pids = gateway_pids + await backend_pids(database)
            cpu_before = {pid: cpu_seconds(pid) for pid in pids}
            platform_before = await asyncio.to_thread(platform.cpu)
            async with database.engine.begin() as connection:
                await connection.execute(sa.update(outbox).values(next_attempt_at=utc_now()))
            profiler = await asyncio.to_thread(start_profiler, args.profile, gateway_pids[-1])
            started = time.perf_counter()
            await asyncio.to_thread(wait_until, lambda: platform.fetch() >= args.referrals, 600, 0.05, "the drain")
            elapsed = time.perf_counter() - started
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                await asyncio.to_thread(profiler.wait, 30)
            platform_cpu = await asyncio.to_thread(platform.cpu) - platform_before
            pids = list(dict.fromkeys(pids + await backend_pids(database)))  # connections opened meanwhile too
            cpu = {pid: cpu_seconds(pid) - cpu_before.get(pid, 0.0) for pid in pids}
            ids = [note[0] for note in platform.notes]
            n = args.referrals
            gateway_cpu = sum(cpu[pid] for pid in gateway_pids)
            database_cpu = sum(seconds for pid, seconds in cpu.items() if pid not in gateway_pids)
            print(
                f"backend {args.backend}, serve + {args.workers} worker(s): {n} deliveries in {elapsed:.2f} s = "
                f"{n / elapsed:.0f} deliveries/s (duplicates: {len(ids) - len(set(ids))})\n"
                f"  CPU per delivery: gateway {1000 * gateway_cpu / n:.2f} ms, "
                f"database {1000 * database_cpu / n:.2f} ms, platform {1000 * platform_cpu / n:.2f} ms\n"
                f"  CPU-bound ceiling on this machine ({os.cpu_count()} cores, all of them for gateway, database and "
                f"platform): {os.cpu_count() * n / (gateway_cpu + database_cpu + platform_cpu):.0f} deliveries/s"
            )

            # 2. latency: a steady stream with the platform up
            if args.stream <= 0:
                return
            seen = len(platform.notes)
            answers: list[tuple[str, float]] = []
            for i in range(args.stream):
                answers += await post_all(gateway.base, [orjson.dumps(fresh(commune="75056", tag=f"l{i}"))], clients=1)
                await asyncio.sleep(1 / args.rate)
            await asyncio.to_thread(wait_until, lambda: platform.fetch() >= seen + len(answers), 60, 0.05, "the stream")
            arrivals = {note[2]: note[3] for note in platform.notes[seen:]}
            latencies = sorted((arrivals[sr] - answered) * 1000 for sr, answered in answers if sr in arrivals)
            p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
            print(
                f"intake → delivery at {args.rate}/s: p50 {statistics.median(latencies):.0f} ms, p99 {p99:.0f} ms "
                f"({len(latencies)} referrals)"
            )
        finally:
            await database.dispose()
            for worker in workers:
                worker.terminate()
                worker.wait(10)
            await asyncio.to_thread(gateway.drop)
            platform.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--referrals", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=0, help="`gateway worker` processes beside `gateway serve`")
    parser.add_argument("--per-destination", type=int, default=0, help="GATEWAY_DELIVERY_PER_DESTINATION")
    parser.add_argument("--stream", type=int, default=100, help="referrals for the latency figure")
    parser.add_argument("--rate", type=float, default=10.0, help="referrals/s for the latency figure")
    parser.add_argument("--profile", default="", help="py-spy record the delivering process into this file")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

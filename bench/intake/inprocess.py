#!/usr/bin/env python3
"""Intake alone, in one process: what taking a referral in costs, without HTTP sockets or the delivery worker.

``bench_intake.py`` measures the real server, whose CPU also pays for uvicorn and for delivering what it routes.
This script posts distinct referrals (the same bodies as ``bench_intake.py``) to the application itself through
``httpx.ASGITransport``, ``--clients`` at a time, on a fresh SQLite file (or ``--database-url``), and prints the
process's CPU time per referral — the load generator's share (httpx building requests) included, so compare
figures of this script with each other, not with the server's. ``--profile FILE`` writes cProfile statistics of
the counted referrals (``python -m pstats FILE``); py-spy works too (``py-spy record -- python …``). On SQLite,
``--sqlite`` also splits out what the SQLite library itself took: its CPU per referral (commits, inserts, reads;
the statements run on the event loop's thread, so the thread's CPU around each is theirs) and the bytes the
process wrote per referral (``/proc/self/io``: the journal and the checkpoints).

    .venv/bin/python bench/intake/inprocess.py --referrals 600
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import itertools
import sqlite3
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.intake.bench_intake import FHIR_JSON, TEMPLATE, Referrals
from gateway.api.app import create_app
from gateway.config import Settings
from gateway.logging import configure_logging
from gateway.store import database, migrate


class SQLiteTime:
    """CPU and wall time of the SQLite library's calls, by kind (commit, INSERT, SELECT…): each call of the inline
    connection (``gateway.store.database._RunAtOnce``) timed with the thread's CPU clock."""

    def __init__(self) -> None:
        self.by_kind: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0])
        self.counting = False
        self._run = database._RunAtOnce.put_nowait

    def install(self) -> None:
        run, by_kind = self._run, self.by_kind

        def timed(queue: database._RunAtOnce, item: tuple[Any, Any]) -> None:
            if not self.counting:
                return run(queue, item)
            function = item[1]
            name = getattr(getattr(function, "func", function), "__name__", "call")
            arguments = getattr(function, "args", ())
            if name in ("execute", "executemany") and arguments and isinstance(arguments[0], str):
                name = arguments[0].split(None, 1)[0].upper()
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return run(queue, item)
            finally:
                spent = by_kind[name]
                spent[0] += time.thread_time() - cpu
                spent[1] += time.perf_counter() - wall
                spent[2] += 1

        database._RunAtOnce.put_nowait = timed  # type: ignore[method-assign,assignment]

    def report(self, done: int, written: int) -> None:
        total = sum(cpu for cpu, _, _ in self.by_kind.values())
        parts = sorted(self.by_kind.items(), key=lambda kv: -kv[1][0])
        shown = ", ".join(f"{name} {cpu * 1000 / done:.2f}" for name, (cpu, _, _) in parts if cpu * 1000 / done >= 0.01)
        calls = ", ".join(f"{name} {n / done:.1f}" for name, (_, _, n) in parts if n / done >= 0.05)
        print(
            f"SQLite library: CPU {total * 1000 / done:.2f} ms/ref ({shown}); "
            f"wall {sum(w for _, w, _ in self.by_kind.values()) * 1000 / done:.2f} ms/ref on the event loop; "
            f"written {written / done / 1024:.0f} KiB/ref\n"
            f"  calls per referral: {calls}"
        )


def _census(path: str) -> collections.Counter[str]:
    """Rows per table, and the search index's rows per resource type and per (type, parameter), of a SQLite file;
    and the size of its write-ahead log."""
    wal = Path(f"{path}-wal")
    with sqlite3.connect(path) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        counts = collections.Counter({t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables})
        for kind, param, n in db.execute("SELECT resource_type, param, count(*) FROM search_index GROUP BY 1, 2"):
            counts[f"index {kind}"] += n
            counts[f"index {kind}.{param}"] += n
        for kind, n in db.execute("SELECT resource_type, count(*) FROM resource_versions GROUP BY 1"):
            counts[f"version {kind}"] += n
        for kind, n in db.execute("SELECT resource_type, count(*) FROM referral_members GROUP BY 1"):
            counts[f"member {kind}"] += n
    counts["wal bytes"] = wal.stat().st_size if wal.exists() else 0
    return counts


def _print_pages(path: str, start: int) -> None:
    """The pages the counted referrals' commits wrote to the write-ahead log (checkpoints off: ``--pages``), per
    commit and by the table or index each belongs to (SQLite's ``dbstat``). A frame is a 24-byte header (its page
    number, and the database size for a commit's last frame) and the page."""
    data = Path(f"{path}-wal").read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    frames, commits, offset = [], 0, max(start, 32)
    while offset + 24 + page_size <= len(data):
        page, size = struct.unpack(">II", data[offset : offset + 8])
        frames.append(page)
        commits += size != 0
        offset += 24 + page_size
    with sqlite3.connect(path) as db:
        owner = dict(db.execute("SELECT pageno, name FROM dbstat"))
    by_tree = collections.Counter(owner.get(page, "?") for page in frames)
    commits = max(commits, 1)
    print(
        f"WAL: {len(frames) / commits:.1f} pages per commit ({commits} commits, {page_size}-byte pages): "
        + ", ".join(f"{name} {n / commits:.1f}" for name, n in by_tree.most_common())
    )


def _print_census(before: collections.Counter[str], after: collections.Counter[str], done: int) -> None:
    grown = {
        key: (after[key] - before[key]) / done for key in after if after[key] != before[key] and key != "wal bytes"
    }
    tables = {k: v for k, v in grown.items() if not k.startswith(("index ", "version ", "member "))}
    print(
        f"rows per referral: {sum(tables.values()):.1f} ("
        + ", ".join(f"{k} {v:.1f}" for k, v in sorted(tables.items(), key=lambda kv: -kv[1]))
        + ")"
    )
    kinds = {k[6:]: v for k, v in grown.items() if k.startswith("index ") and "." not in k}
    print(
        "  search_index rows by type: "
        + ", ".join(f"{k} {v:.1f}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
    )
    params = {k[6:]: v for k, v in grown.items() if k.startswith("index ") and "." in k}
    print("  by parameter: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(params.items(), key=lambda kv: -kv[1])))
    members = {k[7:]: v for k, v in grown.items() if k.startswith("member ")}
    print(
        "  referral_members by type: "
        + ", ".join(f"{k} {v:.1f}" for k, v in sorted(members.items(), key=lambda kv: -kv[1]))
    )
    versions = {k[8:]: v for k, v in grown.items() if k.startswith("version ")}
    print(
        "  versions by type: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(versions.items(), key=lambda kv: -kv[1]))
    )


def _written() -> int:
    """Bytes this process has written (``wchar`` of /proc/self/io: SQLite's journal and checkpoints here)."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("wchar:"))


async def run(
    settings: Settings,
    referrals: Referrals,
    count: int,
    clients: int,
    warmup: int,
    profile: str | None,
    sqlite: SQLiteTime | None = None,
    census: str | None = None,
    pages: bool = False,
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
            before = _census(census) if census else None
            profiler = cProfile.Profile() if profile else None
            per_client = count // clients
            cpu, wall, written = time.process_time(), time.perf_counter(), _written()
            if sqlite:
                sqlite.counting = True
            if profiler:
                profiler.enable()
            await asyncio.gather(*(post(per_client) for _ in range(clients)))
            written = _written() - written
            if sqlite:
                sqlite.counting = False
            if profiler and profile:
                profiler.disable()
                profiler.dump_stats(profile)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            after = _census(census) if census else None
    done = per_client * clients
    print(
        f"{done} referrals, {clients} clients: CPU {cpu * 1000 / done:.2f} ms/ref, wall {wall * 1000 / done:.2f} ms/ref"
    )
    if sqlite:
        sqlite.report(done, written)
    if census and before is not None and after is not None:
        _print_census(before, after, done)
        if pages:
            _print_pages(census, before["wal bytes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--referrals", type=int, default=600, help="referrals counted (default 600)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--warmup", type=int, default=40, help="referrals posted first, not counted (default 40)")
    parser.add_argument("--database-url", help="default: a fresh SQLite file (PostgreSQL: run `gateway db upgrade`)")
    parser.add_argument("--profile", metavar="FILE", help="write cProfile statistics of the counted referrals")
    parser.add_argument("--sqlite", action="store_true", help="split out the SQLite library's CPU and bytes written")
    parser.add_argument(
        "--rows", action="store_true", help="rows written per referral, per table and per search parameter (SQLite)"
    )
    parser.add_argument(
        "--pages",
        action="store_true",
        help="with --rows: no checkpoints, and the pages each commit wrote to the WAL, by table and index (SQLite)",
    )
    args = parser.parse_args()
    sqlite = SQLiteTime() if args.sqlite else None
    with tempfile.TemporaryDirectory(prefix="dac-inprocess-") as tmp:
        url = args.database_url or f"sqlite:///{tmp}/gateway.db"
        settings = Settings(database_url=url, log_level="WARNING", auth="off")  # as bench_intake.py without --auth
        if settings.is_sqlite:
            migrate.upgrade(settings.database_url)  # before the event loop: alembic runs its own
        configure_logging(settings.log_level, settings.log_json)
        if sqlite is not None and settings.is_sqlite:
            sqlite.install()
        if args.pages:  # the log keeps every frame: what each commit wrote, read back from it afterwards
            database._SQLITE_PRAGMAS += ("PRAGMA wal_autocheckpoint=0",)
        referrals = Referrals(TEMPLATE, args.referrals + args.warmup + args.clients)
        asyncio.run(
            run(
                settings,
                referrals,
                args.referrals,
                args.clients,
                args.warmup,
                args.profile,
                sqlite if settings.is_sqlite else None,
                str(make_url(url).database) if args.rows and settings.is_sqlite else None,
                args.pages,
            )
        )


if __name__ == "__main__":
    main()

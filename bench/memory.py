#!/usr/bin/env python3
"""A gateway process's memory as referrals go by (issue 21, target 4: RSS < 200 MB per process after 100,000).

The application runs in this process, as ``gateway serve`` runs it (``create_app(…, with_worker=True)``: the API
and the delivery worker on one event loop), with authentication on (a registered sender, ES384 assertion, bearer
token) and the example routing pointed at the loopback platform of ``bench/intake/sink_app.py`` (a process of its
own: deliveries leave over real sockets, as in production). Referrals are posted through ``httpx.ASGITransport``
— no uvicorn, no client process: the CPU of a shared machine goes to the gateway — ``--clients`` at a time; one
in ``--repeat-every`` is for one of ``--repeat-patients`` returning patients (the rest are distinct patients), a
search (``ServiceRequest?identifier=`` of the one just posted) is made every 10 referrals so that reads leave their
AuditEvents too, and a new access token is fetched every ``--token-every`` referrals (clients renew theirs). Every
``--every`` referrals, once the worker has delivered all that was taken in, it reads this process's resident memory
(``VmRSS``, split into ``RssAnon``, the heap, and ``RssFile``, mapped files) from ``/proc/self/status``, and of it
what SQLite holds (``sqlite3_memory_used``: its connections' page caches and statements).

This process is the gateway process plus the load generator: the generator's share (an httpx client, one body at a
time) is small and constant, so the figures are a slight over-estimate of ``gateway serve``'s.

``--trace A,B`` starts tracemalloc at start-up (slower: for short runs) and prints, at B referrals, the allocation
sites that grew most since A — what keeps growing with referrals, by file and line.

It prints RSS against referrals, the slope over the second half of the run (MB per 10,000 referrals: what keeps
growing once caches and pools are warm) and the RSS that slope gives at 100,000 referrals.

    nice -n 10 .venv/bin/python bench/memory.py --referrals 100000 --every 10000 [--backend postgresql]
    nice -n 10 .venv/bin/python bench/memory.py --referrals 10000 --every 2000 --trace 2000,10000
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import itertools
import os
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.intake.bench_intake import (
    FHIR_JSON,
    TEMPLATE,
    BenchClient,
    Referrals,
    clean_env,
    free_port,
    loopback_routing,
    postgres_database,
    serve,
    tail,
)

TARGET_MB, AT_REFERRALS = 200.0, 100_000
BASE_URL = "http://gateway.bench"
SEARCH_EVERY = 10
REQUEST_SYSTEM = "https://hopital-exemple.fr/fhir/referral-id"  # the template's ServiceRequest.identifier system


class SinkLost(Exception):
    """The loopback platform stopped answering (its process ended): no delivery can be counted any more."""


class MixedReferrals(Referrals):
    """The bench's distinct referrals, one in ``repeat_every`` of them for a returning patient (one of
    ``repeat_patients``, taken from the top of the patients' range so that they never meet a distinct one)."""

    def __init__(self, repeat_every: int, repeat_patients: int) -> None:
        super().__init__(TEMPLATE, 0)
        self.repeat_every, self.repeat_patients = repeat_every, repeat_patients

    def patient(self, index: int) -> int:
        if self.repeat_every and index % self.repeat_every == 0:
            return self.capacity - 1 - (index // self.repeat_every) % self.repeat_patients
        return index

    def make(self, index: int) -> bytes:
        year, month, nir = self.fields(self.patient(index))
        return (
            self.template.replace(b"@BUNDLE@", str(uuid.uuid5(uuid.NAMESPACE_OID, f"memory-{index}")).encode())
            .replace(b"@REQUEST@", b"CH3R-MEMORY-%08d" % index)
            .replace(b"@NIR@", nir.encode())
            .replace(b"@YY@", year.encode())
            .replace(b"@MM@", month.encode())
        )


def sqlite_mb() -> float:
    """What SQLite holds itself (page caches and prepared statements of every connection: malloc'd in C, so no
    tracemalloc site shows it), from ``sqlite3_memory_used`` of the library ``sqlite3`` is linked to; 0 without it."""
    name = ctypes.util.find_library("sqlite3")
    if name is None or not any(name in line for line in Path("/proc/self/maps").read_text().splitlines()):
        return 0.0
    library = ctypes.CDLL(name)
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return float(library.sqlite3_memory_used()) / 2**20


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


async def access_token(http: httpx.AsyncClient, client: BenchClient) -> str:
    """A new token from the gateway's token endpoint (what ``BenchClient.authorization`` does, through ``http``)."""
    import jwt

    token_url = f"{BASE_URL}/auth/token"
    now = int(time.time())
    claims = {"iss": "bench", "sub": "bench", "aud": token_url, "exp": now + 240, "jti": uuid.uuid4().hex}
    assertion = jwt.encode(claims, client._key, algorithm="ES384", headers={"kid": "bench"})
    form = {
        "grant_type": "client_credentials",
        "scope": "system/ServiceRequest.cs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    answer = await http.post("/auth/token", data=form)
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def top_growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, limit: int = 25) -> None:
    ignored = (tracemalloc.__file__, "<frozen importlib._bootstrap>", "<unknown>")
    filters = [tracemalloc.Filter(False, pattern) for pattern in ignored]
    stats = after.filter_traces(filters).compare_to(before.filter_traces(filters), "lineno")
    print(f"tracemalloc: the {limit} allocation sites that grew most", flush=True)
    for stat in stats[:limit]:
        print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+8d} blocks  {stat.traceback[0]}", flush=True)


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares MB per referral."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0


async def run(args: argparse.Namespace, database_url: str, routing: Path, work: Path, sink_url: str) -> None:
    from gateway.api.app import create_app
    from gateway.config import Settings
    from gateway.logging import configure_logging

    bench_client = BenchClient(work / "auth") if args.auth else None
    environment = bench_client.environment() if bench_client else {"GATEWAY_AUTH": "off"}
    settings = Settings(
        database_url=database_url,
        routing=routing,
        log_level="WARNING",
        listen_url=f"{BASE_URL}/fhir",
        auth=environment["GATEWAY_AUTH"],
        clients=environment.get("GATEWAY_CLIENTS"),
        auth_secret=environment.get("GATEWAY_AUTH_SECRET"),
        access_token_lifetime=int(environment.get("GATEWAY_ACCESS_TOKEN_LIFETIME", "300")),
    )
    configure_logging(settings.log_level, settings.log_json)
    referrals = MixedReferrals(args.repeat_every, args.repeat_patients)
    trace_from, trace_at = args.trace or (0, 0)
    if args.trace:
        tracemalloc.start(args.trace_frames)
    app = create_app(settings, with_worker=True)
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    points: list[tuple[int, float]] = []
    snapshot: tracemalloc.Snapshot | None = None
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL, timeout=120) as http,
        httpx.AsyncClient(base_url=sink_url, timeout=10) as sink,
    ):

        async def renew_token() -> None:
            if bench_client is not None:
                headers["Authorization"] = f"Bearer {await access_token(http, bench_client)}"

        async def post(indexes: Iterator[int]) -> None:
            for index in indexes:
                if args.token_every and index % args.token_every == 0:
                    await renew_token()
                answer = await http.post("/fhir", content=referrals.body(index), headers=headers)
                if not 200 <= answer.status_code <= 299:
                    raise SystemExit(f"referral {index}: HTTP {answer.status_code}: {answer.text[:2000]}")
                if index % SEARCH_EVERY == 0:  # a search that stays one match: ``_count=50`` over every referral
                    # taken in costs more at each one (its total counts them all), and the run slows as it goes
                    query = {"identifier": f"{REQUEST_SYSTEM}|CH3R-MEMORY-{index:08d}"}
                    found = await http.get("/fhir/ServiceRequest", params=query, headers=headers)
                    found.raise_for_status()
                    if found.json().get("total") != 1:
                        raise SystemExit(f"referral {index}: its search found {found.json().get('total')}")

        async def delivered() -> int:
            try:
                return int((await sink.get("/count")).json()["count"])
            except httpx.HTTPError as exc:  # the readings so far still make a curve: reported, not lost
                raise SinkLost(
                    f"the loopback platform stopped answering ({exc!r}); its log:\n{tail(work / 'sink.log')}"
                ) from exc

        await renew_token()
        gc.collect()
        start_rss = status_mb("VmRSS")
        print(
            f"backend {args.backend}, auth {'on' if args.auth else 'off'}, {args.clients} clients, one referral in "
            f"{args.repeat_every} for {args.repeat_patients} returning patients: RSS at start {start_rss:.1f} MB "
            f"(anon {status_mb('RssAnon'):.1f}, file {status_mb('RssFile'):.1f}, SQLite's own {sqlite_mb():.1f})",
            flush=True,
        )
        print(
            f"{'referrals':>10} {'RSS MB':>8} {'anon MB':>8} {'file MB':>8} {'sqlite MB':>9} {'peak MB':>8} {'s':>6}",
            flush=True,
        )
        started = time.perf_counter()
        try:
            for done in itertools.count(args.every, args.every):
                if done > args.referrals or (args.minutes and time.perf_counter() - started > args.minutes * 60):
                    break
                indexes = iter(range(done - args.every, done))
                await asyncio.gather(*(post(indexes) for _ in range(args.clients)))
                for _ in range(1_500):  # 5 minutes at most
                    if await delivered() >= done:
                        break
                    await asyncio.sleep(0.2)
                else:
                    print(f"only {await delivered()} deliveries for {done} referrals after 5 minutes", flush=True)
                rss = status_mb("VmRSS")
                points.append((done, rss))
                print(
                    f"{done:>10} {rss:8.1f} {status_mb('RssAnon'):8.1f} {status_mb('RssFile'):8.1f} {sqlite_mb():9.1f} "
                    f"{status_mb('VmHWM'):8.1f} {time.perf_counter() - started:6.0f}",
                    flush=True,
                )
                if done == trace_from:
                    gc.collect()
                    snapshot = tracemalloc.take_snapshot()
                elif done == trace_at and snapshot is not None:
                    gc.collect()
                    top_growth(snapshot, tracemalloc.take_snapshot())
        except SinkLost as exc:
            print(f"run cut short: {exc}", flush=True)
    if not points:
        return
    second_half = points[len(points) // 2 :]
    per_referral = slope(second_half) if len(second_half) >= 2 else 0.0
    projected = points[-1][1] + per_referral * (AT_REFERRALS - points[-1][0])
    verdict = "ok" if projected < TARGET_MB else "MISS"
    print(
        f"slope over the second half: {per_referral * 10_000:.2f} MB per 10,000 referrals; "
        f"at {AT_REFERRALS:,} referrals: {projected:.0f} MB ({verdict}: target < {TARGET_MB:.0f} MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--referrals", type=int, default=20_000)
    parser.add_argument("--every", type=int, default=2_000, help="referrals between two readings")
    parser.add_argument("--minutes", type=float, help="no new reading begun after this long (a shared machine)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--no-auth", dest="auth", action="store_false", help="GATEWAY_AUTH=off")
    parser.add_argument("--repeat-every", type=int, default=4, help="one referral in N is a returning patient's")
    parser.add_argument("--repeat-patients", type=int, default=200)
    parser.add_argument("--token-every", type=int, default=5_000, help="referrals between two new tokens")
    parser.add_argument(
        "--trace",
        type=lambda text: tuple(int(part) for part in text.split(",")),
        metavar="A,B",
        help="tracemalloc: the allocation sites grown between A and B referrals (readings: multiples of --every)",
    )
    parser.add_argument("--trace-frames", type=int, default=1)
    parser.add_argument("--platform", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.platform:
        import uvicorn

        from bench.intake.sink_app import app

        uvicorn.run(app, host="127.0.0.1", port=args.platform, access_log=False, log_level="warning")
        return
    from gateway.store import migrate

    with tempfile.TemporaryDirectory(prefix="dac-memory-") as scratch:
        work = Path(scratch)
        sink_port = free_port()
        sink_url = f"http://127.0.0.1:{sink_port}"
        # The loopback platform, started as this script (``--platform``): not a process any look for by name.
        platform = [sys.executable, str(Path(__file__).resolve()), "--platform", str(sink_port)]
        with serve("sink", platform, clean_env(), work, sink_url, "/count", work):
            routing = loopback_routing(work / "routing", f"{sink_url}/fhir")
            place: AbstractContextManager[str] = (
                postgres_database() if args.backend == "postgresql" else nullcontext(f"sqlite:///{work}/gateway.db")
            )
            with place as url:
                migrate.upgrade(url)  # before the event loop: alembic runs its own
                for key in [key for key in os.environ if key.startswith("GATEWAY_")]:
                    del os.environ[key]  # the settings are this bench's, not the caller's
                asyncio.run(run(args, url, routing, work, sink_url))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Referral intake throughput: the gateway against the DESIGN §9 floor, side by side, in one run.

Targets, one after the other, each a server process of its own on loopback, each on a fresh database:

* ``floor`` — ``bench/intake/floor_app.py``: parse the Bundle with fhir.resources, dump it, insert one JSON row
  in SQLite;
* ``gateway-sqlite`` — ``gateway serve`` on a SQLite file;
* ``gateway-postgresql`` — ``gateway serve`` on a fresh PostgreSQL database (127.0.0.1:5432, user postgres),
  skipped with a note when PostgreSQL does not answer.

The load generator runs here: ``--clients`` concurrent clients post distinct referrals (the hospital-nurse example
under a new ServiceRequest identifier, Bundle identifier and patient INS-NIR each time) for ``--warmup`` seconds
not counted, then ``--seconds`` counted. The gateways deliver what they route to a loopback platform
(``bench/intake/sink_app.py``), never to the example routing's endpoints.

    .venv/bin/python bench/intake/bench_intake.py --seconds 15 [--backends sqlite,postgresql] [--auth] [--json]

``--rate R`` offers R referrals/s instead, open-loop: each request starts on its schedule whether or not the
earlier ones were answered, and its latency counts from that scheduled start (no coordinated omission).

``--auth`` runs the gateways with authentication on (SMART Backend Services): the bench registers a client with a
key made for the run, gets an access token at ``/auth/token`` and sends it with every referral.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "examples" / "referral-hospital-nurse.json"
ROUTING_DIR = ROOT / "mappings" / "routing"
FLOOR_APP = "bench.intake.floor_app:app"
SINK_APP = "bench.intake.sink_app:app"

INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
FHIR_JSON = "application/fhir+json"
POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER = "127.0.0.1", 5432, "postgres"
BACKENDS = ("sqlite", "postgresql")

# Issue targets: the gateway keeps at least half the floor's throughput on SQLite, answers no non-2xx, and its
# server process stays under 200 MB resident.
MIN_RATIO_SQLITE = 0.5
MAX_RSS_MB = 200.0
MIN_SCALING_2P = 1.6  # issue #7: two API processes on PostgreSQL against one

CLOSED_LOOP_CLIENTS = 8
# Open loop: enough connections that requests do not queue behind each other at the offered rate (100/s at 50 ms
# is 5 in flight); one that does wait for a connection is still timed from its scheduled start.
OPEN_LOOP_CONNECTIONS = 64

BODY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://fhir.dac-gateway.org/bench")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# Distinct referrals
# ---------------------------------------------------------------------------------------------------------
def nir_key(nir13: str) -> str:
    """INS-NIR key: 97 − (the 13-digit number mod 97), two digits (no Corsican department here)."""
    return f"{97 - int(nir13) % 97:02d}"


class Referrals:
    """The template referral with a new ServiceRequest identifier, Bundle identifier and patient for each index.

    The patient's INS-NIR stays coherent with her identity traits: sex and birth commune as in the template, birth
    year and month (``birthDate``) and the 3-digit birth order varying — 999 × 12 × 60 distinct patients. The
    Patient entry's ``request.ifNoneExist`` carries the same INS. Bodies are compact JSON bytes made by replacing
    placeholders in the serialised template, pre-generated into a pool before any timing.
    """

    ORDERS, MONTHS, YEARS = 999, 12, 60

    def __init__(self, template: Path, pool_size: int) -> None:
        bundle: dict[str, Any] = json.loads(template.read_text(encoding="utf-8"))
        bundle["identifier"]["value"] = "urn:uuid:@BUNDLE@"
        entries = bundle["entry"]
        service_request = next(e for e in entries if e["resource"]["resourceType"] == "ServiceRequest")
        service_request["resource"]["identifier"][0]["value"] = "@REQUEST@"
        patient_entry = next(e for e in entries if e["resource"]["resourceType"] == "Patient")
        patient = patient_entry["resource"]
        ins = next(i for i in patient["identifier"] if i["system"] == INS_NIR)
        nir = str(ins["value"])
        if nir_key(nir[:13]) != nir[13:]:
            raise ValueError(f"the template's INS-NIR {nir} has an invalid key")
        self.sex, self.commune = nir[0], nir[5:10]
        birth_day = str(patient["birthDate"])[8:10]
        ins["value"] = "@NIR@"
        patient["birthDate"] = f"19@YY@-@MM@-{birth_day}"
        patient_entry["request"]["ifNoneExist"] = f"identifier={INS_NIR}|@NIR@"
        self.template = json.dumps(bundle, ensure_ascii=False, separators=(",", ":")).encode()
        self.capacity = self.ORDERS * self.MONTHS * self.YEARS
        self.generated_late = 0
        self.pool = [self.make(index) for index in range(min(pool_size, self.capacity))]

    def fields(self, index: int) -> tuple[str, str, str]:
        """(two-digit birth year, birth month, INS-NIR) of the index-th patient."""
        if index >= self.capacity:
            raise RuntimeError(f"more than {self.capacity} distinct referrals asked for")
        order = index % self.ORDERS + 1
        month = (index // self.ORDERS) % self.MONTHS + 1
        year = 30 + index // (self.ORDERS * self.MONTHS)
        nir13 = f"{self.sex}{year:02d}{month:02d}{self.commune}{order:03d}"
        return f"{year:02d}", f"{month:02d}", nir13 + nir_key(nir13)

    def make(self, index: int) -> bytes:
        year, month, nir = self.fields(index)
        return (
            self.template.replace(b"@BUNDLE@", str(uuid.uuid5(BODY_NAMESPACE, str(index))).encode())
            .replace(b"@REQUEST@", b"CH3R-BENCH-%08d" % index)
            .replace(b"@NIR@", nir.encode())
            .replace(b"@YY@", year.encode())
            .replace(b"@MM@", month.encode())
        )

    def body(self, index: int) -> bytes:
        if index < len(self.pool):
            return self.pool[index]
        self.generated_late += 1
        return self.make(index)


# ---------------------------------------------------------------------------------------------------------
# Processes: memory and CPU from /proc
# ---------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def proc_status_kb(pid: int, field_name: str) -> int | None:
    """A field of /proc/<pid>/status such as ``VmHWM``, in kB (None if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is fields[0], ppid fields[1]


def process_tree(pid: int) -> list[int]:
    """A process and its descendants (``gateway serve --workers N`` does its work in child processes)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time so far of a process and its descendants, every thread (None if it is gone)."""
    if pid is None or _stat_fields(pid) is None:
        return None
    total = 0.0
    for member in process_tree(pid):
        fields = _stat_fields(member)
        if fields is not None:  # utime, stime are fields[11], fields[12]
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def database_backends(database: str) -> list[int]:
    """The PostgreSQL server processes serving connections to ``database`` (their title names it:
    ``postgres: 15/main: postgres bench_1a2b… 127.0.0.1(40000) idle``)."""
    backends = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres: ") and f" {database} " in title:
            backends.append(int(entry.name))
    return backends


def database_cpu_seconds(database: str | None) -> float | None:
    """User + system CPU time so far of the PostgreSQL backends serving ``database`` (None: no such database).
    A backend that exits takes its time with it: the gateway's pool keeps its connections, so few do."""
    if database is None:
        return None
    total = 0.0
    for backend in database_backends(database):
        fields = _stat_fields(backend)
        if fields is not None:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def peak_rss_kb(pid: int) -> int | None:
    """The largest peak resident set among a process and its descendants (each API process is its own)."""
    peaks = [kb for member in process_tree(pid) if (kb := proc_status_kb(member, "VmHWM")) is not None]
    return max(peaks) if peaks else None


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy so far (every core, every process; idle, iowait and steal left out)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, _steal = values
    return (user + nice + system + irq + softirq) / CLOCK_TICKS


@dataclass(frozen=True)
class CpuSample:
    machine: float
    server: float | None
    sink: float | None
    load_generator: float
    database: float | None = None  # the PostgreSQL backends of the target's database

    @classmethod
    def take(cls, server_pid: int, sink_pid: int | None, database: str | None = None) -> CpuSample:
        return cls(
            machine_busy_seconds(),
            cpu_seconds(server_pid),
            cpu_seconds(sink_pid),
            time.process_time(),
            database_cpu_seconds(database),
        )


@dataclass
class CpuUse:
    """Cores used on average during the counted window, by whom."""

    server: float | None
    load_generator: float
    sink: float | None
    others: float  # every other process (PostgreSQL's other processes included), and the kernel on their behalf
    database: float | None = None  # the PostgreSQL backends serving the target's database

    @classmethod
    def between(cls, before: CpuSample, after: CpuSample, seconds: float) -> CpuUse:
        def delta(a: float | None, b: float | None) -> float | None:
            return (b - a) / seconds if a is not None and b is not None else None

        server, sink = delta(before.server, after.server), delta(before.sink, after.sink)
        database = delta(before.database, after.database)
        load_generator = (after.load_generator - before.load_generator) / seconds
        machine = (after.machine - before.machine) / seconds
        accounted = (server or 0.0) + (sink or 0.0) + (database or 0.0) + load_generator
        return cls(server, load_generator, sink, max(0.0, machine - accounted), database)


# ---------------------------------------------------------------------------------------------------------
# Processes: start, wait until ready, stop
# ---------------------------------------------------------------------------------------------------------
def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Terminate, then kill if it is still there after ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace)


@contextmanager
def serve(
    name: str, argv: Sequence[str], env: dict[str, str], cwd: Path, base_url: str, ready_path: str, logs: Path
) -> Iterator[Server]:
    """Start a server process, wait until ``GET {base_url}{ready_path}`` answers 200, stop it on the way out."""
    log_path = logs / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60.0
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode} at start-up:\n{tail(log_path)}")
            with suppress(httpx.HTTPError):
                if httpx.get(base_url + ready_path, timeout=2.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after 60 s:\n{tail(log_path)}")
            time.sleep(0.1)
        yield Server(name, process, base_url, log_path)
    finally:
        stop(process)


def uvicorn_argv(app: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--app-dir",
        str(ROOT),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any GATEWAY_* setting of the caller's, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    env.update(extra)
    return env


def gateway_command() -> str:
    beside = Path(sys.executable).parent / "gateway"
    found = str(beside) if beside.exists() else shutil.which("gateway")
    if found is None:
        raise RuntimeError("the `gateway` command is not installed (pip install -e . in the venv)")
    return found


def loopback_routing(directory: Path, sink_endpoint: str) -> Path:
    """The example routing file with every platform's endpoint on the loopback sink (no delivery leaves the
    machine); its territories file copied beside it."""
    directory.mkdir()
    text = (ROUTING_DIR / "routing.toml").read_text(encoding="utf-8")
    text = re.sub(r'(?m)^(endpoint\s*=\s*)"[^"]*"', lambda m: f'{m.group(1)}"{sink_endpoint}"', text)
    (directory / "routing.toml").write_text(text, encoding="utf-8")
    for csv in ROUTING_DIR.glob("*.csv"):
        shutil.copy(csv, directory / csv.name)
    return directory / "routing.toml"


# ---------------------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------------------
async def _pg_execute(statement: str | None) -> None:
    import asyncpg

    connection = await asyncpg.connect(
        host=POSTGRES_HOST, port=POSTGRES_PORT, user=POSTGRES_USER, database="postgres", timeout=5
    )
    try:
        if statement:
            await connection.execute(statement)
    finally:
        await connection.close()


def postgres_error() -> str | None:
    """None when PostgreSQL answers on 127.0.0.1:5432, else why not."""
    try:
        asyncio.run(_pg_execute(None))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database, dropped on the way out; yields its postgresql:// URL."""
    name = f"bench_{secrets.token_hex(6)}"
    asyncio.run(_pg_execute(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    finally:
        asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# ---------------------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Load:
    # Closed loop: sent in the counted window and answered before it ended. Open loop (--rate): scheduled in the
    # counted window, answered whenever (the run waits for them).
    requests: int = 0
    ok: int = 0  # 2xx answers received in the counted window (what ref/s counts)
    latencies_ms: list[float] = field(default_factory=list)  # of the 2xx answers to ``requests``
    behind_ms: float = 0.0  # open loop: how late the load generator started a request, at worst
    sent: int = 0  # all requests, warm-up and tail included
    non_2xx: int = 0  # over all requests (warm-up and tail included), transport errors counted too
    first_error: str | None = None
    cpu: CpuUse | None = None  # during the counted window
    server_cpu_s: float | None = None  # the server's CPU seconds during the counted window
    database_cpu_s: float | None = None  # the PostgreSQL backends' CPU seconds during the counted window
    delivered: int | None = None  # messages the loopback platform received during the counted window


async def generate_load(
    url: str,
    referrals: Referrals,
    next_index: Iterator[int],
    clients: int,
    warmup: float,
    seconds: float,
    pid: int,
    sink: Server | None,
    authorization: dict[str, str] | None = None,
    rate: float | None = None,
    database: str | None = None,
) -> Load:
    """Closed loop (``rate`` None): ``clients`` clients, each posting its next referral once answered. Open loop:
    ``rate`` referrals/s, each started on its schedule over up to ``clients`` connections; a request waiting for
    a connection, or started late by a busy load generator, is timed from its scheduled start all the same."""
    result = Load()
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON} | (authorization or {})
    # Idle connections expire here before uvicorn closes them (its keep-alive timeout is 5 s, httpx's default too):
    # a request sent on a connection the server is closing fails with a ReadError that is the bench's, not the
    # server's. (Closed-loop connections are never idle; open-loop ones may be.)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0)
    start = time.perf_counter()
    window_start, window_end = start + warmup, start + warmup + seconds

    async def post(http: httpx.AsyncClient, scheduled: float) -> None:
        """One referral; ``scheduled`` is when it was due (its latency counts from then)."""
        body = referrals.body(next(next_index))
        error: str | None = None
        try:
            response = await http.post(url, content=body, headers=headers)
            if not 200 <= response.status_code <= 299:
                error = f"HTTP {response.status_code}: {response.text}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        answered = time.perf_counter()
        result.sent += 1
        if error is not None:
            result.non_2xx += 1
            result.first_error = result.first_error or error
        in_window = window_start <= scheduled < window_end
        if rate is None:  # closed loop: what was sent and answered within the window
            if in_window and answered <= window_end:
                result.requests += 1
                if error is None:
                    result.ok += 1
                    result.latencies_ms.append((answered - scheduled) * 1000.0)
            return
        if error is None and window_start <= answered <= window_end:
            result.ok += 1  # throughput: the answers the window saw, whenever they were due
        if in_window:
            result.requests += 1
            if error is None:
                result.latencies_ms.append((answered - scheduled) * 1000.0)

    async def client(http: httpx.AsyncClient) -> None:
        while time.perf_counter() < window_end:
            await post(http, time.perf_counter())

    async def scheduler(http: httpx.AsyncClient, per_second: float) -> None:
        # Requests due while every connection is busy wait here, not in httpx's pool: its queue of waiting
        # requests is walked at every release, and with a backlog of hundreds the load generator would burn the
        # CPU the server needs. Their latency still counts from when they were due.
        connections = asyncio.Semaphore(clients)

        async def post_when_a_connection_is_free(due: float) -> None:
            async with connections:
                await post(http, due)

        in_flight: set[asyncio.Task[None]] = set()
        for n in itertools.count():
            due = start + n / per_second
            if due >= window_end:
                break
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            else:
                result.behind_ms = max(result.behind_ms, (now - due) * 1000.0)
            task = asyncio.create_task(post_when_a_connection_is_free(due))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)  # the window's last requests are timed to their answers too

    sink_pid = sink.pid if sink else None

    async def delivered(http: httpx.AsyncClient) -> int | None:
        if sink is None:
            return None
        count: int = (await http.get(f"{sink.base_url}/count")).json()["count"]
        return count

    async def cpu_meter(http: httpx.AsyncClient) -> None:
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        before, delivered_before = CpuSample.take(pid, sink_pid, database), await delivered(http)
        await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
        after, delivered_after = CpuSample.take(pid, sink_pid, database), await delivered(http)
        result.cpu = CpuUse.between(before, after, seconds)
        if before.server is not None and after.server is not None:
            result.server_cpu_s = after.server - before.server
        if before.database is not None and after.database is not None:
            result.database_cpu_s = after.database - before.database
        if delivered_before is not None and delivered_after is not None:
            result.delivered = delivered_after - delivered_before

    async with (
        httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0)) as http,
        httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as meter_http,  # not queued behind the load's connections
    ):
        load = [scheduler(http, rate)] if rate is not None else [client(http) for _ in range(clients)]
        await asyncio.gather(cpu_meter(meter_http), *load)
    return result


@dataclass
class Drain:
    """What the gateway's worker did after the load stopped, until every stored referral was delivered."""

    deliveries: int
    seconds: float
    server_cpu_s: float
    complete: bool  # False: the timeout came first
    database_cpu_s: float | None = None  # the PostgreSQL backends of the target's database, meanwhile

    @property
    def cpu_ms_per_delivery(self) -> float | None:
        return self.server_cpu_s * 1000.0 / self.deliveries if self.deliveries else None

    @property
    def database_cpu_ms_per_delivery(self) -> float | None:
        if self.database_cpu_s is None or not self.deliveries:
            return None
        return self.database_cpu_s * 1000.0 / self.deliveries


def drain_deliveries(server: Server, sink: Server, expected: int, timeout: float, database: str | None = None) -> Drain:
    """Wait (up to ``timeout``) until the loopback platform has received ``expected`` messages in all, measuring
    the server's CPU (and its PostgreSQL backends') meanwhile: with no intake running, that is the cost of
    delivering alone."""
    started, cpu_before, count_before = time.perf_counter(), cpu_seconds(server.pid), sink_count(sink)
    database_before = database_cpu_seconds(database)
    count = count_before
    while count < expected and time.perf_counter() - started < timeout:
        time.sleep(0.2)
        count = sink_count(sink)
    cpu_after, database_after = cpu_seconds(server.pid), database_cpu_seconds(database)
    spent = (cpu_after - cpu_before) if cpu_before is not None and cpu_after is not None else 0.0
    database_spent = (
        database_after - database_before if database_before is not None and database_after is not None else None
    )
    return Drain(count - count_before, time.perf_counter() - started, spent, count >= expected, database_spent)


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when there are none: nothing was answered)."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


# ---------------------------------------------------------------------------------------------------------
# One target
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Figures:
    target: str
    requests: int
    referrals_per_s: float
    p50_ms: float | None  # None: no 2xx answer to time
    p95_ms: float | None
    p99_ms: float | None
    non_2xx: int
    peak_rss_mb: float | None
    server_cpu_ms_per_referral: float | None
    sent: int  # warm-up and tail included
    stored: int | None  # referrals the target holds afterwards (should be every 2xx)
    deliveries: int | None  # messages the gateway delivered to the loopback platform during the run
    cpu: CpuUse | None  # cores used during the counted window
    first_error: str | None
    window_ok: int = 0  # referrals answered 2xx in the counted window
    window_server_cpu_s: float | None = None  # the server's CPU seconds in the counted window
    delivered_in_window: int | None = None  # deliveries the loopback platform received in the counted window
    drain: Drain | None = None  # the worker alone, after the load, until every referral was delivered
    window_database_cpu_s: float | None = None  # the PostgreSQL backends' CPU seconds in the counted window
    offered_rate: float | None = None  # open loop: referrals/s offered
    behind_ms: float | None = None  # open loop: how late the load generator started a request, at worst

    @property
    def database_cpu_ms_per_referral(self) -> float | None:
        """The PostgreSQL backends' CPU in the counted window (the worker's deliveries included) per referral."""
        if self.window_database_cpu_s is None or not self.window_ok:
            return None
        return self.window_database_cpu_s * 1000.0 / self.window_ok

    @property
    def database_end_to_end_cpu_ms_per_referral(self) -> float | None:
        """As ``end_to_end_cpu_ms_per_referral``, for the PostgreSQL backends: the window's CPU less the
        deliveries made in it, per referral, plus one delivery's (measured during the drain)."""
        per_delivery = self.drain.database_cpu_ms_per_delivery if self.drain else None
        if self.window_database_cpu_s is None or per_delivery is None or not self.window_ok:
            return None
        delivering = per_delivery * (self.delivered_in_window or 0)
        return max(0.0, self.window_database_cpu_s * 1000.0 - delivering) / self.window_ok + per_delivery

    @property
    def delivery_cpu_ms(self) -> float | None:
        """Server CPU per delivery, measured while the worker delivered alone (the drain)."""
        return self.drain.cpu_ms_per_delivery if self.drain else None

    @property
    def intake_cpu_ms_per_referral(self) -> float | None:
        """The window's server CPU less the deliveries made in it (each at ``delivery_cpu_ms``), per referral
        answered: what taking a referral in costs."""
        if self.window_server_cpu_s is None or not self.window_ok:
            return None
        delivering = (self.delivery_cpu_ms or 0.0) * (self.delivered_in_window or 0)
        return max(0.0, self.window_server_cpu_s * 1000.0 - delivering) / self.window_ok

    @property
    def end_to_end_cpu_ms_per_referral(self) -> float | None:
        """Taking a referral in and delivering it: what the server spends per referral once it keeps up."""
        intake, delivery = self.intake_cpu_ms_per_referral, self.delivery_cpu_ms
        return intake + delivery if intake is not None and delivery is not None else None


def sink_count(sink: Server) -> int:
    count: int = httpx.get(f"{sink.base_url}/count", timeout=10.0).json()["count"]
    return count


def stored_count(server: Server, authorization: dict[str, str] | None = None) -> int | None:
    """How many referrals the target stored: the floor's rows, the gateway's ServiceRequests."""
    try:
        if server.name == "floor":
            floor_count: int = httpx.get(f"{server.base_url}/count", timeout=30.0).json()["count"]
            return floor_count
        answer = httpx.get(
            f"{server.base_url}/fhir/ServiceRequest",
            params={"_summary": "count"},
            headers=authorization or {},
            timeout=30.0,
        )
        total: int = answer.json()["total"]
        return total
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def measure(
    server: Server,
    referrals: Referrals,
    args: argparse.Namespace,
    sink: Server | None,
    authorization: dict[str, str] | None = None,
    database: str | None = None,
) -> Figures:
    load_shape = f"{args.rate:g} referrals/s offered" if args.rate else f"{args.clients} clients"
    log(f"{server.name}: {load_shape}, {args.warmup:g} s warm-up + {args.seconds:g} s counted …")
    delivered_before = sink_count(sink) if sink else 0
    load = asyncio.run(
        generate_load(
            f"{server.base_url}/fhir",
            referrals,
            itertools.count(),
            args.clients,
            args.warmup,
            args.seconds,
            server.pid,
            sink,
            authorization,
            args.rate,
            database,
        )
    )
    peak_kb = peak_rss_kb(server.pid)
    stored = stored_count(server, authorization)
    drain = None
    if sink is not None and stored is not None and args.drain > 0:
        log(f"{server.name}: waiting (up to {args.drain:g} s) until the {stored} referrals are delivered …")
        drain = drain_deliveries(server, sink, delivered_before + stored, args.drain, database)
    deliveries = sink_count(sink) - delivered_before if sink else None
    server_cpu = load.cpu.server if load.cpu else None
    latencies = sorted(load.latencies_ms)
    return Figures(
        target=server.name,
        requests=load.requests,
        referrals_per_s=load.ok / args.seconds,
        p50_ms=percentile(latencies, 0.50),
        p95_ms=percentile(latencies, 0.95),
        p99_ms=percentile(latencies, 0.99),
        non_2xx=load.non_2xx,
        peak_rss_mb=peak_kb / 1024.0 if peak_kb is not None else None,
        server_cpu_ms_per_referral=server_cpu * args.seconds * 1000.0 / load.ok if server_cpu and load.ok else None,
        sent=load.sent,
        stored=stored,
        deliveries=deliveries,
        cpu=load.cpu,
        first_error=load.first_error,
        window_ok=load.ok,
        window_server_cpu_s=load.server_cpu_s,
        delivered_in_window=load.delivered,
        drain=drain,
        window_database_cpu_s=load.database_cpu_s,
        offered_rate=args.rate,
        behind_ms=load.behind_ms if args.rate else None,
    )


def run_floor(referrals: Referrals, args: argparse.Namespace, work: Path) -> Figures:
    port = free_port()
    env = clean_env(FLOOR_DATABASE=str(work / "floor.db"))
    with serve("floor", uvicorn_argv(FLOOR_APP, port), env, work, f"http://127.0.0.1:{port}", "/count", work) as floor:
        return measure(floor, referrals, args, None)


def run_gateway(
    backend: str,
    database_url: str,
    referrals: Referrals,
    args: argparse.Namespace,
    work: Path,
    routing: Path,
    sink: Server,
    processes: int = 1,
) -> Figures:
    env = clean_env(
        GATEWAY_DATABASE_URL=database_url, GATEWAY_LOG_LEVEL="WARNING", GATEWAY_ROUTING=str(routing), GATEWAY_AUTH="off"
    )
    client = BenchClient(work / "auth") if args.auth else None
    if client is not None:
        env |= client.environment()
    if backend == "postgresql":
        upgrade = subprocess.run(
            [gateway_command(), "db", "upgrade"], env=env, cwd=work, capture_output=True, text=True, check=False
        )
        if upgrade.returncode != 0:
            raise RuntimeError(f"gateway db upgrade failed ({upgrade.returncode}):\n{upgrade.stdout}{upgrade.stderr}")
    port = free_port()
    argv = [gateway_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(processes)]
    # The same name with --auth, so the ratios to the floor are printed alike; "-2p" for two API processes.
    name = f"gateway-{backend}" + (f"-{processes}p" if processes > 1 else "")
    database = database_url.rsplit("/", 1)[-1] if backend == "postgresql" else None
    with serve(name, argv, env, work, f"http://127.0.0.1:{port}", "/fhir/metadata", work) as server:
        authorization = client.authorization(server.base_url) if client else None
        return measure(server, referrals, args, sink, authorization, database)


class BenchClient:
    """One registered client (role sender) with an ES384 key made for this run."""

    CLIENT_ID = "bench"

    def __init__(self, directory: Path) -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import ec

        self._key = ec.generate_private_key(ec.SECP384R1())
        directory.mkdir(parents=True, exist_ok=True)
        public = jwt.algorithms.ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True) | {"kid": "bench"}
        (directory / "bench.jwks.json").write_text(json.dumps({"keys": [public]}))
        self.clients = directory / "clients.toml"
        self.clients.write_text(
            '[[clients]]\nclient_id = "bench"\nrole = "sender"\n'
            'scopes = ["system/ServiceRequest.cs"]\njwks_file = "bench.jwks.json"\n'
        )

    def environment(self) -> dict[str, str]:
        return {
            "GATEWAY_AUTH": "on",
            "GATEWAY_CLIENTS": str(self.clients),
            "GATEWAY_AUTH_SECRET": secrets.token_urlsafe(48),
            "GATEWAY_ACCESS_TOKEN_LIFETIME": "3600",  # one token for the whole run
        }

    def authorization(self, base_url: str) -> dict[str, str]:
        import jwt

        token_url = f"{base_url}/auth/token"
        now = int(time.time())
        claims = {"iss": "bench", "sub": "bench", "aud": token_url, "exp": now + 240, "jti": uuid.uuid4().hex}
        assertion = jwt.encode(claims, self._key, algorithm="ES384", headers={"kid": "bench"})
        form = {
            "grant_type": "client_credentials",
            "scope": "system/ServiceRequest.cs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        }
        answer = httpx.post(token_url, data=form, timeout=30.0)
        answer.raise_for_status()
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------
def optional(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "—".rjust(len(format(0.0, spec)))


def print_report(figures: list[Figures], notes: list[str], args: argparse.Namespace) -> dict[str, Any]:
    load_shape = (
        f"{args.rate:g} referrals/s offered (open loop, at most {args.clients} connections)"
        if args.rate
        else f"{args.clients} clients"
    )
    print(
        f"\nReferral intake ({TEMPLATE.name}, a new referral and patient each time): {load_shape}, "
        f"{args.seconds:g} s counted after {args.warmup:g} s warm-up"
    )
    header = (
        f"{'target':<20}{'requests':>9}{'ref/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'non-2xx':>9}"
        f"{'peak RSS MB':>13}{'CPU ms/ref':>12}{'PG ms/ref':>11}"
    )
    print(header)
    print("-" * len(header))
    for f in figures:
        print(
            f"{f.target:<20}{f.requests:>9}{f.referrals_per_s:>9.1f}{optional(f.p50_ms, '9.1f')}"
            f"{optional(f.p95_ms, '9.1f')}{optional(f.p99_ms, '9.1f')}{f.non_2xx:>9}"
            f"{optional(f.peak_rss_mb, '13.1f')}{optional(f.server_cpu_ms_per_referral, '12.2f')}"
            f"{optional(f.database_cpu_ms_per_referral, '11.2f')}"
        )
    for f in figures:
        details = [f"{f.sent} sent in all, {f.stored if f.stored is not None else '?'} stored"]
        if f.stored is not None and f.stored != f.sent - f.non_2xx:
            details.append(f"MISMATCH: {f.sent - f.non_2xx} were answered 2xx")
        if f.deliveries is not None:
            details.append(f"{f.deliveries} delivered to the loopback platform during the run")
        if f.cpu is not None:
            used = [f"server {optional(f.cpu.server, '.2f')}", f"load generator {f.cpu.load_generator:.2f}"]
            if f.cpu.sink is not None:
                used.append(f"loopback platform {f.cpu.sink:.2f}")
            if f.cpu.database is not None:
                used.append(f"PostgreSQL backends {f.cpu.database:.2f}")
            used.append(f"other processes {f.cpu.others:.2f}")
            details.append(f"cores used in the window (of {os.cpu_count()}): " + ", ".join(used))
        if f.offered_rate is not None:
            details.append(
                f"offered {f.offered_rate:g}/s, achieved {f.referrals_per_s:.1f}/s; load generator at worst "
                f"{optional(f.behind_ms, '.1f')} ms behind its schedule"
            )
        print(f"  {f.target}: " + "; ".join(details))
        if f.drain is not None:
            print(
                f"  {f.target}: server CPU split: delivering {optional(f.delivery_cpu_ms, '.2f')} ms/delivery "
                f"(the worker alone after the load: {f.drain.deliveries} delivered in {f.drain.seconds:.1f} s"
                f"{'' if f.drain.complete else ', NOT all: timeout'}); {f.delivered_in_window} of the window's "
                f"referrals delivered within it; taking in {optional(f.intake_cpu_ms_per_referral, '.2f')} ms/ref "
                f"(the window's CPU less those deliveries) -> end to end "
                f"{optional(f.end_to_end_cpu_ms_per_referral, '.2f')} ms/ref"
            )
            if f.drain.database_cpu_s is not None:
                print(
                    f"  {f.target}: PostgreSQL backends' CPU split alike: delivering "
                    f"{optional(f.drain.database_cpu_ms_per_delivery, '.2f')} ms/delivery -> end to end "
                    f"{optional(f.database_end_to_end_cpu_ms_per_referral, '.2f')} ms/ref"
                )
        if f.first_error:
            print(f"  {f.target}: first error: {f.first_error[:4000]}")
    for note in notes:
        print(f"  note: {note}")

    by_target = {f.target: f for f in figures}
    floor = by_target.get("floor")
    ratios: dict[str, float | None] = {}
    print()
    for backend in BACKENDS:
        gateway = by_target.get(f"gateway-{backend}")
        if floor is None or gateway is None:
            continue
        # With --rate both are capped at the rate offered: the ratio by ref/s says little then, the one by CPU does.
        ratio = gateway.referrals_per_s / floor.referrals_per_s if floor.referrals_per_s else None
        ratios[backend] = ratio
        floor_cpu, gateway_cpu = floor.server_cpu_ms_per_referral, gateway.end_to_end_cpu_ms_per_referral
        cpu_ratio = floor_cpu / gateway_cpu if floor_cpu and gateway_cpu else None
        print(
            f"ratio gateway-{backend} / floor: {optional(ratio, '.2f')} (ref/s); by server CPU per referral, "
            f"delivery included: {optional(cpu_ratio, '.2f')}"
        )

    one, several = by_target.get("gateway-postgresql"), by_target.get(f"gateway-postgresql-{args.api_processes}p")
    scaling = None
    if one is not None and several is not None and one.referrals_per_s:
        scaling = several.referrals_per_s / one.referrals_per_s
        print(f"scaling gateway-postgresql, {args.api_processes} API processes / 1: {scaling:.2f}")

    checks: dict[str, bool] = {}
    if scaling is not None and args.api_processes == 2:
        checks[f"postgresql: 2 API processes >= {MIN_SCALING_2P} x one"] = scaling >= MIN_SCALING_2P
    if "sqlite" in ratios:
        sqlite_ratio = ratios["sqlite"]
        checks[f"sqlite ratio >= {MIN_RATIO_SQLITE}"] = sqlite_ratio is not None and sqlite_ratio >= MIN_RATIO_SQLITE
    for f in figures:
        checks[f"{f.target}: no non-2xx"] = f.non_2xx == 0
        if f.target.startswith("gateway-"):
            checks[f"{f.target}: peak RSS < {MAX_RSS_MB:g} MB"] = (
                f.peak_rss_mb is not None and f.peak_rss_mb < MAX_RSS_MB
            )
    print("targets:")
    for check, held in checks.items():
        print(f"  {'ok  ' if held else 'MISS'}  {check}")
    return {
        "clients": args.clients,
        "rate": args.rate,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "runs": {
            f.target: asdict(f)
            | {
                "delivery_cpu_ms": f.delivery_cpu_ms,
                "intake_cpu_ms_per_referral": f.intake_cpu_ms_per_referral,
                "end_to_end_cpu_ms_per_referral": f.end_to_end_cpu_ms_per_referral,
                "database_cpu_ms_per_referral": f.database_cpu_ms_per_referral,
                "database_end_to_end_cpu_ms_per_referral": f.database_end_to_end_cpu_ms_per_referral,
            }
            for f in figures
        },
        "ratios": ratios,
        "checks": checks,
        "all_targets_met": all(checks.values()),
        "notes": notes,
    }


# ---------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="counted duration per target (default 15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up per target, not counted (default 2)")
    parser.add_argument(
        "--clients",
        type=int,
        default=None,
        help="concurrent clients (default 8); with --rate, the most connections open at once (default 64)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="offer this many referrals/s, open loop (each started on schedule, timed from it) instead of "
        "--clients closed-loop clients",
    )
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="gateway backends to measure beside the floor, comma-separated (default sqlite,postgresql)",
    )
    parser.add_argument(
        "--pool-rate",
        type=float,
        default=1000.0,
        help="referrals/s the pre-generated body pool is sized for (beyond it, bodies are made on the fly)",
    )
    parser.add_argument("--auth", action="store_true", help="gateways with authentication on (SMART Backend Services)")
    parser.add_argument(
        "--drain",
        type=float,
        default=120.0,
        help="after the load, wait up to this many seconds for every referral to be delivered, measuring the "
        "server's CPU per delivery (0: do not wait; default 120)",
    )
    parser.add_argument(
        "--api-processes",
        type=int,
        default=1,
        help="also measure PostgreSQL with this many API processes (gateway serve --workers N) and print the scaling",
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON object at the end")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    args = parser.parse_args(argv)
    args.backend_list = [b.strip() for b in str(args.backends).split(",") if b.strip()]
    unknown = set(args.backend_list) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))} (choose among {', '.join(BACKENDS)})")
    if args.clients is None:
        args.clients = OPEN_LOOP_CONNECTIONS if args.rate is not None else CLOSED_LOOP_CLIENTS
    if args.seconds <= 0 or args.warmup < 0 or args.clients < 1:
        parser.error("--seconds must be > 0, --warmup >= 0, --clients >= 1")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be > 0")
    return args


def exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: servers stopped, database dropped


def run_targets(referrals: Referrals, args: argparse.Namespace, work: Path, notes: list[str]) -> list[Figures]:
    figures = [run_floor(referrals, args, work)]
    if not args.backend_list:
        return figures
    sink_port = free_port()
    sink_url = f"http://127.0.0.1:{sink_port}"
    with serve("sink", uvicorn_argv(SINK_APP, sink_port), clean_env(), work, sink_url, "/count", work) as sink:
        routing = loopback_routing(work / "routing", f"{sink_url}/fhir")
        for backend in args.backend_list:
            if backend == "sqlite":
                url = f"sqlite:///{work / 'gateway.db'}"
                figures.append(run_gateway("sqlite", url, referrals, args, work, routing, sink))
            elif (why := postgres_error()) is not None:
                notes.append(f"PostgreSQL skipped: not reachable on {POSTGRES_HOST}:{POSTGRES_PORT} ({why})")
                log(notes[-1])
            else:
                with postgres_database() as url:
                    figures.append(run_gateway("postgresql", url, referrals, args, work, routing, sink))
                if args.api_processes > 1:  # the same load on N API processes sharing a fresh database
                    with postgres_database() as url:
                        figures.append(
                            run_gateway(
                                "postgresql", url, referrals, args, work, routing, sink, processes=args.api_processes
                            )
                        )
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (nohup, &)
    pool_size = math.ceil((args.seconds + args.warmup) * (args.rate or args.pool_rate)) + args.clients
    log(f"pre-generating {pool_size} referral bodies from {TEMPLATE.name} …")
    referrals = Referrals(TEMPLATE, pool_size)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dac-bench-") as tmp:
        figures = run_targets(referrals, args, Path(tmp), notes)
    if referrals.generated_late:
        notes.append(f"{referrals.generated_late} bodies were made during the load (pool too small: --pool-rate)")
    report = print_report(figures, notes, args)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    return 1 if args.strict and not report["all_targets_met"] else 0


if __name__ == "__main__":
    sys.exit(main())

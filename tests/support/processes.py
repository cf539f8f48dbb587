"""Real processes on loopback for end-to-end tests: ``gateway serve`` (or ``gateway worker``) with a database
and a routing file of its own, and a programmable loopback DAC platform that records what it receives."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.databases import CONFIGURED_URL, drop_scratch_database, scratch_database_url
from tests.support.fhir_validators import EMITTED, RECEIVED

GATEWAY = [sys.executable, "-m", "gateway"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Any, timeout: float = 20.0, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Platform:
    """A DAC platform's FHIR endpoint on loopback: answers each $process-message from ``script`` (a status, or
    (status, seconds to wait first)), then ``default``; keeps every message received.

    With ``relay_to`` (a peer gateway's FHIR base) it stands between two gateways instead: it keeps each message and
    passes it on, answering with the peer's answer — so the messages gateways forward to each other are seen (and
    checked by the independent validators) too."""

    port: int = field(default_factory=free_port)
    script: list[int | tuple[int, float]] = field(default_factory=list)
    default: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    relay_to: str | None = None
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    async def _process_message(self, request: Request) -> Response:
        raw = await request.body()
        EMITTED.record(f"{RECEIVED}{self.endpoint}/$process-message", raw, request.headers.get("content-type", ""))
        body = json.loads(raw)
        self.received.append(body)
        self.headers.append(dict(request.headers))
        if self.relay_to is not None:
            passed_on = {k: v for k, v in request.headers.items() if k in ("content-type", "accept", "authorization")}
            async with httpx.AsyncClient(timeout=30) as client:
                answer = await client.post(f"{self.relay_to}/$process-message", content=raw, headers=passed_on)
            return Response(answer.content, answer.status_code, media_type=answer.headers.get("content-type"))
        step = self.script.pop(0) if self.script else self.default
        status, delay = step if isinstance(step, tuple) else (step, 0.0)
        if delay:
            import asyncio

            await asyncio.sleep(delay)
        header = body["entry"][0]["resource"]
        return JSONResponse(
            {"resourceType": "Bundle", "type": "message", "entry": [{"resource": {"resourceType": "MessageHeader",
             "eventCoding": header["eventCoding"], "source": {"endpoint": self.endpoint},
             "response": {"identifier": header["id"], "code": "ok" if status < 300 else "fatal-error"}}}]},
            status_code=status,
            media_type="application/fhir+json",
        )  # fmt: skip

    def message_ids(self, event: str = "referral-request") -> list[str]:
        return [
            m["entry"][0]["resource"]["id"]
            for m in list(self.received)
            if m["entry"][0]["resource"]["eventCoding"]["code"] == event
        ]

    def start(self) -> Platform:
        app = Starlette(routes=[Route("/fhir/$process-message", self._process_message, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_until(lambda: self._server is not None and self._server.started, 10, what="loopback platform")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


def write_routing(directory: Path, platforms: dict[str, dict[str, str]], territories: dict[str, str]) -> Path:
    """A routing file: platforms as {key: {endpoint, kind, policy, gp_validation_delay, finess[, auth]}}."""
    lines = ['territories = "territories.csv"']
    for key, spec in platforms.items():
        lines += [
            f"[platforms.{key}]",
            f'name = "{spec.get("name", key)}"',
            f'endpoint = "{spec["endpoint"]}"',
            f'kind = "{spec.get("kind", "platform")}"',
            f'policy = "{spec.get("policy", "dac-2022")}"',
            f'gp_validation_delay = "{spec.get("gp_validation_delay", "P7D")}"',
            f'organization = {{ system = "https://finess.esante.gouv.fr", value = "{spec["finess"]}" }}',
        ]
        if "auth" in spec:  # an inline table, as TOML text
            lines.append(f"auth = {spec['auth']}")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "routing.toml").write_text("\n".join(lines) + "\n")
    (directory / "territories.csv").write_text(
        "code,platform\n" + "".join(f"{code},{key}\n" for code, key in territories.items())
    )
    return directory / "routing.toml"


@dataclass
class GatewayProcess:
    directory: Path
    routing: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    database_url: str = ""
    backend: str = CONFIGURED_URL  # where to make its database: a PostgreSQL URL, else SQLite
    workers: int = 1  # API processes (`gateway serve --workers`)
    host: str = "127.0.0.1"  # `gateway serve --host` (clients still reach it on 127.0.0.1)
    serve_args: tuple[str, ...] = ()  # more options of `gateway serve` (--mllp-port N)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    @property
    def log_path(self) -> Path:
        return self.directory / f"gateway-{self.port}.log"

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
        env |= {
            "GATEWAY_DATABASE_URL": self.database_url,
            "GATEWAY_ROUTING": str(self.routing),
            "GATEWAY_AUTH": "off",  # the tests of authentication turn it on through ``env``
            "GATEWAY_SCHEDULER_INTERVAL": "0.3",
            "GATEWAY_DELIVERY_POLL_INTERVAL": "0.1",
            "GATEWAY_DELIVERY_BACKOFF_BASE": "0.2",
            "GATEWAY_DELIVERY_BACKOFF_CAP": "1",
            "GATEWAY_DELIVERY_LEASE": "3",
            "GATEWAY_DELIVERY_TIMEOUT": "10",
        }
        return env | self.env

    def start(self) -> GatewayProcess:
        if not self.database_url:
            self.database_url = scratch_database_url(self.directory, self.backend)
            if self.database_url.startswith("postgresql"):
                subprocess.run([*GATEWAY, "db", "upgrade"], env=self.environment(), check=True, capture_output=True)
        log = self.log_path.open("ab")
        command = [*GATEWAY, "serve", "--host", self.host, "--port", str(self.port), "--workers", str(self.workers)]
        command.extend(self.serve_args)
        self.process = subprocess.Popen(
            command,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"gateway exited ({self.process.returncode}):\n{self.log_path.read_text()[-3000:]}"
                )
            try:
                return httpx.get(f"{self.base}/metadata", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 60, 0.1, "gateway start-up")  # a loaded CI machine: start-up compiles the profiles
        return self

    def kill(self) -> None:
        """kill -9: no shutdown, no cleanup — what a crash looks like."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*GATEWAY, *args], env=self.environment(), capture_output=True, text=True, timeout=60)

    def drop(self) -> None:
        self.stop()
        drop_scratch_database(self.database_url)


@contextmanager
def running(*things: Platform | GatewayProcess) -> Iterator[None]:
    try:
        for thing in things:
            thing.start()
        yield
    finally:
        for thing in reversed(things):
            thing.drop() if isinstance(thing, GatewayProcess) else thing.stop()

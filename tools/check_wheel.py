#!/usr/bin/env python3
"""Install the gateway as a user would (DESIGN §15): build the wheel, install it into a fresh virtual environment
outside the repository, run ``gateway serve`` in an empty directory, and check that it validates — a valid example
referral taken in (its ServiceRequest 201 Created), invalid ones refused (422) — on SQLite and, with --postgres, on
PostgreSQL; that it serves its conformance resources and /package.tgz; and that it refuses to start when its
definitions are missing. One line per check; exit 1 on the first failure.

    .venv/bin/python tools/check_wheel.py [--postgres postgresql://postgres@127.0.0.1:5432/test]

Only the standard library; pip finds setuptools and the dependencies where it is configured to (no network needed
when its find-links or index serve them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
#: What the wheel is built from: the project, and the data its package links to (gateway/_data/).
SOURCES = ("pyproject.toml", "README.md", "gateway", "profiles", "mappings", "examples")
VALID = ROOT / "examples" / "referral-gp.json"
HL7V2 = ROOT / "examples" / "hl7v2" / "ref-i12-discharge.hl7"
CDA = ROOT / "examples" / "cda" / "lettre-de-liaison-nurse.xml"
#: What a gateway without its profiles took in with a 201 (issue 15): each must be a 422 with this dac-issue code.
INVALID = {"wrong-mission-code.json": "mission-invalid", "intent-plan.json": "fixed-value-mismatch"}
STARTUP_SECONDS = 60
WHEELHOUSE = ROOT / "build" / "wheelhouse"


class CheckFailed(Exception):
    pass


def check(ok: bool, what: str, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}{f' — {detail}' if detail and not ok else ''}", flush=True)
    if not ok:
        raise CheckFailed(what)


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)


def build_wheel(work: Path) -> Path:
    source = work / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", "*.egg-info")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    started = time.monotonic()
    # setuptools (the build backend, pyproject.toml) from build/wheelhouse/ too once it is there: no index needed.
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work / "dist"), str(source)]
    result = run([*build, "--no-index", "--find-links", str(WHEELHOUSE)])
    if result.returncode != 0:
        run([sys.executable, "-m", "pip", "download", "-q", "-d", str(WHEELHOUSE), "setuptools>=69"])
        result = run(build)
    wheels = sorted((work / "dist").glob("dac_gateway-*.whl"))
    check(result.returncode == 0 and len(wheels) == 1, "wheel built", result.stderr[-2000:])
    print(f"     {wheels[0].name} in {time.monotonic() - started:.0f} s", flush=True)
    return wheels[0]


def install(work: Path, wheel: Path) -> Path:
    """Into a fresh venv; its dependencies as wheels from build/wheelhouse/ (kept between runs, filled by pip from
    where it is configured to look when a dependency is missing), so a second run needs no index."""
    venv = work / "venv"
    started = time.monotonic()
    result = run([sys.executable, "-m", "venv", str(venv)])
    check(result.returncode == 0, "fresh virtual environment", result.stderr)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "--no-compile"]
    offline = [*pip, "--no-index", "--find-links", str(WHEELHOUSE), str(wheel)]
    result = run(offline)
    if result.returncode != 0:
        print("     dependencies into build/wheelhouse/ (pip download; once)", flush=True)
        download = run([sys.executable, "-m", "pip", "download", "-q", "-d", str(WHEELHOUSE), str(wheel)])
        check(download.returncode == 0, "dependencies downloaded", download.stderr[-2000:])
        result = run(offline)
    check(result.returncode == 0, "wheel installed into it", result.stderr[-2000:])
    site = run([str(venv / "bin" / "python"), "-c", "import gateway; print(gateway.__file__)"], cwd=work)
    check(site.stdout.startswith(str(venv)), "gateway imported from the installed wheel", site.stdout + site.stderr)
    print(f"     installed in {time.monotonic() - started:.0f} s", flush=True)
    return venv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(
    method: str, url: str, body: bytes | None = None, content_type: str = "application/fhir+json"
) -> tuple[int, bytes]:
    headers = {"content-type": content_type, "accept": "application/fhir+json"} if body else {}
    call = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(call, timeout=30) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


def wait_ready(process: subprocess.Popen[str], base: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            check(False, "gateway serve started", f"exit {process.returncode}: {output[-2000:]}")
        try:
            if request("GET", f"{base}/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    check(False, "gateway serve started", f"not ready after {STARTUP_SECONDS} s")


def service_request_status(answer: dict[str, Any]) -> str:
    for entry in answer.get("entry") or []:
        if "/ServiceRequest/" in str(entry.get("fullUrl", "")) or "ServiceRequest/" in str(
            entry.get("response", {}).get("location", "")
        ):
            return str(entry["response"]["status"])
    return ""


def serve_checks(venv: Path, work: Path, label: str, environment: dict[str, str]) -> None:
    empty = Path(tempfile.mkdtemp(prefix=f"run-{label}-", dir=work))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    env |= {"GATEWAY_AUTH": "off", "GATEWAY_LOG_LEVEL": "warning", **environment}
    if "GATEWAY_DATABASE_URL" in environment:
        result = run([str(venv / "bin" / "gateway"), "db", "upgrade"], cwd=empty, env=env)
        check(result.returncode == 0, f"[{label}] gateway db upgrade", result.stderr[-2000:])
    process = subprocess.Popen(
        [str(venv / "bin" / "gateway"), "serve", "--port", str(port)],
        cwd=empty,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_ready(process, base)
        check(True, f"[{label}] gateway serve answers in an empty directory ({empty.name})")
        status, body = request("POST", f"{base}/fhir", VALID.read_bytes())
        created = service_request_status(json.loads(body)) if status == 200 else ""
        check(
            status == 200 and created.startswith("201"),
            f"[{label}] {VALID.name}: ServiceRequest 201 Created",
            f"{status} {body[:500]!r}",
        )
        for name, code in INVALID.items():
            status, body = request("POST", f"{base}/fhir", (ROOT / "examples" / "invalid" / name).read_bytes())
            codes = [
                coding.get("code")
                for issue in (json.loads(body).get("issue") or [])
                for coding in (issue.get("details") or {}).get("coding") or []
            ]
            check(status == 422 and code in codes, f"[{label}] invalid/{name}: 422 {code}", f"{status} {body[:500]!r}")
        # The HL7 v2 and CDA mapping rules (mappings/hl7v2, mappings/cda) travel as package data too.
        status, body = request("POST", f"{base}/hl7v2", HL7V2.read_bytes(), content_type="x-application/hl7-v2+er7")
        check(status == 200 and b"MSA|AA|" in body, f"[{label}] {HL7V2.name}: ACK AA", f"{status} {body[:500]!r}")
        status, body = request("POST", f"{base}/cda", CDA.read_bytes(), content_type="application/hl7-cda+xml")
        check(status == 200, f"[{label}] {CDA.name}: 200", f"{status} {body[:500]!r}")
        url = quote("https://fhir.dac-gateway.org/StructureDefinition/dac-servicerequest", safe="")
        status, body = request("GET", f"{base}/fhir/StructureDefinition?url={url}")
        check(status == 200 and json.loads(body).get("total") == 1, f"[{label}] StructureDefinition?url= found")
        status, body = request("GET", f"{base}/package.tgz")
        check(status == 200 and body[:2] == b"\x1f\x8b", f"[{label}] /package.tgz served ({len(body)} bytes)")
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def missing_definitions_check(venv: Path, work: Path) -> None:
    """The installed profiles taken away: start-up stops, saying so, instead of serving without validation."""
    site = run([str(venv / "bin" / "python"), "-c", "import gateway; print(gateway.__file__)"], cwd=work)
    profile = Path(site.stdout.strip()).parent / "_data" / "profiles" / "StructureDefinition-dac-servicerequest.json"
    profile.rename(profile.with_suffix(".moved"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")} | {"GATEWAY_AUTH": "off"}
    for command in (["validate", str(VALID)], ["serve", "--port", str(free_port())]):
        result = run([str(venv / "bin" / "gateway"), *command], cwd=work, env=env, timeout=60)
        check(
            result.returncode == 2 and "cannot load the FHIR definitions" in result.stderr,
            f"gateway {command[0]} without its profiles: exit 2, 'cannot load the FHIR definitions'",
            f"exit {result.returncode}: {result.stderr[-1000:]}",
        )
    profile.with_suffix(".moved").rename(profile)


def scratch_postgres(url: str) -> tuple[str, list[str]]:
    """A database of its own on the server of url: its URL, and the psql command that administers the server."""
    parts = urlsplit(url)
    name = f"dac_wheel_{uuid.uuid4().hex[:10]}"
    admin = ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432)]
    admin += ["-U", parts.username or "postgres", "-d", "postgres"]
    result = run([*admin, "-c", f'CREATE DATABASE "{name}"'])
    check(result.returncode == 0, f"scratch PostgreSQL database {name}", result.stderr)
    return urlunsplit(parts._replace(path=f"/{name}")), admin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--postgres", help="a PostgreSQL URL whose server gets a scratch database for the check")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    arguments = parser.parse_args()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="dac-wheel-"))
    try:
        venv = install(work, build_wheel(work))
        serve_checks(venv, work, "sqlite", {})
        if arguments.postgres:
            url, admin = scratch_postgres(arguments.postgres)
            try:
                serve_checks(venv, work, "postgresql", {"GATEWAY_DATABASE_URL": url})
            finally:
                run([*admin, "-c", f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" WITH (FORCE)'])
        missing_definitions_check(venv, work)
    except CheckFailed:
        return 1
    finally:
        if not arguments.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"wheel checks passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

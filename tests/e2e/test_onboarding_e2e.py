"""Onboarding from the command line against a real ``gateway serve`` (DESIGN §11), on the backend of the run.

README's "With authentication on" blocks are run as they are, command by command, in a fresh directory holding the
repository's examples — the only change is the port (8080 → a free one) — so README and this test cannot drift.
Then, on a gateway of their own: a client added while serving gets its token within a second; a key file changed
behind a ``jwks_file`` is taken on ``SIGHUP``; a broken clients file keeps the last good registrations; a rotated
key works during its grace period and not after; and ``serve --workers 2`` passes ``SIGHUP`` on to each process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.auth.client_tokens import TokenRequestFailed, request_token
from gateway.auth.keypairs import new_private_key, public_jwk, write_private_key
from tests.support.auth import TEST_SECRET
from tests.support.databases import CONFIGURED_URL, USES_POSTGRESQL, drop_scratch_database, scratch_database_url
from tests.support.processes import GATEWAY, GatewayProcess, free_port, wait_until, write_routing

pytestmark = pytest.mark.e2e
REPOSITORY = Path(__file__).resolve().parents[2]
BIN = str(Path(sys.executable).parent)  # where `gateway` is installed, beside this Python


def readme_blocks() -> list[list[str]]:
    """The shell blocks of README's "With authentication on" section marked for this test, as commands (comment
    lines dropped, continued lines joined)."""
    text = (REPOSITORY / "README.md").read_text()
    section = text.split("## With authentication on\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"<!-- e2e:[^>]*-->\n```sh\n(.*?)```", section, re.S)
    commands = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        commands.append([line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")])
    return commands


def test_readme_holds_the_five_commands() -> None:
    first, second = readme_blocks()
    verbs = [command.split("$(")[-1].rstrip(")").split()[0:2] for command in first[1:]]
    assert [v[1] if v[0] == "gateway" else v[0] for v in verbs] == [
        "clients", "secret", "serve", "token", "curl", "curl"
    ]  # fmt: skip
    assert any("--role practitioner --rpps" in command for command in second)


class Shell:
    """README's commands run one by one as a user types them: each in bash, with the variables the earlier ones
    set; a command ending in ``&`` runs in the background (``gateway serve``: then waited for, as a user would)."""

    def __init__(self, directory: Path, port: int, env: dict[str, str]) -> None:
        self.directory = directory
        self.port = port
        self.env = env
        self.background: list[subprocess.Popen[bytes]] = []
        self.outputs: list[tuple[str, str]] = []  # (command, its stdout)

    def run(self, command: str) -> str:
        command = command.replace("8080", str(self.port))
        if command.endswith("&"):
            log = (self.directory / "serve.log").open("ab")
            self.background.append(
                subprocess.Popen(
                    ["bash", "-c", f"exec {command[:-1]}"], cwd=self.directory, env=self.env, stdout=log, stderr=log
                )
            )
            self._wait_for_the_gateway()
            return ""
        state = self.directory / ".state"
        done = subprocess.run(
            ["bash", "-c", f"set -ae\n{command}\nenv -0 > {state}"],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{command}\n{done.stderr}"
        self.env = dict(item.split("=", 1) for item in state.read_text().split("\0") if "=" in item)
        self.outputs.append((command, done.stdout))
        return done.stdout

    def _wait_for_the_gateway(self) -> None:
        def ready() -> bool:
            if self.background[-1].poll() is not None:
                raise AssertionError((self.directory / "serve.log").read_text()[-3000:])
            try:
                return httpx.get(f"http://127.0.0.1:{self.port}/fhir/metadata", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 60, 0.1, "gateway serve")

    def stop(self) -> None:
        for process in self.background:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _environment(directory: Path, database_url: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env["GATEWAY_DELIVERY_BACKOFF_BASE"] = "60"  # the example platforms are fictional: no retry during the test
    if database_url is not None:
        env["GATEWAY_DATABASE_URL"] = database_url
    return env


def test_the_readme_commands_from_a_fresh_directory(tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(REPOSITORY / "examples")
    database_url = scratch_database_url(tmp_path, CONFIGURED_URL) if USES_POSTGRESQL else None
    env = _environment(tmp_path, database_url)
    if database_url is not None:  # on PostgreSQL `gateway serve` wants the schema made first (README: Configuration)
        subprocess.run([*GATEWAY, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    shell = Shell(tmp_path, free_port(), env)
    sender, practitioner = readme_blocks()
    try:
        outputs = [shell.run(command) for command in sender]
        token = shell.env["TOKEN"]
        assert token.count(".") == 2 and token not in outputs[1]  # a JWT, printed only by `gateway token`
        assert stat_mode(tmp_path / "hopital-nord.pem") == 0o600
        assert "PRIVATE KEY" not in "".join(outputs)
        posted = json.loads(outputs[-2])
        assert posted["type"] == "transaction-response"
        assert {e["response"]["status"][:3] for e in posted["entry"]} <= {"200", "201"}
        found = json.loads(outputs[-1])
        assert found["total"] == 1 and found["entry"][0]["resource"]["status"] == "active"
        # The GP's software, registered while the gateway runs, decides its Task: the referral is routed.
        outputs = [shell.run(command) for command in practitioner]
        held = json.loads(outputs[3])
        assert held["type"] == "transaction-response"
        assert json.loads(outputs[-2])["status"] == "accepted"
        routed = json.loads(outputs[-1])
        assert routed["total"] == 1 and routed["entry"][0]["resource"]["status"] == "active"
    finally:
        shell.stop()
        if database_url is not None:
            drop_scratch_database(database_url)


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


# --- reload, SIGHUP, rotation on a gateway of their own ---------------------------------------------------------


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GATEWAY, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Path]]:
    directory = tmp_path_factory.mktemp("onboarding")
    routing = write_routing(
        directory, {"dac-75": {"endpoint": "https://dac75.example.org/fhir", "finess": "750000000"}}, {"75": "dac-75"}
    )
    clients = directory / "clients.toml"
    env = {"GATEWAY_CLIENTS": str(clients), "GATEWAY_ROUTING": str(routing)}
    setup = {**_environment(directory, None), **env}
    assert _cli(setup, directory, "clients", "add", "first", "--role", "operator").returncode == 0
    process = GatewayProcess(directory, routing, env={"GATEWAY_AUTH": "on", "GATEWAY_AUTH_SECRET": TEST_SECRET} | env)
    process.start()
    try:
        yield process, directory
    finally:
        process.drop()


def _token(process: GatewayProcess, client_id: str, key: Path) -> str:
    return request_token(f"http://127.0.0.1:{process.port}", client_id, key, ["system/*.rs"])


def _refused(process: GatewayProcess, client_id: str, key: Path) -> str | None:
    try:
        _token(process, client_id, key)
    except TokenRequestFailed as exc:
        return str(exc)
    return None


def test_a_client_added_while_serving_gets_a_token_within_a_second(served: tuple[GatewayProcess, Path]) -> None:
    process, directory = served
    env = {**process.environment(), "PATH": f"{BIN}:{os.environ['PATH']}"}
    added = _cli(env, directory, "clients", "add", "late", "--role", "sender")
    assert added.returncode == 0, added.stderr
    written = time.monotonic()
    wait_until(lambda: _refused(process, "late", directory / "late.pem") is None, 5, 0.05, "the new client's token")
    assert time.monotonic() - written < 1.0
    log = process.log_path.read_text()
    assert '"clients_reloaded"' in log and "BEGIN" not in log


def test_a_broken_file_keeps_the_last_good_registrations(served: tuple[GatewayProcess, Path]) -> None:
    process, directory = served
    clients = directory / "clients.toml"
    good = clients.read_text()
    try:
        clients.write_text(good + "\n[[clients]]\nclient_id = 'broken'\nrole = 'boss'\n")
        wait_until(lambda: "clients_reload_refused" in process.log_path.read_text(), 5, 0.05, "the refusal logged")
        assert _refused(process, "first", directory / "first.pem") is None  # still registered
        (line,) = [json.loads(x) for x in process.log_path.read_text().splitlines() if "clients_reload_refused" in x]
        assert "role must be one of" in line["reason"] and line["file"] == str(clients)
    finally:
        clients.write_text(good)


def test_sighup_reads_a_changed_key_file(served: tuple[GatewayProcess, Path]) -> None:
    """A key set in a ``jwks_file`` is not watched (the clients file is): SIGHUP reads it."""
    process, directory = served
    clients = directory / "clients.toml"
    key = new_private_key()
    write_private_key(directory / "hup.pem", key)
    (directory / "hup.jwks.json").write_text(json.dumps({"keys": [public_jwk(new_private_key())]}))
    with clients.open("a") as file:
        file.write(
            '\n[[clients]]\nclient_id = "hup"\nrole = "sender"\nscopes = ["system/*.rs"]\njwks_file = "hup.jwks.json"\n'
        )
    wait_until(lambda: "kid names none" in (_refused(process, "hup", directory / "hup.pem") or ""), 5, 0.05, "hup")
    (directory / "hup.jwks.json").write_text(json.dumps({"keys": [public_jwk(key)]}))
    assert process.process is not None
    process.process.send_signal(signal.SIGHUP)
    wait_until(lambda: _refused(process, "hup", directory / "hup.pem") is None, 5, 0.05, "the key taken on SIGHUP")
    assert process.process.poll() is None  # reloaded, not ended


def test_a_rotated_key_works_during_its_grace_period_and_not_after(served: tuple[GatewayProcess, Path]) -> None:
    process, directory = served
    env = {**process.environment(), "PATH": f"{BIN}:{os.environ['PATH']}"}
    assert _cli(env, directory, "clients", "add", "rot", "--role", "sender").returncode == 0
    wait_until(lambda: _refused(process, "rot", directory / "rot.pem") is None, 5, 0.05, "rot registered")
    rotated = _cli(env, directory, "clients", "rotate-key", "rot", "--grace", "4s", "--key-out", "rot-2.pem")
    assert rotated.returncode == 0, rotated.stderr
    (old, new) = tomllib.loads((directory / "clients.toml").read_text())["clients"][-1]["jwks"]["keys"]
    ends = old["expires"].timestamp()  # what the command wrote: 4 s after it ran, rounded up to the second
    assert "expires" not in new
    wait_until(lambda: _refused(process, "rot", directory / "rot-2.pem") is None, 5, 0.05, "the new key taken")
    if time.time() < ends - 0.5:  # the run is not so slow that the grace period already passed
        assert _refused(process, "rot", directory / "rot.pem") is None  # old key: still accepted
    refusal = wait_until(lambda: _refused(process, "rot", directory / "rot.pem"), 10, 0.1, "the old key refused")
    assert time.time() >= ends and "has expired" in refusal
    assert _refused(process, "rot", directory / "rot-2.pem") is None


@pytest.mark.skipif(not USES_POSTGRESQL, reason="serve --workers N needs PostgreSQL")
def test_sighup_to_serve_workers_reaches_every_process(tmp_path: Path) -> None:
    routing = write_routing(
        tmp_path, {"dac-75": {"endpoint": "https://dac75.example.org/fhir", "finess": "750000000"}}, {"75": "dac-75"}
    )
    clients = tmp_path / "clients.toml"
    env = {"GATEWAY_CLIENTS": str(clients), "GATEWAY_ROUTING": str(routing)}
    assert (
        _cli({**_environment(tmp_path, None), **env}, tmp_path, "clients", "add", "w", "--role", "sender").returncode
        == 0
    )
    process = GatewayProcess(
        tmp_path, routing, env={"GATEWAY_AUTH": "on", "GATEWAY_AUTH_SECRET": TEST_SECRET} | env, workers=2
    )
    process.start()
    try:
        assert process.process is not None
        # Ready means one process answers; the other may still be starting, SIGHUP ignored until it serves (see
        # test_sighup_during_start_up_does_not_end_serve): both must catch it before the signal is sent (the
        # supervisor's other child, multiprocessing's resource tracker, does not).
        supervisor = process.process.pid
        wait_until(lambda: sum(map(_sighup_caught, _children(supervisor))) == 2, 30, 0.1, "2 processes serving")
        process.process.send_signal(signal.SIGHUP)
        wait_until(lambda: process.log_path.read_text().count('"trigger": "signal"') >= 2, 10, 0.1, "2 reloads")
        log = process.log_path.read_text()
        assert "restarting processes" not in log
        assert all(_refused(process, "w", tmp_path / "w.pem") is None for _ in range(6))
    finally:
        process.drop()


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _sighup_caught(pid: int) -> bool:
    """Whether the process catches SIGHUP (a handler installed: /proc SigCgt), not merely ignores it."""
    status = Path(f"/proc/{pid}/status").read_text()
    return any(int(line.split()[1], 16) & 1 for line in status.splitlines() if line.startswith("SigCgt:"))


def _sighup_handled(pid: int) -> bool:
    """Whether the process ignores or catches SIGHUP (/proc: SigIgn, SigCgt; SIGHUP is signal 1, the lowest bit)."""
    status = Path(f"/proc/{pid}/status").read_text()
    masks = [int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("SigIgn:", "SigCgt:"))]
    return any(mask & 1 for mask in masks)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_sighup_during_start_up_does_not_end_serve(tmp_path: Path) -> None:
    """A reload sent while the gateway starts (the seconds profiles compile: a `systemctl reload` right after the
    start) is ignored, not the end of the process; once serving, SIGHUP reads the clients file."""
    routing = write_routing(
        tmp_path, {"dac-75": {"endpoint": "https://dac75.example.org/fhir", "finess": "750000000"}}, {"75": "dac-75"}
    )
    process = GatewayProcess(tmp_path, routing)
    process.database_url = scratch_database_url(tmp_path, CONFIGURED_URL)
    if process.database_url.startswith("postgresql"):
        subprocess.run([*GATEWAY, "db", "upgrade"], env=process.environment(), check=True, capture_output=True)
    command = [*GATEWAY, "serve", "--port", str(process.port)]
    with process.log_path.open("ab") as log:
        process.process = subprocess.Popen(command, env=process.environment(), stdout=log, stderr=subprocess.STDOUT)
    try:
        pid = process.process.pid

        def starting_with_sighup_handled() -> bool:
            assert process.process is not None and process.process.poll() is None, process.log_path.read_text()
            return _sighup_handled(pid)

        wait_until(starting_with_sighup_handled, 30, 0.01, "SIGHUP handled during start-up")
        process.process.send_signal(signal.SIGHUP)

        def ready() -> bool:
            assert process.process is not None
            assert process.process.poll() is None, f"ended by SIGHUP: {process.log_path.read_text()[-2000:]}"
            try:
                return httpx.get(f"{process.base}/metadata", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 60, 0.1, "gateway start-up")
    finally:
        process.drop()

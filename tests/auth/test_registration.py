"""``gateway clients add|list|remove|rotate-key|remove-key`` on the clients file, in process: what each writes, each
mistake's one-line error (the file untouched), key rotation with a grace period on a controlled clock, and the
reload a running gateway does when the file changes (``ClientsReloader``)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from gateway.auth.assertions import verify_assertion
from gateway.auth.clients import load_clients
from gateway.auth.keypairs import read_signing_key
from gateway.auth.outbound import SmartBackendAuth, sign_assertion
from gateway.auth.reload import ClientsReloader
from gateway.cli import app
from gateway.config import EXAMPLE_ROUTING
from gateway.errors import TokenRequestRejected
from gateway.routing.config import load_routing

TOKEN_URL = "http://gateway.test/auth/token"
PLATFORMS = frozenset(load_routing(EXAMPLE_ROUTING).platforms)
runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEWAY_CLIENTS", str(tmp_path / "clients.toml"))
    monkeypatch.delenv("GATEWAY_ROUTING", raising=False)
    return tmp_path


def gateway(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def assertion(client_id: str, key_file: Path) -> str:
    key = read_signing_key(key_file)
    return sign_assertion(SmartBackendAuth(TOKEN_URL, client_id, "system/*.rs", key))


def test_add_writes_the_key_0600_and_registers_its_public_half(workdir: Path) -> None:
    code, out, _ = gateway("clients", "add", "hopital-nord", "--role", "sender", "--endpoint", "https://h.example/fhir")
    assert code == 0, out
    key_file = workdir / "hopital-nord.pem"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(workdir / "clients.toml").st_mode) == 0o600
    assert "PRIVATE KEY" not in out and key_file.read_text().strip() not in out  # never printed
    registry = load_clients(workdir / "clients.toml", PLATFORMS)
    client = registry.clients["hopital-nord"]
    assert client.role == "sender" and client.endpoints == ("https://h.example/fhir",)
    assert str(client.scopes) == "system/ServiceRequest.c system/Consent.c system/Task.u system/*.rs"
    (kid,) = client.keys
    assert kid in out and kid == read_signing_key(key_file).kid
    assert verify_assertion(assertion("hopital-nord", key_file), registry, TOKEN_URL).client is client


def test_add_keeps_the_rest_of_the_file_and_its_comments(workdir: Path) -> None:
    assert gateway("clients", "add", "first", "--role", "operator")[0] == 0
    path = workdir / "clients.toml"
    path.write_text(
        "# our clients, kept by hand too\n" + path.read_text().replace('role = "operator"', 'role = "operator"  # ops')
    )
    code, _, _ = gateway(
        "clients", "add", "dac75-app", "--role", "platform", "--platform", "dac-75", "--scope", "system/*.rs"
    )
    assert code == 0
    code, _, _ = gateway("clients", "add", "cabinet", "--role", "practitioner", "--rpps", "10100246809")
    assert code == 0
    text = path.read_text()
    assert text.startswith("# our clients, kept by hand too\n") and 'role = "operator"  # ops' in text
    registry = load_clients(path, PLATFORMS)
    assert list(registry.clients) == ["first", "dac75-app", "cabinet"]
    assert registry.clients["dac75-app"].platform == "dac-75"
    assert registry.clients["cabinet"].rpps == ("10100246809",)
    code, out, _ = gateway("clients", "list")
    assert code == 0
    assert "dac75-app  platform platform=dac-75  scopes=system/*.rs" in out
    assert "cabinet  practitioner rpps=10100246809  scopes=system/*.rs system/Task.u" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "--role", "platform", "--platform", "dac-00"], "'dac-00' is not a platform of the routing file"),
        (
            ["x", "--role", "practitioner", "--rpps", "10100246808"],
            "'10100246808': the RPPS check digit (Luhn) is wrong",
        ),
        (["x", "--role", "practitioner", "--rpps", "1010024680"], "--rpps '1010024680': an RPPS number is 11 digits"),
        (["taken", "--role", "sender"], "client 'taken' is already registered in"),
        (
            ["x", "--role", "sender", "--endpoint", "http://dpi.example.org/fhir"],
            "'http://dpi.example.org/fhir' is not an https",
        ),
        (
            ["x", "--role", "sender", "--endpoint", "https://u:p@h.example/fhir"],
            "is not an https URL without credentials",
        ),
        (["x", "--role", "sender", "--platform", "dac-75"], "--platform is for --role platform only"),
        (["x", "--role", "platform"], "a platform client needs --platform KEY"),
        (["x", "--role", "practitioner"], "a practitioner client needs --rpps N"),
        (["x", "--role", "operator", "--rpps", "10100246809"], "--rpps is for --role practitioner only"),
        (["x", "--role", "admin"], "--role 'admin': one of"),
        (["x", "--role", "sender", "--scope", "user/*.read"], "--scope 'user/*.read' is not a SMART system scope"),
        (["../x", "--role", "sender"], "client id '../x': 1 to 64 letters"),
        (["x", "--role", "sender", "--key-out", "taken.pem"], "taken.pem exists already"),
    ],
)
def test_each_mistake_is_one_line_and_changes_nothing(workdir: Path, args: list[str], message: str) -> None:
    assert gateway("clients", "add", "taken", "--role", "sender")[0] == 0
    before = (workdir / "clients.toml").read_text()
    keys_before = sorted(p.name for p in workdir.glob("*.pem"))
    code, out, err = gateway("clients", "add", *args)
    assert code == 1
    assert err.count("\n") == 1 and message in err, err
    assert out == ""
    assert (workdir / "clients.toml").read_text() == before
    assert sorted(p.name for p in workdir.glob("*.pem")) == keys_before  # no key left for a client not added


def test_loopback_http_endpoints_are_taken_as_the_callbacks_rule_does(workdir: Path) -> None:
    code, _, err = gateway("clients", "add", "dev", "--role", "sender", "--endpoint", "http://127.0.0.1:9000/fhir")
    assert code == 0, err


def test_without_a_clients_file_named(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_CLIENTS")
    code, _, err = gateway("clients", "add", "x", "--role", "sender")
    assert code == 2 and "set GATEWAY_CLIENTS" in err


def test_a_clients_file_in_no_directory(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CLIENTS", str(workdir / "missing" / "clients.toml"))
    code, _, err = gateway("clients", "add", "x", "--role", "sender")
    assert code == 1 and err.startswith(f"{workdir / 'missing' / 'clients.toml'} cannot be written")
    assert not (workdir / "x.pem").exists()


def test_remove_and_unknown_ids(workdir: Path) -> None:
    for client_id in ("a", "b"):
        assert gateway("clients", "add", client_id, "--role", "sender")[0] == 0
    assert gateway("clients", "remove", "a")[0] == 0
    assert list(load_clients(workdir / "clients.toml", PLATFORMS).clients) == ["b"]
    code, _, err = gateway("clients", "remove", "a")
    assert code == 1 and err == f"no client 'a' in {workdir / 'clients.toml'}\n"
    code, _, err = gateway("clients", "rotate-key", "nobody")
    assert code == 1 and "no client 'nobody'" in err


def test_rotation_without_grace_keeps_both_keys_until_remove_key(workdir: Path) -> None:
    assert gateway("clients", "add", "h", "--role", "sender")[0] == 0
    code, out, _ = gateway("clients", "rotate-key", "h", "--key-out", "h-new.pem")
    assert code == 0, out
    path = workdir / "clients.toml"
    registry = load_clients(path, PLATFORMS)
    old, new = read_signing_key(workdir / "h.pem").kid, read_signing_key(workdir / "h-new.pem").kid
    assert list(registry.clients["h"].keys) == [old, new]
    assert stat.S_IMODE(os.stat(workdir / "h-new.pem").st_mode) == 0o600
    far = time.time() + 10 * 365 * 86400
    for key_file in ("h.pem", "h-new.pem"):
        verify_assertion(assertion("h", workdir / key_file), registry, TOKEN_URL, now=time.time())
    assert registry.clients["h"].key_expired(old, far) is False  # no end without --grace
    assert gateway("clients", "remove-key", "h", old)[0] == 0
    registry = load_clients(path, PLATFORMS)
    with pytest.raises(TokenRequestRejected) as refused:
        verify_assertion(assertion("h", workdir / "h.pem"), registry, TOKEN_URL)
    assert "kid names none of the client's registered keys" in str(refused.value.issues[0].diagnostics)
    verify_assertion(assertion("h", workdir / "h-new.pem"), registry, TOKEN_URL)
    code, _, err = gateway("clients", "remove-key", "h", new)
    assert code == 1 and "only key" in err


def test_rotation_with_grace_ends_the_old_key_at_its_expiry(workdir: Path) -> None:
    assert gateway("clients", "add", "h", "--role", "sender")[0] == 0
    before = time.time()
    code, out, _ = gateway("clients", "rotate-key", "h", "--grace", "15m", "--key-out", "h-new.pem")
    assert code == 0, out
    registry = load_clients(workdir / "clients.toml", PLATFORMS)
    old = read_signing_key(workdir / "h.pem").kid
    expiry = registry.clients["h"].key_expiry[old].timestamp()
    assert before + 900 <= expiry <= time.time() + 900 + 1  # rounded up to the second
    assert "expires = " in (workdir / "clients.toml").read_text()
    signed = assertion("h", workdir / "h.pem")
    # The clock moved: just before the end, accepted; at it, refused. The new key has no end.
    verify_assertion(signed, registry, TOKEN_URL, now=expiry - 1)
    with pytest.raises(TokenRequestRejected) as refused:
        verify_assertion(signed, registry, TOKEN_URL, now=expiry)
    assert f"key '{old}' of this client has expired" in str(refused.value.issues[0].diagnostics)
    new_kid = read_signing_key(workdir / "h-new.pem").kid
    assert not registry.clients["h"].key_expired(new_kid, expiry + 10**6)
    code, out, _ = gateway("clients", "list")
    assert f"key {old}  expires " in out


@pytest.mark.parametrize("grace", ["0s", "soon", "-5m"])
def test_a_bad_grace_is_refused(workdir: Path, grace: str) -> None:
    assert gateway("clients", "add", "h", "--role", "sender")[0] == 0
    code, _, err = gateway("clients", "rotate-key", "h", "--grace", grace)
    assert code == 1 and "--grace" in err


def test_a_client_whose_keys_are_elsewhere_rotates_them_there(workdir: Path) -> None:
    (workdir / "clients.toml").write_text(
        '[[clients]]\nclient_id = "peer"\nrole = "sender"\nscopes = ["system/*.rs"]\n'
        'jwks_url = "https://peer.example.org/jwks.json"\n'
    )
    code, _, err = gateway("clients", "rotate-key", "peer")
    assert code == 1 and "names its keys by jwks_url" in err


def test_secret_is_fresh_and_long_enough() -> None:
    first, second = gateway("secret")[1].strip(), gateway("secret")[1].strip()
    assert first != second and len(first) >= 64


def test_the_reloader_takes_a_changed_file_and_keeps_the_last_good_one(workdir: Path) -> None:
    assert gateway("clients", "add", "a", "--role", "sender")[0] == 0
    path = workdir / "clients.toml"
    registry = load_clients(path, PLATFORMS)
    reloader = ClientsReloader(path, PLATFORMS, registry)
    assert reloader.check() is False  # nothing changed
    assert gateway("clients", "add", "b", "--role", "sender")[0] == 0
    assert reloader.check() is True
    assert sorted(registry.clients) == ["a", "b"]
    good = path.read_text()
    with structlog.testing.capture_logs() as logs:
        path.write_text(good.replace('role = "sender"', 'role = "boss"', 1))
        assert reloader.check() is False
        assert reloader.check() is False  # the same broken file: told once
    assert sorted(registry.clients) == ["a", "b"]  # the last good registrations stay
    (refused,) = [log for log in logs if log["event"] == "clients_reload_refused"]
    assert "role must be one of" in refused["reason"] and refused["file"] == str(path)
    assert "BEGIN" not in json.dumps(refused, default=str)
    os.utime(path)  # touched, same content: nothing read
    assert reloader.check() is False
    path.write_text(good.replace('client_id = "b"', 'client_id = "c"'))
    assert reloader.check() is True
    assert sorted(registry.clients) == ["a", "c"]
    path.write_text(good)
    assert reloader.reload("signal") is True  # SIGHUP's path
    assert sorted(registry.clients) == ["a", "b"]


def test_a_change_of_the_same_size_within_one_clock_tick_is_seen(workdir: Path) -> None:
    """File times advance by the kernel's tick: two writes of one size in a row may leave the same stamp."""
    assert gateway("clients", "add", "b", "--role", "sender")[0] == 0
    path = workdir / "clients.toml"
    registry = load_clients(path, PLATFORMS)
    reloader = ClientsReloader(path, PLATFORMS, registry)
    stamp = os.stat(path).st_mtime_ns
    path.write_text(path.read_text().replace('client_id = "b"', 'client_id = "c"'))
    os.utime(path, ns=(stamp, stamp))  # same inode, size and modification time as when last read
    assert reloader.check() is True
    assert list(registry.clients) == ["c"]


def test_concurrent_adds_lose_no_client(workdir: Path) -> None:
    """Several `gateway clients add` run at once (two operators, a provisioning script): each reads, changes and
    replaces the file under a lock, so none replaces the file with a version missing another's client."""
    import subprocess
    import sys

    ids = [f"concurrent-{n}" for n in range(6)]
    script = "from gateway.cli import main; main()"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, "clients", "add", client_id, "--role", "operator"],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for client_id in ids
    ]
    for process in processes:
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    registry = load_clients(workdir / "clients.toml", PLATFORMS)
    assert sorted(registry.clients) == ids


def test_a_client_is_added_after_the_last_one_was_removed(workdir: Path) -> None:
    assert gateway("clients", "add", "only", "--role", "operator")[0] == 0
    assert gateway("clients", "remove", "only")[0] == 0
    code, _, err = gateway("clients", "add", "next", "--role", "operator", "--key-out", "next.pem")
    assert code == 0, err
    assert sorted(load_clients(workdir / "clients.toml", PLATFORMS).clients) == ["next"]

"""HL7 v2 and CDA end to end: a real ``gateway serve --mllp-port`` taking the examples over a real TCP socket
(MLLP) and over HTTP, answering each with the ACK or transaction-response the examples state, and the referrals
then routed to a loopback platform — whose messages the independent validators check like everything emitted.
With authentication on: MLLP acts as the configured sender client; HTTP needs a sender token."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import loopback_routing
from tests.support.auth import TEST_SECRET, SmartClient, write_clients
from tests.support.processes import GatewayProcess, Platform, free_port, running, wait_until

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
START, END = b"\x0b", b"\x1c\x0d"
V2 = {"Content-Type": "x-application/hl7-v2+er7"}
SENDER = SmartClient("hospital", "sender", ["system/ServiceRequest.cr", "system/*.rs"])
OPERATOR = SmartClient("ops", "operator", ["system/AuditEvent.rs"])


def mllp(port: int, *messages: bytes) -> list[str]:
    """Each message framed on one connection; the ACKs' MSA segments."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        answers = []
        for message in messages:
            connection.sendall(START + message + END)
            received = b""
            while not received.endswith(END):
                chunk = connection.recv(65536)
                assert chunk, "the listener closed the connection"
                received += chunk
            assert received.startswith(START)
            answers.append(next(s for s in received[1:-2].decode("latin-1").split("\r") if s.startswith("MSA")))
        return answers


def routed(platform: Platform, identifier: str) -> dict[str, object]:
    """The message the platform received for the referral whose ServiceRequest has ``identifier``."""

    def find() -> dict[str, object] | None:
        for message in list(platform.received):
            for entry in message["entry"]:
                resource = entry["resource"]
                if resource["resourceType"] == "ServiceRequest" and any(
                    i.get("value") == identifier for i in resource.get("identifier", [])
                ):
                    return message
        return None

    found: dict[str, object] = wait_until(find, 30, what=f"{identifier} delivered to the platform")
    return found


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Platform, int]]:
    directory = tmp_path_factory.mktemp("inbound")
    platform = Platform()
    routing, tokens = loopback_routing(directory, platform.endpoint)
    port = free_port()
    process = GatewayProcess(directory, routing, env=tokens, serve_args=("--mllp-port", str(port)))
    with running(platform, process):
        yield process, platform, port


def test_v2_over_mllp_and_http_and_cda_are_taken_in_and_routed(
    gateway: tuple[GatewayProcess, Platform, int],
) -> None:
    process, platform, port = gateway
    discharge = (EXAMPLES / "hl7v2" / "ref-i12-discharge.hl7").read_bytes()
    bad_key = (EXAMPLES / "hl7v2" / "invalid-ins-key.hl7").read_bytes()
    first, refused, again = mllp(port, discharge, bad_key, discharge)
    assert first.startswith("MSA|AA|CH3R-MSG-000451|ServiceRequest/"), first
    assert refused == "MSA|AE|CH3R-MSG-000452"
    assert again == first  # a replay gets its first ACK
    routed(platform, "CH3R-SORTIE-2025-004518")
    # Garbage, then the next client is served all the same.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(b"\x00\xff not a frame")
        assert b"|AR|" in connection.recv(65536)
    (wrong_type,) = mllp(port, (EXAMPLES / "hl7v2" / "invalid-wrong-type.hl7").read_bytes())
    assert wrong_type.startswith("MSA|AR|")

    base = process.base.removesuffix("/fhir")
    latin = httpx.post(f"{base}/hl7v2", content=(EXAMPLES / "hl7v2" / "ref-i12-8859-15.hl7").read_bytes(), headers=V2)
    assert latin.status_code == 200 and b"MSA|AA|CP-000778|" in latin.content, latin.content
    routed(platform, "CP-DAC-2025-0778")
    mdm = httpx.post(f"{base}/hl7v2", content=(EXAMPLES / "hl7v2" / "mdm-t02-cda.hl7").read_bytes(), headers=V2)
    assert b"MSA|AA|CDS-DOC-2025-0192|" in mdm.content, mdm.content
    message = routed(platform, "CSI-BASTIDE-LDL-2025-0192")
    types = [entry["resource"]["resourceType"] for entry in message["entry"]]  # type: ignore[index]
    assert "DocumentReference" not in types or types.count("DocumentReference") == 1
    cda = httpx.post(
        f"{base}/cda",
        content=(EXAMPLES / "cda" / "lettre-de-liaison-gp.xml").read_bytes(),
        headers={"Content-Type": "application/hl7-cda+xml"},
        timeout=30,
    )
    assert cda.status_code == 200, cda.text
    routed(platform, "MSP-BDL-LDL-2025-000143")


def test_with_authentication_on_mllp_acts_as_its_configured_sender(tmp_path: Path) -> None:
    platform = Platform()
    routing, tokens = loopback_routing(tmp_path, platform.endpoint)
    clients = write_clients(tmp_path / "clients", [SENDER, OPERATOR])
    port = free_port()
    env = {
        "GATEWAY_AUTH": "on", "GATEWAY_CLIENTS": str(clients), "GATEWAY_AUTH_SECRET": TEST_SECRET,
        "GATEWAY_MLLP_CLIENT_ID": "hospital", **tokens,
    }  # fmt: skip
    process = GatewayProcess(tmp_path, routing, env=env, serve_args=("--mllp-port", str(port)))
    with running(platform, process):
        (answer,) = mllp(port, (EXAMPLES / "hl7v2" / "ref-i12-discharge.hl7").read_bytes())
        assert answer.startswith("MSA|AA|"), answer
        reference = answer.split("|")[3]
        base = process.base
        token_url = f"http://127.0.0.1:{process.port}/auth/token"
        token = httpx.post(token_url, data=SENDER.token_form(token_url), timeout=30).json()["access_token"]
        # What MLLP took in is the configured sender's: it reads it back, and the audit trail names it.
        assert httpx.get(f"{base}/{reference}", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        operator = httpx.post(token_url, data=OPERATOR.token_form(token_url), timeout=30).json()["access_token"]
        audited = httpx.get(
            f"{base}/AuditEvent",
            params={"subtype": "transaction", "agent": "hospital", "entity": reference},
            headers={"Authorization": f"Bearer {operator}"},
        )
        assert audited.json()["total"] == 1, audited.text
        http = httpx.post(
            f"{base.removesuffix('/fhir')}/hl7v2",
            content=(EXAMPLES / "hl7v2" / "ref-i12-8859-15.hl7").read_bytes(),
            headers=V2,
        )
        assert http.status_code == 401
        routed(platform, "CH3R-SORTIE-2025-004518")
        # The sender removed from the clients file (reloaded while running): MLLP no longer acts as it, and its AR
        # still names the message it refuses (MSA-2 is its MSH-10), for the sending system to tell which.
        write_clients(tmp_path / "clients", [OPERATOR])
        refused = (EXAMPLES / "hl7v2" / "invalid-ins-key.hl7").read_bytes()
        control_id = refused.split(b"\r", 1)[0].split(b"|")[9].decode()
        answer = wait_until(
            lambda: next((a for a in mllp(port, refused) if a.startswith("MSA|AR|")), None), what="the sender's AR"
        )
        assert answer == f"MSA|AR|{control_id}", answer


def test_with_authentication_on_and_no_mllp_sender_serve_refuses_to_start(tmp_path: Path) -> None:
    routing, _ = loopback_routing(tmp_path, "http://127.0.0.1:9/fhir")
    clients = write_clients(tmp_path / "clients", [SENDER])
    env = {"GATEWAY_AUTH": "on", "GATEWAY_CLIENTS": str(clients), "GATEWAY_AUTH_SECRET": TEST_SECRET}
    process = GatewayProcess(tmp_path, routing, env=env, database_url=f"sqlite:///{tmp_path}/g.db")
    result = process.cli("serve", "--port", str(free_port()), "--mllp-port", str(free_port()))
    assert result.returncode == 2
    assert "GATEWAY_MLLP_CLIENT_ID" in result.stderr

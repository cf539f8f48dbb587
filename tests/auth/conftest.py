"""An application with authentication on, its registered clients, and a way to get their tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from gateway import Settings, create_app
from gateway.routing.config import RoutingTable
from gateway.store import Database
from tests.support.auth import TEST_SECRET, SmartClient, write_clients

TOKEN_URL = "http://gateway.test/auth/token"
#: The identifier system the hospital registered as its own (GATEWAY_CLIENTS identifier_systems).
HOSPITAL_SYSTEM = "https://hospital.example/referrals"
SENDER = SmartClient(
    "hospital",
    "sender",
    ["system/ServiceRequest.cr", "system/*.rs", "system/Consent.c", "system/Task.u"],
    identifier_systems=(HOSPITAL_SYSTEM,),
    endpoints=["https://logiciel-medecin.example.org/fhir", "https://sender-a.example/fhir"],
)
OTHER_SENDER = SmartClient(
    "gp-software",
    "sender",
    ["system/ServiceRequest.c", "system/*.rs", "system/Task.u"],
    algorithm="RS384",
    endpoints=["https://sender-a.example/fhir"],  # so that its replay of A's message meets the 409, not a 422
)
PLATFORM = SmartClient("dac75-app", "platform", ["system/*.rs", "system/Task.u"], "dac-75")
OTHER_PLATFORM = SmartClient("dac59-app", "platform", ["system/*.rs", "system/Task.u"], "dac-59-metropole")
HAINAUT_PLATFORM = SmartClient("dac59h-app", "platform", ["system/*.rs", "system/Task.u"], "dac-59-hainaut")
FINISTERE = SmartClient("dac29-app", "platform", ["system/*.rs", "system/Task.u"], "dac-29")  # pta-2016
PEER = SmartClient("dac67-gateway", "platform", ["system/ServiceRequest.c", "system/*.rs"], "dac-67")
# A platform's software that refers patients too (to other platforms) and works its own Tasks.
REFERRING_PLATFORM = SmartClient(
    "dac29-referrer", "platform", ["system/ServiceRequest.c", "system/*.rs", "system/Task.u"], "dac-29"
)
OPERATOR = SmartClient("ops", "operator", ["system/*.rs", "system/AuditEvent.rs", "system/Task.u"])
# The GP of the examples' patients (RPPS 10100345676), and another physician (the nurse's pta-2016 example's GP),
# whose software refers patients too.
GP_SOFTWARE = SmartClient("cabinet-lilas", "practitioner", ["system/*.rs", "system/Task.u"], rpps=["10100345676"])
OTHER_GP = SmartClient(
    "cabinet-tilleuls",
    "practitioner",
    ["system/ServiceRequest.c", "system/*.rs", "system/Task.u"],
    rpps=["10100246809"],
)
READ_ONLY = SmartClient("reader", "sender", ["system/ServiceRequest.rs"])
# An operator that also posts transactions: how a directory record (Practitioner, Organization) is changed.
DIRECTORY_OPERATOR = SmartClient("ops-directory", "operator", ["system/*.rs", "system/ServiceRequest.c"])
# A sender allowed to record oppositions (system/Consent.c, which an opposition message needs as POST /fhir/Consent
# does), party to no referral of the shared fixtures.
OPPOSING_SENDER = SmartClient(
    "patients-office", "sender", ["system/ServiceRequest.c", "system/*.rs", "system/Consent.c"]
)
CLIENTS = [
    SENDER, OTHER_SENDER, PLATFORM, OTHER_PLATFORM, HAINAUT_PLATFORM, FINISTERE, PEER, REFERRING_PLATFORM, OPERATOR,
    READ_ONLY, DIRECTORY_OPERATOR, GP_SOFTWARE, OTHER_GP, OPPOSING_SENDER,
]  # fmt: skip


@pytest.fixture(scope="session")
def clients_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clients(tmp_path_factory.mktemp("clients"), CLIENTS)


@pytest.fixture
def secure_app(database_url: str, clients_file: Path, database: Database, routing: RoutingTable) -> FastAPI:
    settings = Settings(
        database_url=database_url, auth="on", clients=clients_file, auth_secret=TEST_SECRET, max_body_bytes=200_000
    )
    return create_app(settings, database, routing)


@pytest.fixture
async def secure(secure_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=secure_app), base_url="http://gateway.test") as c:
        yield c


async def token_of(http: httpx.AsyncClient, client: SmartClient, scope: str | None = None) -> dict[str, str]:
    """Authorization headers for ``client``, after the client-credentials dance."""
    answer = await http.post("/auth/token", data=client.token_form(TOKEN_URL, scope))
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}

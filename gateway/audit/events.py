"""AuditEvent resources in the shape of IHE Basic Audit Log Patterns (BALP) for RESTful interactions.

``type`` is ``rest``; ``subtype`` the FHIR interaction; ``action`` C/R/U/E; ``outcome`` 0 (success), 4 (the
request was refused: 4xx), 8 (the gateway failed: 5xx); two agents — the client (requestor, its client id as
identifier) and the gateway — with the gateway as ``source.observer``; one ``entity`` per resource touched, or for
a search the query (base64, ``entity.query``). Nothing about the patient but references: no names, no INS.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from gateway.fhir.primitives import fhir_instant
from gateway.fhir.types import Resource

EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
#: The system of client ids in ``agent.who.identifier`` (the clients file's ``client_id``).
CLIENT_ID_SYSTEM = "https://fhir.dac-gateway.org/client-id"
DELIVERY_ID_SYSTEM = "https://fhir.dac-gateway.org/delivery-id"  # = the MessageHeader id
#: The gateway's own client id, as requestor of what it does by itself (deliveries, worker jobs).
GATEWAY_CLIENT_ID = "dac-gateway"
#: The gateway as agent and observer: by name only, so that searching by agent indexes the clients alone.
GATEWAY = {"display": "DAC Gateway"}

#: FHIR interaction → BALP action.
ACTIONS = {
    "create": "C",
    "transaction": "C",
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "history-type": "R",
    "history-system": "R",
    "search-type": "E",
    "update": "U",
    "patch": "U",
    "operation": "E",
}


def outcome_of(status: int) -> str:
    return "0" if status < 400 else "4" if status < 500 else "8"


@dataclass(frozen=True, slots=True)
class AuditedInteraction:
    """What is audited of one interaction, before it becomes an AuditEvent."""

    subtype: str  # a key of ACTIONS
    client_id: str
    recorded: datetime
    outcome: str = "0"
    entities: tuple[str, ...] = ()  # references ("Task/1/_history/2")
    query: str | None = None  # for a search: the query string
    query_type: str | None = None  # the searched resource type
    description: str | None = None  # a failure's dac-issue code, a delivery attempt's answer: never data
    destination: str | None = None  # for a delivery: where it went


def delivery_event(
    delivery_id: str,
    destination: str,
    references: tuple[str, ...],
    outcome: str,
    when: datetime,
    answer: str | None = None,
) -> Resource:
    """A delivery attempt ($process-message to a platform or peer): the gateway is the requestor. ``answer`` is
    what came of it (``HTTP 503 (…)``, ``network error (…)``: status, issue codes, error types — never data), so
    that each attempt of a delivery can be shown with its answer and time."""
    event = audit_event(
        AuditedInteraction(
            "operation", GATEWAY_CLIENT_ID, when, outcome, references, description=answer, destination=destination
        )
    )
    event["entity"] = [
        *event.get("entity", []),
        {"what": {"identifier": {"system": DELIVERY_ID_SYSTEM, "value": delivery_id}}, "description": "delivery"},
    ]
    return event


def _agent(code: str, display: str, who: Resource, requestor: bool) -> Resource:
    return {
        "type": {"coding": [{"system": DICOM, "code": code, "display": display}]},
        "who": who,
        "requestor": requestor,
    }


def audit_event(interaction: AuditedInteraction) -> Resource:
    client = {"identifier": {"system": CLIENT_ID_SYSTEM, "value": interaction.client_id}}
    agents = [
        _agent("110153", "Source Role ID", client, True),
        _agent("110152", "Destination Role ID", GATEWAY, False),
    ]
    if interaction.destination is not None:
        agents[1] = _agent("110152", "Destination Role ID", {"display": interaction.destination}, False)
    # what alone: an intake touches a dozen resources, and each entity is written twice (resource and version).
    entities: list[Resource] = [{"what": {"reference": reference}} for reference in interaction.entities]
    if interaction.query is not None:
        entities.append(
            {
                "type": {"system": ENTITY_TYPE, "code": "2"},
                "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                "description": interaction.query_type,
                "query": base64.b64encode(interaction.query.encode()).decode(),
            }
        )
    event: Resource = {
        "resourceType": "AuditEvent",
        "type": {"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": INTERACTION, "code": interaction.subtype}],
        "action": ACTIONS[interaction.subtype],
        "recorded": fhir_instant(interaction.recorded),
        "outcome": interaction.outcome,
        "agent": agents,
        "source": {
            "observer": GATEWAY,
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    if interaction.description is not None:
        event["outcomeDesc"] = interaction.description
    if entities:
        event["entity"] = entities
    return event


#: DICOM's "User Authentication" event and its "Login" subtype: a token request (BALP's authentication pattern).
USER_AUTHENTICATION = {"system": DICOM, "code": "110114", "display": "User Authentication"}
LOGIN = {"system": DICOM, "code": "110122", "display": "Login"}


def token_refused_event(client_id: str | None, address: str | None, reason: str, when: datetime) -> Resource:
    """A refused token request: the client it claimed to be (unverified: from its form or its assertion's ``iss``),
    the address it came from, and why, as a dac-issue code — never its assertion, nor anything it signed."""
    who: Resource = (
        {"identifier": {"system": CLIENT_ID_SYSTEM, "value": client_id}} if client_id else {"display": "unknown"}
    )
    requestor = _agent("110153", "Source Role ID", who, True)
    if address:
        requestor["network"] = {"address": address, "type": "2"}  # 2: an IP address
    return {
        "resourceType": "AuditEvent",
        "type": USER_AUTHENTICATION,
        "subtype": [LOGIN],
        "action": "E",
        "recorded": fhir_instant(when),
        "outcome": "4",
        "outcomeDesc": reason,
        "agent": [requestor, _agent("110152", "Destination Role ID", GATEWAY, False)],
        "source": {
            "observer": GATEWAY,
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }

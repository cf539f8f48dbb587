"""The answers to a referral: a ``transaction-response`` Bundle, or a ``message`` Bundle with a response."""

from __future__ import annotations

from gateway.fhir.primitives import fhir_instant, new_id, utc_now
from gateway.fhir.types import Resource
from gateway.intake.service import EntryOutcome, IntakeOutcome
from gateway.referral.bundle import MESSAGE_EVENT_SYSTEM, REFERRAL_REQUEST
from gateway.store.repository import StoredResource


def intake_note(outcome: IntakeOutcome) -> Resource | None:
    """What the sender should know beyond the entries: what the workflow decided, what the gateway made."""
    if not outcome.generated and not outcome.replayed and not outcome.notes:
        return None
    issues = [{"severity": "information", "code": "informational", "diagnostics": note} for note in outcome.notes] + [
        {
            "severity": "information",
            "code": "informational",
            "diagnostics": f"{made.resource_type}/{made.id} was created by the gateway for this referral",
        }
        for made in outcome.generated
    ]
    if outcome.replayed:
        issues.insert(
            0,
            {
                "severity": "information",
                "code": "duplicate",
                "diagnostics": "this referral was already received: the original answer is replayed, nothing new "
                "was stored",
            },
        )
    return {"resourceType": "OperationOutcome", "issue": issues}


def _response(entry: EntryOutcome) -> Resource:
    return {
        "status": entry.status,
        "location": entry.location,
        "etag": f'W/"{entry.version_id}"',
        "lastModified": entry.last_updated,
    }


def transaction_response(outcome: IntakeOutcome, base_url: str) -> Resource:
    entries = []
    for entry in outcome.entries:
        response = _response(entry)
        if entry.resource_type == "ServiceRequest" and (note := intake_note(outcome)) is not None:
            response["outcome"] = note
        entries.append({"fullUrl": f"{base_url}/{entry.resource_type}/{entry.id}", "response": response})
    return {
        "resourceType": "Bundle",
        "id": new_id(),
        "type": "transaction-response",
        "timestamp": fhir_instant(utc_now()),
        "entry": entries,
    }


def message_response(
    request_header: Resource, focus: StoredResource, base_url: str, note: Resource | None = None
) -> Resource:
    """A response message (R4 messaging.html): MessageHeader with ``response`` ``ok``, then the focus resource."""
    focus_url = f"{base_url}/{focus.reference}"
    header: Resource = {
        "resourceType": "MessageHeader",
        "id": new_id(),
        "eventCoding": request_header.get("eventCoding") or {"system": MESSAGE_EVENT_SYSTEM, "code": REFERRAL_REQUEST},
        "source": {"name": "DAC Gateway", "endpoint": base_url},
        "response": {"identifier": str(request_header.get("id")), "code": "ok"},
        "focus": [{"reference": focus_url}],
    }
    request_source = request_header.get("source")
    if isinstance(request_source, dict) and isinstance(request_source.get("endpoint"), str):
        header["destination"] = [{"endpoint": request_source["endpoint"]}]
    entries: list[Resource] = [
        {"fullUrl": f"urn:uuid:{header['id']}", "resource": header},
        {"fullUrl": focus_url, "resource": focus.content},
    ]
    if note is not None:
        note_id = new_id()
        header["response"]["details"] = {"reference": f"urn:uuid:{note_id}"}
        entries.append({"fullUrl": f"urn:uuid:{note_id}", "resource": note | {"id": note_id}})
    return {
        "resourceType": "Bundle",
        "id": new_id(),
        "type": "message",
        "timestamp": fhir_instant(utc_now()),
        "entry": entries,
    }

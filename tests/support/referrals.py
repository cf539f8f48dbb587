"""Fresh referrals made from the examples: new identifiers, a new patient (valid INS key), a chosen commune."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
INSEE_EXTENSION = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code"
_counter = itertools.count(1)


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return data


def resource(bundle: dict[str, Any], resource_type: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type
    )
    return found


def nir_key(first13: str) -> str:
    return f"{97 - int(first13) % 97:02d}"


def fresh(name: str = "referral-hospital-nurse.json", commune: str | None = None, tag: str = "") -> dict[str, Any]:
    """The example under new ServiceRequest and Bundle identifiers, for a new patient (another INS), living in
    ``commune`` (INSEE code) when given."""
    bundle = copy.deepcopy(example(name))
    n = next(_counter)
    suffix = f"-{tag or 'e2e'}-{n}-{id(bundle) % 100000}"
    bundle["identifier"]["value"] += suffix
    resource(bundle, "ServiceRequest")["identifier"][0]["value"] += suffix
    patient_entry = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    patient = patient_entry["resource"]
    for identifier in patient["identifier"]:
        if identifier["system"] == INS_NIR:
            # A new person each time: another birth commune number and order number (never 000), a valid key.
            first13 = identifier["value"][:7] + f"{(n // 999) % 1000:03d}{n % 999 + 1:03d}"
            identifier["value"] = first13 + nir_key(first13)
            if patient_entry.get("request", {}).get("ifNoneExist"):
                patient_entry["request"]["ifNoneExist"] = f"identifier={INS_NIR}|{identifier['value']}"
    if commune is not None:
        patient["address"] = [
            {
                "use": "home",
                "line": ["1 rue de l'Exemple"],
                "city": "Commune",
                "postalCode": commune[:2] + "000",
                "extension": [{"url": INSEE_EXTENSION, "valueCoding": {"code": commune}}],
            }
        ]
    return bundle


def as_message(bundle: dict[str, Any], source_endpoint: str, header_id: str) -> dict[str, Any]:
    """The same referral as a ``message`` Bundle for $process-message."""
    service_request_entry = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    header = {
        "resourceType": "MessageHeader",
        "id": header_id,
        "eventCoding": {
            "system": "https://fhir.dac-gateway.org/CodeSystem/dac-message-event",
            "code": "referral-request",
        },
        "source": {"name": "logiciel de test", "endpoint": source_endpoint},
        "focus": [{"reference": service_request_entry["fullUrl"]}],
    }
    entries = [{"fullUrl": e["fullUrl"], "resource": e["resource"]} for e in bundle["entry"]]
    return {
        "resourceType": "Bundle",
        "type": "message",
        "identifier": bundle["identifier"],
        "timestamp": "2026-11-23T10:00:00+01:00",
        "entry": [{"fullUrl": f"urn:uuid:{header_id}", "resource": header}, *entries],
    }


def renamed(bundle: dict[str, Any], suffix: str) -> dict[str, Any]:
    """The same referral under new ServiceRequest and Bundle identifiers: a new referral, the same people."""
    bundle = copy.deepcopy(bundle)
    resource(bundle, "ServiceRequest")["identifier"][0]["value"] += suffix
    bundle["identifier"]["value"] += suffix
    return bundle

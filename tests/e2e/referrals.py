"""Referrals for the API end-to-end tests, made from the examples.

A test varies an example so that it is a new referral (new ServiceRequest identifier and Bundle.identifier) and,
when it needs one, for a new patient: another INS-NIR with a valid key, keeping the part that encodes the patient's
sex, birth month and birth commune (so the identity traits still match it), and the Patient entry's
``request.ifNoneExist`` naming the new INS. Everything is derived from a counter: reruns post the same values.
"""

from __future__ import annotations

import copy
import itertools
import json
import uuid
from functools import cache
from pathlib import Path
from typing import Any

Bundle = dict[str, Any]
Resource = dict[str, Any]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
_NAMESPACE = uuid.UUID("3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f")
_counter = itertools.count(1)


@cache
def _example_text(name: str) -> str:
    return (EXAMPLES / name).read_text(encoding="utf-8")


def example(name: str) -> Bundle:
    """A fresh copy of ``examples/{name}`` (JSON), safe to change."""
    data: Bundle = json.loads(_example_text(name))
    return data


def example_bytes(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


def transaction_examples() -> list[str]:
    """The JSON example files that are transaction Bundles (not messages, not the lone Consent)."""
    names = []
    for path in sorted(EXAMPLES.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("resourceType") == "Bundle" and data.get("type") == "transaction":
            names.append(path.name)
    return names


def entry(bundle: Bundle, resource_type: str) -> dict[str, Any]:
    """The first entry holding a resource of this type."""
    found: dict[str, Any] = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type)
    return found


def entry_index(bundle: Bundle, resource_type: str) -> int:
    return next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == resource_type)


def resource(bundle: Bundle, resource_type: str) -> Resource:
    found: Resource = entry(bundle, resource_type)["resource"]
    return found


def service_request_identifier(bundle: Bundle) -> tuple[str, str]:
    identifier = resource(bundle, "ServiceRequest")["identifier"][0]
    return str(identifier["system"]), str(identifier["value"])


def identifier_query(system_value: tuple[str, str]) -> str:
    return f"{system_value[0]}|{system_value[1]}"


def patient_ins(bundle: Bundle) -> str:
    patient = resource(bundle, "Patient")
    return str(next(i["value"] for i in patient["identifier"] if i["system"] == INS_NIR))


def nir_key(first13: str) -> str:
    """INS-NIR key: 97 - (the 13 characters as a number, mod 97); Corsica's 2A / 2B count as 19 / 18."""
    department = first13[5:7].replace("2A", "19").replace("2B", "18")
    number = int(first13[:5] + department + first13[7:])
    return f"{97 - number % 97:02d}"


def _next_number() -> int:
    return next(_counter)


def renumber(bundle: Bundle) -> Bundle:
    """The same referral under a new ServiceRequest identifier and a new Bundle.identifier (in place)."""
    n = _next_number()
    bundle["identifier"]["value"] = f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'bundle-{n}')}"
    service_request = resource(bundle, "ServiceRequest")
    service_request["identifier"][0]["value"] = f"{service_request['identifier'][0]['value']}-E2E-{n:04d}"
    return bundle


def new_bundle_identifier(bundle: Bundle) -> Bundle:
    """Only Bundle.identifier changes (in place): same ServiceRequest, so still the same referral."""
    bundle["identifier"]["value"] = f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'bundle-{_next_number()}')}"
    return bundle


def new_service_request_identifier(bundle: Bundle) -> Bundle:
    """Only the ServiceRequest identifier changes (in place)."""
    service_request = resource(bundle, "ServiceRequest")
    value = str(service_request["identifier"][0]["value"]).split("-E2E-")[0]
    service_request["identifier"][0]["value"] = f"{value}-E2E-{_next_number():04d}"
    return bundle


def new_patient(bundle: Bundle) -> Bundle:
    """Another patient (in place): a new INS-NIR birth order (characters 11-13), its key, and ifNoneExist."""
    patient_entry = entry(bundle, "Patient")
    for identifier in patient_entry["resource"]["identifier"]:
        if identifier["system"] != INS_NIR:
            continue
        order = identifier["value"][10:13]
        while (fresh_order := f"{_next_number() % 1000:03d}") in (order, "000"):
            pass
        first13 = identifier["value"][:10] + fresh_order
        identifier["value"] = first13 + nir_key(first13)
        if patient_entry.get("request", {}).get("ifNoneExist"):
            patient_entry["request"]["ifNoneExist"] = f"identifier={INS_NIR}|{identifier['value']}"
    return bundle


def fresh_referral(name: str = "referral-hospital-nurse.json") -> Bundle:
    """The example as a new referral for a new patient."""
    return new_patient(renumber(example(name)))


def same_patient(bundle: Bundle) -> Bundle:
    """Another referral (new ServiceRequest and Bundle identifiers) for the patient of ``bundle``."""
    return renumber(copy.deepcopy(bundle))


def patient_data(bundle: Bundle) -> set[str]:
    """What identifies the patients of a bundle and must never reach a log: family names and INS values."""
    found: set[str] = set()
    for e in bundle.get("entry") or []:
        patient = e.get("resource") if isinstance(e, dict) else None
        if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
            continue
        found.update(str(name["family"]) for name in patient.get("name", []) if name.get("family"))
        found.update(str(i["value"]) for i in patient.get("identifier", []) if i.get("system") == INS_NIR)
    return found

"""The patient's territory (DESIGN §3.5): the INSEE commune code of their address, else the department its
postal code belongs to — with Corsica (2A / 2B) and the overseas departments (971–976) right."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.fhir.france import INSEE_CODE_EXTENSION
from gateway.fhir.types import Resource

_COMMUNE = re.compile(r"^(?:\d{5}|2[AB]\d{3})$")
_POSTAL = re.compile(r"^\d{5}$")


@dataclass(frozen=True, slots=True)
class Territory:
    commune: str | None
    department: str | None

    @property
    def known(self) -> bool:
        return bool(self.commune or self.department)


def department_of_commune(commune: str) -> str:
    return commune[:3] if commune.startswith("97") else commune[:2]


def department_of_postal_code(postal_code: str) -> str | None:
    """La Poste codes follow departments, except Corsica (20xxx: 200–201 Corse-du-Sud, 202–206 Haute-Corse),
    overseas (971–976 on three digits) and Monaco (980) which is no French department."""
    if not _POSTAL.match(postal_code):
        return None
    if postal_code.startswith("20"):
        return "2A" if int(postal_code[2]) <= 1 else "2B"
    if postal_code.startswith("97"):
        return postal_code[:3] if postal_code[2] in "12346" else None  # 975: Saint-Pierre-et-Miquelon, no department
    if postal_code.startswith("98"):
        return None
    return postal_code[:2]


def _commune_of(address: dict[str, Any]) -> str | None:
    for extension in address.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == INSEE_CODE_EXTENSION:
            coding = extension.get("valueCoding") or {}
            code = str(coding.get("code", "")).upper()
            if _COMMUNE.match(code):
                return code
    district = str(address.get("district") or "").upper()
    return district if _COMMUNE.match(district) else None


def _addresses_in_order(patient: Resource) -> list[dict[str, Any]]:
    addresses = [a for a in patient.get("address") or [] if isinstance(a, dict) and a.get("use") != "old"]
    # The home address first: that is where the patient lives, whatever else is listed.
    return sorted(addresses, key=lambda address: address.get("use") != "home")


def territory_of(patient: Resource) -> Territory:
    for address in _addresses_in_order(patient):
        if commune := _commune_of(address):
            return Territory(commune, department_of_commune(commune))
        if department := department_of_postal_code(str(address.get("postalCode") or "").strip()):
            return Territory(None, department)
    return Territory(None, None)

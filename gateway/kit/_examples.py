"""Which examples there are, and how each is posted: by the kind of file, as data.

A kind says where a file goes (a path under the FHIR base, or under the server's root for the non-FHIR
endpoints of DESIGN §13), with which media type, and how its answer reads (a FHIR answer, or an HL7 v2 ACK).
Adding HL7 v2 or CDA examples is adding files under ``examples/hl7v2/`` or ``examples/cda/`` and their
expectations: the kinds below already recognise them by suffix and root element.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FHIR_NS = "{http://hl7.org/fhir}"
CDA_ROOT = "{urn:hl7-org:v3}ClinicalDocument"


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    path: str  # "{type}" is the resource type of a lone resource
    content_type: str
    under_fhir_base: bool = True  # else under the server's root (the FHIR base without its last "/fhir")
    answer: str = "fhir"  # "fhir" (Bundle or OperationOutcome) or "hl7v2-ack"


FHIR_JSON, FHIR_XML = "application/fhir+json", "application/fhir+xml"
KINDS = {
    "transaction-json": Kind("transaction-json", "", FHIR_JSON),
    "transaction-xml": Kind("transaction-xml", "", FHIR_XML),
    "message-json": Kind("message-json", "/$process-message", FHIR_JSON),
    "message-xml": Kind("message-xml", "/$process-message", FHIR_XML),
    "resource-json": Kind("resource-json", "/{type}", FHIR_JSON),
    "resource-xml": Kind("resource-xml", "/{type}", FHIR_XML),
    "cda": Kind("cda", "/cda", "application/hl7-cda+xml", under_fhir_base=False),
    "hl7v2": Kind("hl7v2", "/hl7v2", "x-application/hl7-v2+er7", under_fhir_base=False, answer="hl7v2-ack"),
}
#: File suffixes the kit looks at; other files (README.md, _build.py, expected.json) are not examples.
SUFFIXES = (".json", ".xml", ".hl7", ".er7")
NOT_EXAMPLES = frozenset({"expected.json"})


@dataclass(frozen=True, slots=True)
class Example:
    name: str  # its path under the examples folder, with "/" (the key in expected.json)
    path: Path
    kind: Kind
    resource_type: str | None  # a lone resource's type; a Bundle's "Bundle"
    request_identifiers: tuple[tuple[str, str], ...]  # the ServiceRequest identifiers it carries (system, value)

    @property
    def content(self) -> bytes:
        return self.path.read_bytes()

    def url_path(self) -> str:
        return self.kind.path.replace("{type}", self.resource_type or "")


def _from_json(content: bytes) -> tuple[str, str | None, list[tuple[str, str]]]:
    try:
        resource: Any = json.loads(content)
    except ValueError:
        return "transaction-json", None, []  # posted as it is: the server says what is wrong with it
    if not isinstance(resource, dict):
        return "transaction-json", None, []
    resource_type = resource.get("resourceType")
    identifiers: list[tuple[str, str]] = []
    resources: list[Any] = [resource]
    if resource_type == "Bundle":
        resources = [e.get("resource") for e in resource.get("entry") or [] if isinstance(e, dict)]
    for item in resources:
        if isinstance(item, dict) and item.get("resourceType") == "ServiceRequest":
            for identifier in item.get("identifier") or []:
                if isinstance(identifier, dict) and identifier.get("value"):
                    identifiers.append((str(identifier.get("system", "")), str(identifier["value"])))
    if resource_type == "Bundle":
        kind = "message-json" if resource.get("type") == "message" else "transaction-json"
    else:
        kind = "resource-json"
    return kind, str(resource_type) if resource_type else None, identifiers


def _from_xml(content: bytes) -> tuple[str, str | None, list[tuple[str, str]]]:
    try:
        root = ET.fromstring(content)  # the kit's own example files
    except ET.ParseError:
        return "transaction-xml", None, []
    if root.tag == CDA_ROOT:
        return "cda", None, []
    resource_type = root.tag.removeprefix(FHIR_NS)
    identifiers = [
        (system.get("value", "") if (system := ident.find(f"{FHIR_NS}system")) is not None else "",
         value.get("value", ""))
        for request in root.iter(f"{FHIR_NS}ServiceRequest")
        for ident in request.findall(f"{FHIR_NS}identifier")
        if (value := ident.find(f"{FHIR_NS}value")) is not None
    ]  # fmt: skip
    if resource_type == "Bundle":
        bundle_type = root.find(f"{FHIR_NS}type")
        is_message = bundle_type is not None and bundle_type.get("value") == "message"
        return ("message-xml" if is_message else "transaction-xml"), resource_type, identifiers
    return "resource-xml", resource_type, identifiers


def example(folder: Path, path: Path) -> Example:
    content = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix in (".hl7", ".er7"):
        kind, resource_type, identifiers = "hl7v2", None, list[tuple[str, str]]()
    elif suffix == ".xml":
        kind, resource_type, identifiers = _from_xml(content)
    else:
        kind, resource_type, identifiers = _from_json(content)
    name = path.relative_to(folder).as_posix()
    return Example(name, path, KINDS[kind], resource_type, tuple(identifiers))


def discover(folder: Path) -> list[Example]:
    """Every example under ``folder`` (its subfolders too), by name."""
    paths = [
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix.lower() in SUFFIXES
        and path.name not in NOT_EXAMPLES
        and not any(part.startswith(("_", ".")) for part in path.relative_to(folder).parts)
    ]
    return [example(folder, path) for path in sorted(paths)]

"""The conformance resources the engine is compiled from, read once from profiles/ (ours) and profiles/r4/ (the
R4 base), package data (gateway.conformance.files): StructureDefinitions by canonical URL, ValueSet expansions, the
referral MessageDefinition and the resource types its GraphDefinition allows."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.conformance.files import DefinitionsNotFound, check_definitions
from gateway.fhir.models import model_class
from gateway.fhir.outcome import CANONICAL_BASE
from gateway.fhir.subset import ElementFlags

R4_BASE = "http://hl7.org/fhir/StructureDefinition/"
#: ``expansion.parameter`` naming a system whose codes the build could not enumerate (profiles/README.md).
UNEXPANDED_SYSTEM = "dac-unexpanded-system"

Json = dict[str, Any]


def _read(path: Path) -> Json:
    try:
        data: Json = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DefinitionsNotFound(f"cannot read the FHIR definition {path}: {exc}") from exc
    return data


def _conformance_files(prefix: str) -> Iterator[Path]:
    profiles = check_definitions()
    yield from sorted(profiles.glob(f"{prefix}-*.json"))
    yield from sorted((profiles / "r4").glob(f"{prefix}-*.json"))


@functools.cache
def structure_definitions() -> dict[str, Json]:
    """Every StructureDefinition we carry, by canonical URL."""
    return {sd["url"]: sd for sd in map(_read, _conformance_files("StructureDefinition"))}


def base_url(type_code: str) -> str:
    return R4_BASE + type_code


@functools.cache
def element_flags(resource_type: str) -> ElementFlags | None:
    """The top-level elements of an R4 resource type that are summary or mandatory (``_summary``, ``_elements``),
    from its StructureDefinition; for a type profiles/r4/ does not carry (AuditEvent), from its R4 model (the
    same flags: fhir.resources is generated from those definitions); None for a type neither knows."""
    definition = structure_definitions().get(base_url(resource_type))
    if definition is None:
        return _model_flags(resource_type)
    summary, mandatory = set(), set()
    for element in definition["snapshot"]["element"]:
        path: str = element["path"]
        if path.count(".") != 1:
            continue
        name = path.split(".", 1)[1]
        if element.get("isSummary"):
            summary.add(name)
        if element.get("min", 0) > 0:
            mandatory.add(name)
    return ElementFlags(frozenset(summary), frozenset(mandatory))


def _model_flags(resource_type: str) -> ElementFlags | None:
    cls = model_class(resource_type)
    if cls is None:
        return None
    summary, mandatory = set(), set()
    for name, field in cls.model_fields.items():
        element = field.alias or name
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if element.startswith("_") or not extra.get("element_property"):
            continue  # a primitive's extensions (``_recorded``), or no element of the resource
        if extra.get("summary_element_property"):
            summary.add(element)
        if field.is_required() or extra.get("element_required"):
            mandatory.add(element)
    return ElementFlags(frozenset(summary), frozenset(mandatory))


@dataclass(frozen=True, slots=True)
class Expansion:
    """The codes of a ValueSet: ``(system, code)`` pairs, and the systems that could not be enumerated."""

    url: str
    codes: frozenset[tuple[str, str]]
    unexpanded: frozenset[str]
    #: the codes alone, for ``code`` elements (their system is implied by the binding)
    bare_codes: frozenset[str]


def _contains(items: list[Json]) -> Iterator[tuple[str, str]]:
    for item in items:
        if "code" in item:
            yield str(item.get("system", "")), str(item["code"])
        yield from _contains(item.get("contains") or [])


@functools.cache
def expansions() -> dict[str, Expansion]:
    """Every ValueSet we carry with an expansion, by canonical URL (without version)."""
    found = {}
    for valueset in map(_read, _conformance_files("ValueSet")):
        expansion = valueset.get("expansion")
        if not isinstance(expansion, dict):
            continue
        unexpanded = frozenset(
            str(parameter.get("valueUri"))
            for parameter in expansion.get("parameter") or []
            if parameter.get("name") == UNEXPANDED_SYSTEM
        )
        codes = frozenset(_contains(expansion.get("contains") or []))
        found[valueset["url"]] = Expansion(valueset["url"], codes, unexpanded, frozenset(code for _, code in codes))
    return found


def expansion(valueset: str) -> Expansion | None:
    return expansions().get(valueset.split("|", 1)[0])


@dataclass(frozen=True, slots=True)
class MessageRule:
    """What a message of one event carries (MessageDefinition + its GraphDefinition)."""

    definition: str
    event_system: str
    event_code: str
    focus_types: frozenset[str]
    focus_min: int
    focus_max: int | None
    allowed_types: frozenset[str]


def _graph_types(links: list[Json]) -> Iterator[str]:
    for link in links:
        for target in link.get("target") or []:
            yield str(target["type"])
            yield from _graph_types(target.get("link") or [])


@functools.cache
def message_rules() -> dict[tuple[str, str], MessageRule]:
    """(event system, event code) → the MessageDefinition's rule."""
    rules = {}
    profiles = check_definitions()
    for definition in map(_read, sorted(profiles.glob("MessageDefinition-*.json"))):
        event = definition["eventCoding"]
        focus = definition.get("focus") or []
        allowed = {"MessageHeader"}
        for graph_url in definition.get("graph") or []:  # 0..1 in R4, a list in its JSON
            graph = _read(profiles / f"GraphDefinition-{str(graph_url).rsplit('/', 1)[-1]}.json")
            allowed |= {str(graph["start"]), *_graph_types(graph.get("link") or [])}
        maxes = [str(item.get("max", "*")) for item in focus]
        rules[(event["system"], event["code"])] = MessageRule(
            definition=definition["url"],
            event_system=event["system"],
            event_code=event["code"],
            focus_types=frozenset(str(item["code"]) for item in focus),
            focus_min=sum(int(item.get("min", 0)) for item in focus),
            focus_max=None if "*" in maxes else sum(int(m) for m in maxes),
            allowed_types=frozenset(allowed),
        )
    return rules


#: Which of our profiles a resource of a referral (and of its answers and messages) is checked against.
PROFILE_BY_TYPE = {
    "Patient": f"{CANONICAL_BASE}/StructureDefinition/dac-patient",
    "ServiceRequest": f"{CANONICAL_BASE}/StructureDefinition/dac-servicerequest",
    "Consent": f"{CANONICAL_BASE}/StructureDefinition/dac-consent",
    "CareTeam": f"{CANONICAL_BASE}/StructureDefinition/dac-careteam",
    "PractitionerRole": f"{CANONICAL_BASE}/StructureDefinition/dac-practitionerrole",
    "Task": f"{CANONICAL_BASE}/StructureDefinition/dac-task",
    "MessageHeader": f"{CANONICAL_BASE}/StructureDefinition/dac-messageheader",
}
REFERRAL_MESSAGE_PROFILE = f"{CANONICAL_BASE}/StructureDefinition/dac-referral-message"
#: Message events whose Bundle is a referral message (profile dac-referral-message, profiles/README.md).
REFERRAL_MESSAGE_EVENTS = frozenset({"referral-request", "referral-update", "contact-gp"})

"""A resource cut down as ``_summary`` and ``_elements`` ask (R4 search.html#summary, #elements). Pure: which
top-level elements are summary or mandatory comes from the caller (the R4 StructureDefinitions,
``gateway.validation.definitions.element_flags``).

Whatever is asked, ``resourceType``, ``id`` and ``meta`` stay, and a cut resource says so: ``meta.tag`` SUBSETTED
(R4: a subsetted resource must carry it, so that nobody takes it for the whole and writes it back).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from gateway.fhir.search import Summary
from gateway.fhir.types import Resource

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
_ALWAYS = frozenset({"resourceType", "id", "meta"})


@dataclass(frozen=True, slots=True)
class ElementFlags:
    """A resource type's top-level element names (choice types as ``deceased[x]``) marked ``isSummary`` in R4, and
    those with a minimum cardinality above 0."""

    summary: frozenset[str]
    mandatory: frozenset[str]


def _named(key: str, names: Collection[str]) -> bool:
    """``key`` (a JSON property: ``birthDate``, ``_birthDate``, ``deceasedBoolean``) is one of the elements."""
    key = key.removeprefix("_")
    if key in names:
        return True
    return any(
        name.endswith("[x]") and key.startswith(name[:-3]) and key[len(name) - 3 : len(name) - 2].isupper()
        for name in names
    )


def _keep(resource: Resource, names: Iterable[str]) -> Resource:
    kept = _ALWAYS | set(names)
    content = {key: value for key, value in resource.items() if key in _ALWAYS or _named(key, kept)}
    meta = dict(content.get("meta") or {})
    tags = list(meta.get("tag") or [])
    if SUBSETTED not in tags:
        tags.append(dict(SUBSETTED))
    meta["tag"] = tags
    content["meta"] = meta
    return content


def subset(resource: Resource, summary: Summary, elements: Collection[str], flags: ElementFlags | None) -> Resource:
    """``resource`` as ``_summary`` (``true``, ``text``, ``data``) or ``_elements`` show it; as it is for
    ``_summary=false`` (or ``count``), or a ``true`` / ``text`` of a type whose definition is not carried (``flags``
    None: nothing known to cut by, the whole is shown rather than a guess)."""
    if elements:
        return _keep(resource, [*elements, *(flags.mandatory if flags else ())])
    if summary is Summary.DATA:
        return _keep(resource, (key for key in resource if key != "text"))
    if flags is None:
        return resource
    if summary is Summary.TRUE:
        return _keep(resource, flags.summary | flags.mandatory)
    if summary is Summary.TEXT:
        return _keep(resource, {"text"} | flags.mandatory)
    return resource

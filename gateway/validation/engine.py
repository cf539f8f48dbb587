"""The profile engine: StructureDefinition snapshots (profiles/ and profiles/r4/) compiled once into element
rules, then run over JSON as posted.

Compiling turns every snapshot element into an ``ElementRule`` (cardinality, types, reference targets,
fixed / pattern values, binding with its expansion, slicing, compiled invariants) and every complex type, backbone
element, extension or resource into a ``Node``: its children by JSON property name (``valueCoding`` →
``value[x]`` as Coding). Validating walks the JSON once against those nodes and reports every finding as an
``Issue`` with the FHIRPath of the element as posted (``Bundle.entry[3].resource.identifier[0].value``) and the
profile (canonical URL, and slice) that says so. Nothing here knows a rule of ours: they are all in the profiles.

Which profile applies to a resource: the one named by the caller (``$validate?profile=``, a slice's type
profile), else ours for its type (``PROFILE_BY_TYPE``; a referral message Bundle → ``dac-referral-message``), else
its R4 base; plus any ``meta.profile`` we know.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import Issue, IssueCode, IssueType, Severity
from gateway.fhir.models import model_class, model_issues
from gateway.fhir.outcome import CANONICAL_BASE
from gateway.fhir.types import Resource
from gateway.validation.definitions import (
    PROFILE_BY_TYPE,
    R4_BASE,
    REFERRAL_MESSAGE_EVENTS,
    REFERRAL_MESSAGE_PROFILE,
    Expansion,
    base_url,
    expansion,
    message_rules,
    structure_definitions,
)
from gateway.validation.invariants import Invariant, compile_invariant
from gateway.validation.narrative import narrative_problems
from gateway.validation.primitives import FHIR_TYPE_EXTENSION, primitive_type

Json = dict[str, Any]
_ABSENT = object()
#: A binding whose failures keep the code integrators already match on (stable codes, DESIGN §4).
BINDING_ISSUE_CODES = {f"{CANONICAL_BASE}/ValueSet/dac-mission": IssueCode.MISSION_INVALID}
_LITERAL_REFERENCE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?$")
_MESSAGE_EVENT_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/dac-message-event"


@dataclass(frozen=True, slots=True)
class Binding:
    strength: str
    valueset: str
    expansion: Expansion


@dataclass(frozen=True, slots=True)
class Discriminator:
    kind: str  # "value" (also "pattern") or "type"
    path: str


@dataclass(eq=False, slots=True)
class ElementRule:
    """One snapshot element, compiled."""

    id: str
    path: str
    name: str  # the last path step: "identifier", "value[x]"
    profile: str
    min: int
    max: int | None  # None: unbounded
    repeats: bool  # a JSON array (the base element repeats), whatever this profile's max
    types: tuple[str, ...]
    targets: frozenset[str] | None  # Reference target resource types; None: any
    type_profiles: tuple[str, ...]
    fixed: Any
    pattern: Any
    binding: Binding | None
    invariants: tuple[Invariant, ...]
    content_reference: str | None
    slice_name: str | None = None
    discriminators: tuple[Discriminator, ...] = ()
    closed: bool = False
    slices: list[ElementRule] = field(default_factory=list)
    children: list[ElementRule] = field(default_factory=list)
    #: for a slice: discriminator path → the value an item must have there to belong to it
    slice_values: dict[str, Any] = field(default_factory=dict)
    node: Node | None = None  # of the unrolled children, once built

    @property
    def is_choice(self) -> bool:
        return self.name.endswith("[x]")

    @property
    def label(self) -> str:
        return f"{self.profile}, slice {self.slice_name}" if self.slice_name else self.profile

    def check_count(self) -> int:
        """How many distinct checks this element compiles to (for the benchmark)."""
        count = 1 if self.min > 0 or self.max is not None else 0  # cardinality
        count += 1 if self.types else 0  # type (and primitive format)
        count += sum(x is not _ABSENT for x in (self.fixed, self.pattern))
        count += 1 if self.binding is not None else 0
        count += 1 if self.targets is not None else 0
        count += len(self.slices) + len(self.invariants)
        return count


@dataclass(eq=False, slots=True)
class Node:
    """A complex element's children, by the JSON property names they take."""

    profile: str
    rules: tuple[ElementRule, ...]
    properties: dict[str, tuple[ElementRule, str]]
    choices: dict[str, ElementRule]  # "value" → value[x], to name a wrong type
    invariants: tuple[Invariant, ...]
    is_resource: bool = False


def _type_code(type_: Json) -> str:
    code = str(type_["code"])
    if code.startswith("http://hl7.org/fhirpath/System."):
        for extension in type_.get("extension") or []:
            if extension.get("url") == FHIR_TYPE_EXTENSION:
                return str(extension["valueUrl"])
        return "string"
    return code


def _first_prefixed(element: Json, prefix: str) -> Any:
    for key, value in element.items():
        if key.startswith(prefix) and key[len(prefix) : len(prefix) + 1].isupper():
            return value
    return _ABSENT


def _max(value: str | None) -> int | None:
    return None if value in (None, "*") else int(str(value))


class Engine:
    """Every StructureDefinition we carry, compiled on first use and kept; then validation is a walk."""

    def __init__(self, definitions: dict[str, Json] | None = None) -> None:
        """``definitions``: StructureDefinitions by URL (default: all of profiles/ and profiles/r4/)."""
        self._definitions = structure_definitions() if definitions is None else definitions
        self._roots: dict[str, ElementRule] = {}
        self._rules_by_id: dict[str, dict[str, ElementRule]] = {}
        self._nodes: dict[str, Node] = {}
        self._invariants: dict[tuple[str, str, str], Invariant | None] = {}
        # Definitions are fixed once loaded: the kinds are read once (asked for every resource and reference).
        self._resource_types = {"Resource"} | {
            str(definition["type"])
            for url, definition in self._definitions.items()
            if definition.get("kind") == "resource" and url == base_url(str(definition.get("type")))
        }

    # -- compiling ----------------------------------------------------------------------------------------------

    def knows(self, url: str) -> bool:
        return url in self._definitions

    def type_of(self, url: str) -> str | None:
        definition = self._definitions.get(url)
        return str(definition["type"]) if definition else None

    def is_resource_type(self, type_code: str) -> bool:
        return type_code in self._resource_types

    def compile_all(self) -> None:
        for url in self._definitions:
            if self._definitions[url].get("kind") != "primitive-type":
                self.node(url)

    def _targets(self, types: list[Json]) -> frozenset[str] | None:
        found: set[str] = set()
        for type_ in types:
            if type_.get("code") != "Reference":
                continue
            for url in type_.get("targetProfile") or []:
                target = self.type_of(url) or (url.removeprefix(R4_BASE) if url.startswith(R4_BASE) else None)
                if target is None or target == "Resource":
                    return None
                found.add(target)
        return frozenset(found) or None

    def _invariant(self, constraint: Json, profile: str) -> Invariant | None:
        key = (str(constraint.get("key")), str(constraint.get("expression")), str(constraint.get("source", profile)))
        if key not in self._invariants:
            self._invariants[key] = compile_invariant(constraint, profile)
        return self._invariants[key]

    def _rule(self, element: Json, profile: str) -> ElementRule:
        types = element.get("type") or []
        binding = element.get("binding")
        compiled_binding = None
        if isinstance(binding, dict) and binding.get("strength") in ("required", "extensible"):
            found = expansion(str(binding.get("valueSet", "")))
            if found is not None:
                compiled_binding = Binding(str(binding["strength"]), found.url, found)
        slicing = element.get("slicing") or {}
        invariants = tuple(
            invariant for c in element.get("constraint") or [] if (invariant := self._invariant(c, profile))
        )
        return ElementRule(
            id=str(element["id"]),
            path=str(element["path"]),
            name=str(element["path"]).rsplit(".", 1)[-1],
            profile=profile,
            min=int(element.get("min", 0)),
            max=_max(element.get("max")),
            repeats=(element.get("base") or {}).get("max", element.get("max")) != "1",
            types=tuple(_type_code(t) for t in types),
            targets=self._targets(types),
            type_profiles=tuple(str(p) for t in types for p in t.get("profile") or []),
            fixed=_first_prefixed(element, "fixed"),
            pattern=_first_prefixed(element, "pattern"),
            binding=compiled_binding,
            invariants=invariants,
            content_reference=element.get("contentReference"),
            slice_name=element.get("sliceName"),
            discriminators=tuple(
                Discriminator(str(d["type"]), str(d["path"])) for d in slicing.get("discriminator") or []
            ),
            closed=slicing.get("rules") == "closed",
        )

    def _compile(self, url: str) -> ElementRule:
        definition = self._definitions[url]
        rules: dict[str, ElementRule] = {}
        root: ElementRule | None = None
        is_resource = definition.get("kind") == "resource"
        for element in definition["snapshot"]["element"]:
            rule = self._rule(element, url)
            if is_resource and rule.path.count(".") == 1 and rule.name == "id":
                # R4's snapshots type Resource.id as a string; the specification (resource.html) makes it an id.
                rule.types = ("id",)
            rules[rule.id] = rule
            head, _, last = rule.id.rpartition(".")
            if ":" in last:  # a slice of the element with the same id, less the slice name
                rules[f"{head}.{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]].slices.append(rule)
            elif head:
                rules[head].children.append(rule)
            else:
                root = rule
        assert root is not None
        for rule in rules.values():
            if rule.slices:
                for slice_ in rule.slices:
                    slice_.discriminators = rule.discriminators
                    slice_.slice_values = self._slice_values(slice_, rule.discriminators)
        self._rules_by_id[url] = rules
        return root

    def _slice_values(self, slice_: ElementRule, discriminators: tuple[Discriminator, ...]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for discriminator in discriminators:
            child = next((c for c in slice_.children if c.name == discriminator.path), None)
            if discriminator.kind == "type":
                source = child if child is not None else slice_
                values[discriminator.path] = source.types[0] if source.types else None
            elif child is not None and (child.fixed is not _ABSENT or child.pattern is not _ABSENT):
                values[discriminator.path] = child.fixed if child.fixed is not _ABSENT else child.pattern
            elif discriminator.path == "url" and slice_.type_profiles:
                values["url"] = slice_.type_profiles[0]  # an extension slice: its definition's URL
        return values

    def root(self, url: str) -> ElementRule:
        if url not in self._roots:
            self._roots[url] = self._compile(url)
        return self._roots[url]

    def node(self, url: str) -> Node:
        """The compiled root of a StructureDefinition (a resource, data type or extension)."""
        if url not in self._nodes:
            root = self.root(url)
            is_resource = self._definitions[url].get("kind") == "resource"
            self._nodes[url] = self._build_node(root.children, url, root.invariants, is_resource)
        return self._nodes[url]

    def _build_node(
        self, children: list[ElementRule], profile: str, invariants: tuple[Invariant, ...], is_resource: bool = False
    ) -> Node:
        properties: dict[str, tuple[ElementRule, str]] = {}
        choices: dict[str, ElementRule] = {}
        for rule in children:
            if rule.is_choice:
                stem = rule.name[:-3]
                choices[stem] = rule
                for type_code in rule.types:
                    properties[stem + type_code[0].upper() + type_code[1:]] = (rule, type_code)
            else:
                properties[rule.name] = (rule, rule.types[0] if rule.types else "BackboneElement")
        return Node(profile, tuple(children), properties, choices, invariants, is_resource)

    def element_node(self, rule: ElementRule, type_code: str) -> Node:
        """What is inside one element of ``rule`` taking ``type_code``."""
        if rule.node is not None:
            return rule.node
        if rule.children:
            rule.node = self._build_node(rule.children, rule.profile, ())
            return rule.node
        if rule.content_reference:
            target = self._rules_by_id[rule.profile][rule.content_reference.lstrip("#")]
            return self.element_node(target, type_code)
        if type_code == "Extension" and rule.type_profiles and self.knows(rule.type_profiles[0]):
            return self.node(rule.type_profiles[0])
        return self.node(base_url(type_code))

    def check_count(self) -> int:
        """Distinct checks compiled so far: per element, each cardinality, type, fixed / pattern, binding, target
        type, slice and invariant."""
        return sum(rule.check_count() for rules in self._rules_by_id.values() for rule in rules.values())

    # -- validating ---------------------------------------------------------------------------------------------

    def validate(self, resource: Resource, profile: str | None = None) -> list[Issue]:
        """Every finding on a resource (a Bundle and everything in it), errors and warnings."""
        walk = _Walk(self, resource)
        root = str(resource.get("resourceType"))
        walk.resource(resource, root, (profile,) if profile else ())
        return walk.issues

    def profile_for(self, resource: Resource) -> str:
        resource_type = str(resource.get("resourceType"))
        if resource_type == "Bundle" and message_event(resource) in REFERRAL_MESSAGE_EVENTS:
            return REFERRAL_MESSAGE_PROFILE
        return PROFILE_BY_TYPE.get(resource_type, base_url(resource_type))


def message_event(bundle: Resource) -> str | None:
    """The dac-message-event code of a message Bundle's MessageHeader (None for anything else)."""
    entries = bundle.get("entry")
    if bundle.get("type") != "message" or not isinstance(entries, list) or not entries:
        return None
    first = entries[0].get("resource") if isinstance(entries[0], dict) else None
    event = first.get("eventCoding") if isinstance(first, dict) else None
    if isinstance(event, dict) and event.get("system") == _MESSAGE_EVENT_SYSTEM:
        return str(event.get("code"))
    return None


def _text(value: Any) -> str | None:
    """A string as posted, else None (its own finding is the type check's)."""
    return value if isinstance(value, str) else None


def _matches_pattern(value: Any, pattern: Any) -> bool:
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(_matches_pattern(value.get(k, _ABSENT), v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_matches_pattern(v, p) for v in value) for p in pattern)
    return bool(value == pattern)


def _issue(
    code: IssueCode, diagnostics: str, expression: str, issue_type: IssueType, severity: Severity = "error"
) -> Issue:
    return Issue(code, diagnostics, expression, issue_type, severity)


class _Walk:
    """One validation: the JSON walked once, findings collected."""

    def __init__(self, engine: Engine, root: Resource) -> None:
        self.engine = engine
        self.root = root
        self.issues: list[Issue] = []
        self.targets: dict[str, str] = {}  # fullUrl → resource type, for references inside the bundle
        self.profile = ""  # of the resource being walked, for the diagnostics

    def add(self, *args: Any) -> None:
        self.issues.append(_issue(*args))

    # resources

    def resource(self, resource: Json, expression: str, profiles: tuple[str, ...]) -> None:
        resource_type = resource.get("resourceType")
        known = isinstance(resource_type, str) and self.engine.is_resource_type(resource_type)
        if isinstance(resource_type, str) and not known and model_class(resource_type) is not None:
            # An R4 type whose definition profiles/r4/ does not carry: the fhir.resources model checks it.
            self.issues.extend(model_issues(resource, expression))
            return
        if not isinstance(resource_type, str) or not self.engine.is_resource_type(resource_type):
            self.add(
                IssueCode.RESOURCE_TYPE_UNKNOWN,
                f"resourceType {resource_type!r} is not a resource type the validator knows",
                f"{expression}.resourceType",
                "not-supported",
            )
            return
        chosen = [p for p in profiles if self.engine.knows(p)] or [self.engine.profile_for(resource)]
        meta = resource.get("meta")
        for declared in (meta.get("profile") if isinstance(meta, dict) else None) or []:
            if isinstance(declared, str) and self.engine.knows(declared) and declared not in chosen:
                chosen.append(declared)
        if resource_type == "Bundle":
            self._index_bundle(resource)
        for index, url in enumerate(chosen):
            if self.engine.type_of(url) != resource_type:
                self.add(
                    IssueCode.PROFILE_TYPE_MISMATCH,
                    f"profile {url} is for {self.engine.type_of(url)}, not {resource_type}",
                    expression,
                    "structure",
                )
                continue
            before, outer = len(self.issues), self.profile
            self.profile = url
            node = self.engine.node(url)
            self.element(resource, node, expression, resource)
            self.invariants(resource, node.invariants, expression, resource, url)
            self.profile = outer
            if index and len(self.issues) > before:  # a second profile: keep what it adds, once
                seen = {(i.code, i.expression) for i in self.issues[:before]}
                self.issues[before:] = [i for i in self.issues[before:] if (i.code, i.expression) not in seen]
        if resource_type == "Bundle":
            self._message_definition(resource)

    def _index_bundle(self, bundle: Json) -> None:
        entries = bundle.get("entry")
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("fullUrl"), str):
                resource = entry.get("resource")
                if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                    # with two entries on one fullUrl (an error of its own), the first one is the target
                    self.targets.setdefault(entry["fullUrl"], resource["resourceType"])
                    if isinstance(resource.get("id"), str):
                        self.targets.setdefault(
                            f"{resource['resourceType']}/{resource['id']}", resource["resourceType"]
                        )

    def _message_definition(self, bundle: Json) -> None:
        """A message Bundle against the MessageDefinition of its event: focus, and the resource types allowed."""
        event = message_event(bundle)
        rule = message_rules().get((_MESSAGE_EVENT_SYSTEM, event or ""))
        if rule is None:
            return
        header = bundle["entry"][0]["resource"]
        focus = header.get("focus") if isinstance(header.get("focus"), list) else []
        focus_types = [self._target_type(f.get("reference")) if isinstance(f, dict) else None for f in focus]
        in_focus = [t for t in focus_types if t in rule.focus_types]
        if len(in_focus) < rule.focus_min or (rule.focus_max is not None and len(in_focus) > rule.focus_max):
            self.add(
                IssueCode.MESSAGE_FOCUS_INVALID,
                f"MessageHeader.focus must reference {rule.focus_min}..{rule.focus_max or '*'} "
                f"{'/'.join(sorted(rule.focus_types))} of the bundle (MessageDefinition {rule.definition})",
                "Bundle.entry[0].resource.focus",
                "business-rule",
            )
        for index, entry in enumerate(bundle["entry"]):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
            if isinstance(resource_type, str) and resource_type not in rule.allowed_types:
                self.add(
                    IssueCode.RESOURCE_TYPE_NOT_ALLOWED,
                    f"a {event} message does not carry {resource_type} (MessageDefinition {rule.definition}, its "
                    f"GraphDefinition allows {', '.join(sorted(rule.allowed_types))})",
                    f"Bundle.entry[{index}].resource",
                    "business-rule",
                )

    def _target_type(self, reference: Any) -> str | None:
        if not isinstance(reference, str):
            return None
        if reference in self.targets:
            return self.targets[reference]
        match = _LITERAL_REFERENCE.search(reference)
        return match.group(1) if match else None

    # elements

    def element(self, item: Json, node: Node, expression: str, resource: Json) -> None:
        """The properties of one JSON object against its node: unknown ones, cardinality, then each value."""
        found: dict[ElementRule, list[tuple[str, Any, str]]] = {}
        wrong_choice: set[ElementRule] = set()
        for key, value in item.items():
            prop = node.properties.get(key)
            if prop is not None:
                found.setdefault(prop[0], []).append((key, value, prop[1]))
                continue
            if key == "resourceType" and node.is_resource:
                continue
            if key.startswith("_") and key[1:] in node.properties:
                companion_of = node.properties[key[1:]]
                self.companion(value, companion_of, f"{expression}.{key[1:]}", resource, item.get(key[1:]))
                continue
            choice = next(
                (r for stem, r in node.choices.items() if key.startswith(stem) and key[len(stem) :][:1].isupper()), None
            )
            if choice is not None:
                wrong_choice.add(choice)
                allowed = ", ".join(choice.name[:-3] + t[0].upper() + t[1:] for t in choice.types)
                self.add(
                    IssueCode.TYPE_INVALID,
                    f"{choice.path} takes {allowed}, not {key} ({choice.label})",
                    f"{expression}.{key}",
                    "structure",
                )
                continue
            self.add(
                IssueCode.ELEMENT_UNKNOWN,
                f"Unknown element {key!r} at {expression} ({self.profile})",
                f"{expression}.{key}",
                "structure",
            )
        for rule in node.rules:
            entries = found.get(rule)
            if entries is None:
                if rule.min and rule not in wrong_choice and not self._companion_only(item, rule):
                    self.add(
                        IssueCode.ELEMENT_REQUIRED,
                        f"Missing required element {rule.path} (min {rule.min}; {rule.label})",
                        f"{expression}.{rule.name.removesuffix('[x]')}",
                        "required",
                    )
                continue
            if len(entries) > 1:  # valueString and valueCode: one choice, two values
                self.add(
                    IssueCode.CARDINALITY_MAX,
                    f"{rule.path} takes one type, not {', '.join(k for k, _, _ in entries)} ({rule.label})",
                    f"{expression}.{entries[1][0]}",
                    "structure",
                )
            key, value, type_code = entries[0]
            self.values(value, rule, type_code, f"{expression}.{key}", resource, item.get(f"_{key}"))

    def _companion_only(self, item: Json, rule: ElementRule) -> bool:
        """A primitive sent only as its ``_name`` (extensions, no value) is present."""
        return f"_{rule.name}" in item

    def values(
        self, value: Any, rule: ElementRule, type_code: str, expression: str, resource: Json, companion: Any = None
    ) -> None:
        """``companion``: the ``_name`` list of a repeated primitive, whose entries stand for the values that are
        null (R4 json.html#primitive: a repeat with an extension and no value is null in the value list); that such
        an entry has an extension, and the lists one length, ``companion()`` checks."""
        if rule.repeats:
            if not isinstance(value, list):
                self.add(IssueCode.VALUE_INVALID, f"{rule.path} is a list in FHIR JSON", expression, "value")
                return
            items = [(item, f"{expression}[{index}]") for index, item in enumerate(value)]
        else:
            if isinstance(value, list):
                self.add(IssueCode.VALUE_INVALID, f"{rule.path} is a single value, not a list", expression, "value")
                return
            items = [(value, expression)]
        if not items:
            code = IssueCode.ELEMENT_REQUIRED if rule.min else IssueCode.VALUE_INVALID
            self.add(code, f"{rule.path}: a list in FHIR JSON is never empty ({rule.label})", expression, "required")
            return
        if 0 < len(items) < rule.min:
            self.add(
                IssueCode.CARDINALITY_MIN,
                f"{rule.path} needs at least {rule.min}, found {len(items)} ({rule.label})",
                expression,
                "structure",
            )
        if rule.max is not None and len(items) > rule.max:
            self.add(
                IssueCode.CARDINALITY_MAX,
                f"{rule.path} allows at most {rule.max}, found {len(items)} ({rule.label})",
                expression,
                "structure",
            )
        if isinstance(companion, list) and rule.repeats:
            items = [
                (item, where)
                for index, (item, where) in enumerate(items)
                if not (item is None and index < len(companion) and isinstance(companion[index], dict))
            ]
        if rule.slices:
            self.sliced(items, rule, type_code, expression, resource)
            return
        for item, where in items:
            self.value(item, rule, type_code, where, resource)

    def sliced(
        self, items: list[tuple[Any, str]], rule: ElementRule, type_code: str, expression: str, resource: Json
    ) -> None:
        counts = dict.fromkeys(rule.slices, 0)
        for item, where in items:
            slice_ = next((s for s in rule.slices if self._in_slice(item, s)), None)
            if slice_ is None:
                if rule.closed:
                    self.add(
                        IssueCode.SLICE_CARDINALITY,
                        f"{rule.path} is closed: this item is in none of its slices ({rule.label})",
                        where,
                        "structure",
                    )
                self.value(item, rule, type_code, where, resource)
                continue
            counts[slice_] += 1
            self.value(item, slice_, slice_.types[0] if len(slice_.types) == 1 else type_code, where, resource)
        for slice_, count in counts.items():
            if count < slice_.min or (slice_.max is not None and count > slice_.max):
                bounds = f"{slice_.min}..{'*' if slice_.max is None else slice_.max}"
                self.add(
                    IssueCode.SLICE_CARDINALITY,
                    f"slice {slice_.slice_name} of {rule.path} takes {bounds} items, found {count} ({slice_.label})",
                    expression,
                    "structure",
                )

    @staticmethod
    def _in_slice(item: Any, slice_: ElementRule) -> bool:
        if not isinstance(item, dict) or not slice_.slice_values:
            return False
        for discriminator in slice_.discriminators:
            wanted = slice_.slice_values.get(discriminator.path, _ABSENT)
            actual = item.get(discriminator.path)
            if discriminator.kind == "type":
                actual = actual.get("resourceType") if isinstance(actual, dict) else None
            if wanted is _ABSENT or not _matches_pattern(actual, wanted):
                return False
        return True

    def value(self, item: Any, rule: ElementRule, type_code: str, expression: str, resource: Json) -> None:
        """One value of an element: its type, fixed / pattern, binding, reference target, then its inside."""
        primitive = primitive_type(type_code)
        if primitive is not None:
            problem = primitive.problem(item)
            if problem is not None:
                kind, why = problem
                if kind == "type":
                    self.add(IssueCode.TYPE_INVALID, f"{why} ({rule.path}; {self.profile})", expression, "structure")
                else:
                    self.add(IssueCode.VALUE_INVALID, f"{why} ({rule.path}; {self.profile})", expression, "value")
                return
            self.fixed_and_pattern(item, rule, expression)
            if rule.binding is not None and type_code == "code":
                self.binding_code(item, rule, expression)
            if type_code == "xhtml":  # txt-1, txt-2: Narrative.div's invariants, checked natively
                for key, why in narrative_problems(item):
                    self.add(IssueCode.INVARIANT_FAILED, f"{key}: {why} ({rule.path})", expression, "invariant")
            return
        if not isinstance(item, dict):
            what = "a resource" if self.engine.is_resource_type(type_code) else f"a {type_code}"
            self.add(
                IssueCode.TYPE_INVALID,
                f"{rule.path} is {what}: a JSON object, not {type(item).__name__}",
                expression,
                "structure",
            )
            return
        if not item:
            self.add(
                IssueCode.VALUE_INVALID,
                f"{rule.path} is empty: an element has a value or children (ele-1)",
                expression,
                "value",
            )
            return
        if self.engine.is_resource_type(type_code):
            profiles = rule.type_profiles if type_code != "Resource" else ()
            self.resource(item, expression, profiles)
            return
        self.fixed_and_pattern(item, rule, expression)
        if rule.binding is not None and type_code in ("Coding", "CodeableConcept"):
            self.binding_concept(item, rule, type_code, expression)
        if type_code == "Reference" and rule.targets is not None:
            self.reference_target(item, rule, expression)
        if type_code == "Extension":
            node = self.extension_node(item, rule, expression)
            if node is None:
                return
            if ("extension" in item) == any(k.startswith("value") for k in item):
                self.add(
                    IssueCode.INVARIANT_FAILED,
                    "ext-1: an extension has a value or extensions, not both and not neither",
                    expression,
                    "invariant",
                )
        else:
            node = self.engine.element_node(rule, type_code)
        self.element(item, node, expression, resource)
        extra = node.invariants + tuple(i for i in rule.invariants if i not in node.invariants)
        self.invariants(item, extra, expression, resource, rule.profile)

    def extension_node(self, item: Json, rule: ElementRule, expression: str) -> Node | None:
        if rule.type_profiles and self.engine.knows(rule.type_profiles[0]):
            return self.engine.node(rule.type_profiles[0])
        url = item.get("url")
        if isinstance(url, str) and self.engine.type_of(url) == "Extension":
            return self.engine.node(url)
        if isinstance(url, str) and url.startswith(f"{CANONICAL_BASE}/"):
            self.add(
                IssueCode.EXTENSION_UNKNOWN,
                f"{url} is no extension we define (profiles/ under {CANONICAL_BASE})",
                f"{expression}.url",
                "structure",
            )
            return None
        return self.engine.element_node(rule, "Extension")

    def companion(
        self, value: Any, prop: tuple[ElementRule, str], expression: str, resource: Json, values: Any = None
    ) -> None:
        """``_birthDate``: the id and extensions of a primitive (a list of them, null-padded, for a list);
        ``values``: the primitive's own value (list), None when absent."""
        rule, type_code = prop
        element = self.engine.node(base_url("Element"))
        items = value if rule.repeats and isinstance(value, list) else [value]
        if rule.repeats != isinstance(value, list) or primitive_type(type_code) is None:
            self.add(IssueCode.VALUE_INVALID, f"_{rule.name} does not match {rule.path}", expression, "value")
            return
        if rule.repeats and isinstance(values, list) and len(values) != len(items):
            # R4 json.html#primitive pairs the two lists by position: of unequal length, which entry is whose is
            # anyone's guess (a reader pairing them differently moves an extension to another value).
            self.add(
                IssueCode.VALUE_INVALID,
                f"_{rule.name} has {len(items)} entries for {len(values)} values of {rule.path}: one each, null "
                "where there is none (R4 json.html#primitive)",
                expression,
                "structure",
            )
        for index, item in enumerate(items):
            where = f"{expression}[{index}]" if rule.repeats else expression
            if item is None and rule.repeats:
                continue
            if not isinstance(item, dict) or not item:
                self.add(IssueCode.TYPE_INVALID, f"_{rule.name} holds an id and extensions", where, "structure")
                continue
            if rule.repeats:
                own = values[index] if isinstance(values, list) and index < len(values) else None
            else:
                own = values
            if own is None and not item.get("extension"):
                # Without a value, the element's children are all it has, and an id is not one (ele-1:
                # hasValue() or children().count() > id.count()).
                self.add(
                    IssueCode.VALUE_INVALID,
                    f"{rule.path} has no value and _{rule.name} no extension: an element has a value or children "
                    "(ele-1)",
                    where,
                    "value",
                )
            self.element(item, element, where, resource)

    def fixed_and_pattern(self, item: Any, rule: ElementRule, expression: str) -> None:
        if rule.fixed is not _ABSENT and item != rule.fixed:
            self.add(
                IssueCode.FIXED_VALUE_MISMATCH,
                f"{rule.path} must be exactly {rule.fixed!r:.80} ({rule.label})",
                expression,
                "value",
            )
        if rule.pattern is not _ABSENT and not _matches_pattern(item, rule.pattern):
            self.add(
                IssueCode.PATTERN_MISMATCH,
                f"{rule.path} must match the pattern {rule.pattern!r:.80} ({rule.label})",
                expression,
                "value",
            )

    def _binding_issue(self, rule: ElementRule, shown: str, expression: str) -> None:
        assert rule.binding is not None
        required = rule.binding.strength == "required"
        code = BINDING_ISSUE_CODES.get(rule.binding.valueset) if required else None
        self.add(
            code or (IssueCode.BINDING_REQUIRED if required else IssueCode.BINDING_EXTENSIBLE),
            f"{shown} is not in ValueSet {rule.binding.valueset} ({rule.binding.strength} binding of {rule.path}; "
            f"{rule.label})",
            expression,
            "code-invalid",
            "error" if required else "warning",
        )

    def binding_code(self, item: str, rule: ElementRule, expression: str) -> None:
        assert rule.binding is not None
        found = rule.binding.expansion
        if not found.unexpanded and item not in found.bare_codes:
            self._binding_issue(rule, repr(item), expression)

    def binding_concept(self, item: Json, rule: ElementRule, type_code: str, expression: str) -> None:
        assert rule.binding is not None
        found = rule.binding.expansion
        if type_code == "Coding":
            codings: list[tuple[Any, str]] = [(item, expression)]
        else:
            raw = item.get("coding")
            codings = [(c, f"{expression}.coding[{i}]") for i, c in enumerate(raw if isinstance(raw, list) else [])]
            if not codings and rule.binding.strength == "extensible":
                return  # text alone: extensible allows it
        pairs = [(_text(c.get("system")), _text(c.get("code")), where) for c, where in codings if isinstance(c, dict)]
        if any(system in found.unexpanded for system, _, _ in pairs):
            return  # a code of a system nobody enumerated: cannot be decided
        if any((system, code) in found.codes for system, code, _ in pairs):
            return
        systems = {system for system, _ in found.codes}
        where = next((f"{w}.code" for system, _, w in pairs if system in systems), expression)
        shown = ", ".join(f"{s}#{c}" for s, c, _ in pairs) or "a concept without coding"
        self._binding_issue(rule, shown, where)

    def reference_target(self, item: Json, rule: ElementRule, expression: str) -> None:
        assert rule.targets is not None
        target = self._target_type(item.get("reference"))
        if target is not None and target not in rule.targets:
            self.add(
                IssueCode.REFERENCE_TARGET_INVALID,
                f"{rule.path} references a {target}; allowed: {', '.join(sorted(rule.targets))} ({rule.label})",
                f"{expression}.reference",
                "structure",
            )

    def invariants(
        self, item: Json, invariants: tuple[Invariant, ...], expression: str, resource: Json, profile: str
    ) -> None:
        for invariant in invariants:
            holds = invariant.check(item, resource, self.root)
            if holds is None:
                self.add(
                    IssueCode.INVARIANT_NOT_EVALUATED,
                    f"invariant {invariant.key} could not be evaluated here ({invariant.source})",
                    expression,
                    "invariant",
                    "warning",
                )
            elif not holds:
                self.add(
                    IssueCode.INVARIANT_FAILED,
                    f"{invariant.key}: {invariant.human} ({invariant.source})",
                    expression,
                    "invariant",
                    invariant.severity,
                )


@functools.cache
def engine() -> Engine:
    """The engine, compiled once per process (start-up warms it: ``warm_up``)."""
    compiled = Engine()
    compiled.compile_all()
    return compiled


def warm_up() -> None:
    engine().validate({"resourceType": "Patient", "name": [{"family": "X"}]})


def iter_rules(compiled: Engine) -> Iterator[ElementRule]:
    for rules in compiled._rules_by_id.values():
        yield from rules.values()

"""The one engine that turns a non-FHIR document into the referral Bundle a FHIR sender would post, by rules kept as
data (``mappings/hl7v2/*.toml``, ``mappings/cda/*.toml``, code maps as CSV beside them).

A mapping file names the resources it builds and the rules that fill them::

    [resources.patient]                 # a key, used by the rules and by references ("@patient")
    type = "Patient"
    required = true                     # emitted even when no rule filled it (else: only when one did,
    with = "gp"                         #   or, with ``with``, when that other resource is emitted)

    [[rules]]
    each = "PID-3"                      # what the rule runs on, once per match: a v2 segment or field
                                        #   repetition, a CDA XPath
    when = { "4.2" = "1.2.250.1.213.1.4.8" }   # relative values it needs (a list: any of them)
    into = "patient.identifier[+]"      # the element it fills: a resource key, then a path ([+] appends)
    [rules.set]                         # paths under it → templates
    system = "urn:oid:1.2.250.1.213.1.4.8"
    value = "{1}"                       # {selector|transform|…}: a value of the match; a list: the first
                                        #   alternative all of whose placeholders have a value
    "type.coding[0].code" = "INS-NIR"

    [[checks]]                          # what the document must hold, or the issue reported
    each = "RF1"
    value = "{1}"
    allowed = ["P", "A"]
    code = "referral-status-unsupported"
    message = "…"

Transforms: ``date`` and ``datetime`` (an HL7 TS or CDA TS to FHIR), ``map:NAME`` (the code map ``NAME.csv``:
the value of the ``target`` column on the row whose ``code`` is the value; unmapped values go through as they
are, and the validation then names them), ``words`` (a list, split on spaces), ``uri`` (percent-encoded),
``base64``, ``strip:PREFIX``. ``@key`` is a reference to that resource's entry (dropped when it is not
emitted). An element a rule creates with ``[+]`` is kept only when at least one of its templates had a value. A
key's ``#n`` suffix is ignored: it lets one path be filled twice (``given[+]``, then ``given[+]#2``).

What a format provides is a ``Source`` (``gateway.inbound.hl7v2``, ``gateway.inbound.cda``): matches for a
selector, values and locations (v2 ERL, CDA XPath) relative to a match. The engine records where each element
came from, so an issue the intake reports at ``Bundle.entry[1].resource.birthDate`` is reported at ``PID^1^7``.
"""

from __future__ import annotations

import base64
import csv
import re
import tomllib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from gateway.errors import Issue, IssueCode
from gateway.fhir.types import Resource


class Match(Protocol):
    """One match of a rule's ``each`` in the document."""

    def value(self, selector: str) -> str | None: ...

    def location(self, selector: str | None = None) -> str: ...


class Source(Protocol):
    @property
    def document(self) -> bytes: ...

    def each(self, selector: str) -> Sequence[Match]: ...

    def location(self, selector: str) -> str:
        """Where ``selector`` would be, when nothing matches it."""
        ...


class MappingError(ValueError):
    """A mapping file that cannot be read: start-up stops with the file and the reason."""


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    key: str
    type: str
    required: bool = False
    with_: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    each: str
    into: str
    set: dict[str, Any]
    when: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Check:
    each: str
    value: str
    code: IssueCode
    message: str
    allowed: tuple[str, ...] | None = None  # None: a value is required


@dataclass(frozen=True, slots=True)
class Mapping:
    name: str
    resources: dict[str, ResourceSpec]
    rules: list[Rule]
    checks: list[Check]
    codes: dict[str, dict[str, str]]
    header: dict[str, Any]  # the format's own table ([message] for v2, [document] for CDA)


def load_mapping(path: Path, codes_dir: Path | None = None) -> Mapping:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MappingError(f"{path.name}: {exc}") from exc
    resources = {
        key: ResourceSpec(key, str(spec["type"]), bool(spec.get("required", False)), spec.get("with"))
        for key, spec in (data.get("resources") or {}).items()
    }
    rules = []
    for number, raw in enumerate(data.get("rules") or [], 1):
        try:
            target = str(raw["into"])
            if target.split(".", 1)[0].split("[", 1)[0] not in {*resources, "bundle"}:
                raise MappingError(f"{path.name}: rule {number} fills {target!r}, not a declared resource")
            when = {
                str(k): [str(v)] if not isinstance(v, list) else [str(x) for x in v]
                for k, v in (raw.get("when") or {}).items()
            }
            rules.append(Rule(str(raw["each"]), target, dict(raw.get("set") or {}), when))
        except KeyError as exc:
            raise MappingError(f"{path.name}: rule {number} lacks {exc.args[0]!r}") from exc
    checks = []
    for number, raw in enumerate(data.get("checks") or [], 1):
        try:
            allowed = raw.get("allowed")
            checks.append(
                Check(
                    str(raw["each"]),
                    str(raw.get("value", "")),
                    IssueCode(raw["code"]),
                    str(raw["message"]),
                    tuple(str(a) for a in allowed) if allowed is not None else None,
                )
            )
        except (KeyError, ValueError) as exc:
            raise MappingError(f"{path.name}: check {number}: {exc}") from exc
    codes: dict[str, dict[str, str]] = {}
    for csv_path in sorted((codes_dir or path.parent / "codes").glob("*.csv")):
        with csv_path.open(encoding="utf-8", newline="") as handle:
            codes[csv_path.stem] = {row["code"]: row["target"] for row in csv.DictReader(handle) if row.get("code")}
    header = {k: v for k, v in data.items() if k not in ("resources", "rules", "checks")}
    return Mapping(path.stem, resources, rules, checks, codes, header)


# ---------------------------------------------------------------------------------------------------------------
# Templates


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_STEP = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+|\+)\])?$")


@dataclass(frozen=True, slots=True)
class _Ref:
    key: str


def _ts(value: str, *, with_time: bool) -> str:
    """An HL7 v2 / CDA TS (``YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]``) as a FHIR date or dateTime; as it came when it
    is not one (the validation then names it)."""
    found = re.fullmatch(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d+)?([+-]\d{4})?", value.strip())
    if not found:
        return value
    year, month, day, hour, minute, second, fraction, zone = found.groups()
    date = "-".join(part for part in (year, month, day) if part)
    if not with_time or hour is None or day is None:
        return date
    time = f"{hour}:{minute or '00'}:{second or '00'}{fraction or ''}"
    offset = f"{zone[:3]}:{zone[3:]}" if zone else "+01:00"  # French systems send local time; Paris in winter
    return f"{date}T{time}{offset}"


def _transform(value: Any, name: str, codes: dict[str, dict[str, str]]) -> Any:
    if name == "date":
        return _ts(str(value), with_time=False)
    if name == "datetime":
        return _ts(str(value), with_time=True)
    if name == "words":
        return str(value).split()
    if name == "uri":
        return quote(str(value), safe="")
    if name == "upper":
        return str(value).upper()
    if name == "base64":
        return base64.b64encode(value if isinstance(value, bytes) else str(value).encode()).decode("ascii")
    if name.startswith("strip:"):
        return str(value).removeprefix(name[6:])
    if name.startswith("map:"):
        return codes.get(name[4:], {}).get(str(value), value)
    raise MappingError(f"unknown transform {name!r}")


def _render(template: Any, match: Match, source: Source, codes: dict[str, dict[str, str]]) -> tuple[Any, str | None]:
    """A template's value (None when one of its placeholders has none) and the selector it was read from."""
    if isinstance(template, list):
        first_selector = None
        for alternative in template:
            found, where = _render(alternative, match, source, codes)
            first_selector = first_selector or where
            if found is not None:
                return found, where
        return None, first_selector
    if not isinstance(template, str):
        return template, None
    if template.startswith("@"):
        return _Ref(template[1:]), None
    placeholders = list(_PLACEHOLDER.finditer(template))
    if not placeholders:
        return template, None
    values: list[Any] = []
    selector = None
    for placeholder in placeholders:
        selector_text, *transforms = [part.strip() for part in placeholder.group(1).split("|")]
        selector = selector or selector_text
        value: Any = source.document if selector_text == "$document" else match.value(selector_text)
        if value is None or value == "" or value == b"":
            return None, selector
        for name in transforms:
            value = _transform(value, name, codes)
        values.append(value)
    if len(placeholders) == 1 and placeholders[0].group(0) == template:
        return values[0], selector
    text = template
    for placeholder, value in zip(reversed(placeholders), reversed(values), strict=True):
        text = text[: placeholder.start()] + str(value) + text[placeholder.end() :]
    return text, selector


# ---------------------------------------------------------------------------------------------------------------
# Building


def _steps(path: str) -> list[tuple[str, str | None]]:
    steps = []
    for part in path.split("."):
        found = _STEP.match(part)
        if found is None:
            raise MappingError(f"bad path step {part!r} in {path!r}")
        steps.append((found.group(1), found.group(2)))
    return steps


def _place(node: dict[str, Any], path: str, value: Any) -> str:
    """Put ``value`` at ``path`` under ``node`` (creating what is missing); the path as written, indices resolved.
    A list value extends a ``[+]`` end."""
    resolved = []
    steps = _steps(path.split("#", 1)[0])
    for position, (name, index) in enumerate(steps):
        last = position == len(steps) - 1
        if index is None:
            if last:
                node[name] = value
            else:
                node = node.setdefault(name, {})
            resolved.append(name)
            continue
        items = node.setdefault(name, [])
        if index == "+":
            at = len(items)
            if last:
                items.extend(value if isinstance(value, list) else [value])
            else:
                items.append({})
        else:
            at = int(index)
            while len(items) <= at:
                items.append({} if not last else None)
            if last:
                items[at] = value
        resolved.append(f"{name}[{at}]")
        if not last:
            node = items[at]
    return ".".join(resolved)


@dataclass(slots=True)
class _Element:
    """What one rule match fills: a container, and whether any of its templates had a value."""

    node: dict[str, Any]
    path: str  # FHIRPath from the resource (without the resource's own step)
    filled: bool = False


@dataclass(slots=True)
class Mapped:
    """The referral Bundle, and where its elements came from (FHIRPath in the Bundle → place in the document)."""

    bundle: Resource
    origins: dict[str, str]
    issues: list[Issue]  # what the checks found: reported before the intake sees anything

    def locate(self, expression: str | None) -> str | None:
        """The place in the document of the element an intake issue names: the recorded element itself or its
        nearest recorded ancestor; failing a recorded ancestor below the resource, the first recorded element
        under it."""
        if not expression:
            return None
        path = re.split(r"\.(?:where|ofType|first|exists)\(", expression, maxsplit=1)[0]
        candidates = [path, re.sub(r"\[0\]", "", path)]
        for candidate in candidates:
            probe = candidate
            while probe:
                if probe in self.origins:
                    if probe.endswith(".resource") or probe == "Bundle":
                        below = next((o for k, o in self.origins.items() if k.startswith(candidate + ".")), None)
                        return below or self.origins[probe]
                    return self.origins[probe]
                cut = max(probe.rfind("."), probe.rfind("["))
                probe = probe[:cut] if cut > 0 else ""
        return None


_NAMESPACE = uuid.UUID("5d8bf4a6-0e6f-4a8e-9f3c-8a3c6b0f1e21")


class Builder:
    """Resources being filled by one or more mappings (a v2 message carrying a CDA: the CDA's, then the message's)."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self.resources: dict[str, tuple[ResourceSpec, dict[str, Any]]] = {}
        self.filled: set[str] = set()
        self.bundle: dict[str, Any] = {}
        self.origins: dict[str, str] = {}  # "key.path" → location
        self.issues: list[Issue] = []

    def apply(self, mapping: Mapping, source: Source, prefix: str = "") -> None:
        """``prefix``: put before every location (a CDA's inside a v2 field)."""
        for key, spec in mapping.resources.items():
            self.resources.setdefault(key, (spec, {"resourceType": spec.type}))
        for check in mapping.checks:
            self._check(check, mapping, source, prefix)
        for rule in mapping.rules:
            self._rule(rule, mapping, source, prefix)

    def _check(self, check: Check, mapping: Mapping, source: Source, prefix: str) -> None:
        matches = source.each(check.each)
        if not matches:
            self.issues.append(
                Issue(check.code, check.message, None, "required", location=prefix + source.location(check.each))
            )
            return
        value, selector = _render(check.value, matches[0], source, mapping.codes) if check.value else ("x", None)
        if value is None or (check.allowed is not None and str(value) not in check.allowed):
            shown = f" (not {str(value)[:40]!r})" if value is not None else ""
            self.issues.append(
                Issue(
                    check.code,
                    check.message + shown,
                    None,
                    "business-rule" if value is not None else "required",
                    location=prefix + matches[0].location(selector),
                )
            )

    def _rule(self, rule: Rule, mapping: Mapping, source: Source, prefix: str) -> None:
        key, _, rest = rule.into.partition(".")
        key = key.partition("[")[0]
        matches = source.each(rule.each)
        if not matches and rest and key != "bundle":
            # Nothing to map: an issue about this element then names where it would have come from.
            self.origins.setdefault(f"{key}.{_unindexed(rest)}", prefix + source.location(rule.each))
        for match in matches:
            if any((match.value(selector) or "") not in expected for selector, expected in rule.when.items()):
                continue
            if key == "bundle":
                container: dict[str, Any] = self.bundle
                base = "bundle"
            else:
                container = self.resources[key][1]
                base = key
            element_path = _place(container, rest, {}) if rest else ""
            element = _Element(_at(container, element_path) if element_path else container, element_path)
            here = f"{base}.{element_path}" if element_path else base
            found = {here: prefix + match.location(), base: prefix + match.location()}
            for path, template in rule.set.items():
                value, selector = _render(template, match, source, mapping.codes)
                where = prefix + match.location(None if selector is None or selector.startswith("$") else selector)
                if value is None:
                    found.setdefault(f"{here}.{_unindexed(path.split('#', 1)[0])}", where)
                    continue
                placed = _place(element.node, path, value)
                found.setdefault(f"{here}.{placed}", where)
                if selector is not None:
                    element.filled = True
            if element.filled and key != "bundle":
                self.filled.add(key)
            if not element.filled and element_path and rest.endswith("[+]"):
                _drop(container, element_path)
                found = {base: found[base]}
            for path, where in found.items():
                self.origins.setdefault(path, where)

    def finish(self) -> Mapped:
        emitted = [
            key
            for key, (spec, _) in self.resources.items()
            if spec.required or key in self.filled or (spec.with_ is not None and spec.with_ in self.filled)
        ]
        full_urls = {key: f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{self.digest}:{key}')}" for key in emitted}
        entries = []
        origins: dict[str, str] = {}
        for position, key in enumerate(emitted):
            spec, resource = self.resources[key]
            _resolve(resource, full_urls)
            entries.append(
                {"fullUrl": full_urls[key], "resource": resource, "request": {"method": "POST", "url": spec.type}}
            )
            for path, where in self.origins.items():
                if path == key or path.startswith(key + "."):
                    origins[f"Bundle.entry[{position}].resource{path[len(key) :]}"] = where
        _resolve(self.bundle, full_urls)
        bundle: Resource = {"resourceType": "Bundle", **self.bundle, "type": "transaction", "entry": entries}
        for path, where in self.origins.items():
            if path == "bundle" or path.startswith("bundle."):
                origins[f"Bundle{path[len('bundle') :]}"] = where
        return Mapped(bundle, origins, self.issues)


def _unindexed(path: str) -> str:
    return re.sub(r"\[\+\]", "", path)


def _at(node: Any, path: str) -> Any:
    for name, index in _steps(path):
        node = node[name] if index is None else node[name][int(index)]
    return node


def _drop(container: dict[str, Any], path: str) -> None:
    *parents, (name, index) = _steps(path)
    node: Any = container
    for parent_name, parent_index in parents:
        node = node[parent_name] if parent_index is None else node[parent_name][int(parent_index)]
    items = node[name]
    items.pop(int(index or 0))
    if not items:
        del node[name]


def _resolve(node: Any, full_urls: dict[str, str]) -> bool:
    """References to emitted resources made; those to others dropped, with what held only them. True: drop me."""
    if isinstance(node, _Ref):
        return node.key not in full_urls
    if isinstance(node, dict):
        for name in list(node):
            value = node[name]
            if isinstance(value, _Ref):
                if value.key in full_urls:
                    node[name] = {"reference": full_urls[value.key]}
                else:
                    del node[name]
            elif _resolve(value, full_urls) or value in ({}, []):
                del node[name]
        return not node
    if isinstance(node, list):
        kept = []
        for item in node:
            if isinstance(item, _Ref):
                if item.key in full_urls:
                    kept.append({"reference": full_urls[item.key]})
            elif not _resolve(item, full_urls) and item not in ({}, [], None):
                kept.append(item)
        node[:] = kept
        return not node
    return False

"""The FHIRPath fast path gives fhirpathpy's answer, on every invariant the engine evaluates over every example."""

from __future__ import annotations

import copy
import json
from typing import Any

import fhirpathpy
import pytest
from fhirpathpy.models import models

from gateway.validation.engine import Engine, engine
from gateway.validation.fhirpath import Unsupported, compile_native
from gateway.validation.invariants import UCUM, Invariant
from tests.conftest import EXAMPLES


def _examples() -> list[dict[str, Any]]:
    bundles = [json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*-*.json"))]
    bundles += [json.loads(p.read_text()) for p in sorted((EXAMPLES / "invalid").glob("*-*.json"))]
    # a few resources made to fail the invariants that the examples all pass
    patient = next(e["resource"] for e in bundles[2]["entry"] if e["resource"]["resourceType"] == "Patient")
    without_name = copy.deepcopy(patient)
    del without_name["name"], without_name["birthDate"], without_name["identifier"]
    bundles.append(without_name)
    bundles.append({"resourceType": "Bundle", "type": "message", "entry": [{"resource": patient}]})
    bundles.append({"resourceType": "Bundle", "type": "document", "total": 3})
    bundles.append({"resourceType": "Task", "status": "rejected", "intent": "order"})
    twice = {"fullUrl": "urn:uuid:0b1c5f0e-4a57-4c53-9a43-1f0d2d1f6a11", "resource": {"resourceType": "Patient"}}
    bundles.append({"resourceType": "Bundle", "type": "collection", "entry": [twice, copy.deepcopy(twice)]})
    bundles.append({"resourceType": "Organization", "active": True})
    return bundles


def _evaluations(compiled: Engine, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Invariant, Any, dict[str, Any]]]:
    seen: list[tuple[Invariant, Any, dict[str, Any]]] = []
    original = Invariant.check

    def recording(self: Invariant, node: Any, resource: dict[str, Any], root: dict[str, Any]) -> bool | None:
        seen.append((self, node, {"resource": resource, "rootResource": root, "ucum": UCUM}))
        return original(self, node, resource, root)

    monkeypatch.setattr(Invariant, "check", recording)
    for example in _examples():
        compiled.validate(example)
    return seen


def test_the_fast_path_agrees_with_fhirpathpy(monkeypatch: pytest.MonkeyPatch) -> None:
    evaluations = _evaluations(engine(), monkeypatch)
    compared, failing = 0, set()
    for invariant, node, env in evaluations:
        if invariant.native is None:
            continue
        try:
            fast = invariant.native(node, env) is not False
        except Unsupported:
            continue
        try:
            slow = invariant.evaluate(node, env) != [False]
        except Exception:  # e.g. hasValue(): not in fhirpathpy, in the fast path
            continue
        assert fast == slow, (invariant.key, invariant.expression, node)
        compared += 1
        if not fast:
            failing.add(invariant.key)
    assert compared > 200
    # the comparison covered failures too, not only invariants that hold
    assert {"dac-patient-2", "bdl-1", "bdl-7", "bdl-12", "dac-task-1", "org-1"} <= failing


@pytest.mark.parametrize(
    ("expression", "node", "expected"),
    [
        ("a.exists() and b.empty()", {"a": 1}, True),
        ("a.exists() implies b.exists()", {"a": 1}, False),
        ("a.exists() implies b.exists()", {}, True),
        ("a.exists() xor b.exists()", {"a": 1, "b": 2}, False),
        ("x.where(s = 'k').count() = 2", {"x": [{"s": "k"}, {"s": "k"}, {"s": "j"}]}, True),
        ("x.all(v.matches('^[0-9]+$'))", {"x": [{"v": "12"}, {"v": "1a"}]}, False),
        ("value.ofType(Coding).code.exists()", {"valueCoding": {"code": "c"}}, True),
        ("value.ofType(Address).exists()", {"valueCoding": {"code": "c"}}, False),
        ("entry.first().resource.is(Patient)", {"entry": [{"resource": {"resourceType": "Patient"}}]}, True),
        ("url.startsWith('http').not()", {"url": "https://x"}, False),
        ("where(use = 'home').empty()", {"use": "home"}, False),
        ("missing = 'x'", {}, None),
        ("(a | b).where($this.contains('1110-12')).exists()", {"a": "L1110-12", "b": "z"}, True),
        ("(a | b.c).where($this.contains('1110-12')).exists()", {"a": "z", "b": [{"c": "y"}]}, False),
        ("(a | b).count() = 1", {"a": "k", "b": "k"}, True),
        ("(a.count() + b.count()) > 0", {"b": ["x"]}, True),
        ("(a.count() + b.count()) > 0", {}, False),
        ("x.where(u.exists()).select(u & v).isDistinct()", {"x": [{"u": "a", "v": "1"}, {"u": "a"}]}, True),
        ("x.where(u.exists()).select(u & v).isDistinct()", {"x": [{"u": "a", "v": "1"}, {"u": "a", "v": "1"}]}, False),
    ],
)
def test_fast_path_semantics(expression: str, node: dict[str, Any], expected: bool | None) -> None:
    native = compile_native(expression)
    assert native is not None
    assert native(node, {}) is expected
    if "ofType" not in expression:  # fhirpathpy types choice elements only from a resource's root
        assert (fhirpathpy.compile(expression, models["r4"])(node) or [None])[0] is expected


@pytest.mark.parametrize(
    "expression",
    ["descendants().exists()", "a.resolve()", "a in b", "a - b > 0", "a ~ b"],
)
def test_what_the_fast_path_leaves_to_fhirpathpy(expression: str) -> None:
    assert compile_native(expression) is None


@pytest.mark.parametrize(
    ("expression", "node"),
    [("(a | b).count() = 2", {"a": True, "b": 1}), ("(a + b) > 0", {"a": "1", "b": 2}), ("(a & b) = 'x'", {"a": 1})],
)
def test_what_one_evaluation_leaves_to_fhirpathpy(expression: str, node: dict[str, Any]) -> None:
    """Python's equality and types are not FHIRPath's: booleans in a union, + on strings, & on numbers."""
    native = compile_native(expression)
    assert native is not None
    with pytest.raises(Unsupported):
        native(node, {})


def test_dates_are_never_ordered_as_strings() -> None:
    native = compile_native("start <= end")
    assert native is not None
    with pytest.raises(Unsupported):
        native({"start": "2025-01-01T10:00:00+01:00", "end": "2025-01-01T09:30:00Z"}, {})


@pytest.mark.parametrize(
    ("expression", "node", "expected"),
    [
        ("periodMax.empty() or period.exists()", {"periodMax": 2, "periodUnit": "d"}, False),  # tim-6
        ("durationMax.empty() or duration.exists()", {"durationMax": 2, "durationUnit": "h"}, False),  # tim-7
        ("patient.exists()", {"patientInstruction": "fasting"}, False),
        ("period.exists()", {"periodX": 1}, False),
        ("value.exists()", {"valueDateTime": "2025-01-01"}, True),
        ("value.ofType(dateTime).exists()", {"valueDateTime": "2025-01-01"}, True),
    ],
)
def test_only_a_type_name_suffix_makes_a_choice_element(expression: str, node: dict[str, Any], expected: bool) -> None:
    native = compile_native(expression)
    assert native is not None
    assert native(node, {}) is expected


def test_a_repeat_with_a_period_max_and_no_period_is_refused() -> None:
    bundle = json.loads((EXAMPLES / "referral-gp.json").read_text())
    request = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    request.pop("occurrenceDateTime", None), request.pop("occurrencePeriod", None)
    request["occurrenceTiming"] = {"repeat": {"periodMax": 2, "periodUnit": "d"}}
    failing = {issue.diagnostics for issue in engine().validate(bundle) if issue.severity == "error"}
    assert any("tim-6" in (text or "") for text in failing), failing


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r"'\d+'", r"\d+"),
        (r"'a\nb'", "a\nb"),
        (r"'a\\nb'", "a\\nb"),
        (r"'it\'s'", "it's"),
        (r"'\"q\" \`b\` \/ \f\r\t'", '"q" `b` / \f\r\t'),
        (r"'\u00e9\u00C9'", "éÉ"),
        (r"'[a-z]\.\s'", r"[a-z]\.\s"),
    ],
)
def test_string_escapes_follow_the_fhirpath_table(literal: str, value: str) -> None:
    native = compile_native(f"x = {literal}")
    assert native is not None
    assert native({"x": value}, {}) is True


def test_a_regex_escape_reaches_matches_intact() -> None:
    native = compile_native(r"x.matches('^\d+$')")
    assert native is not None
    assert native({"x": "123"}, {}) is True
    assert native({"x": "ddd"}, {}) is False

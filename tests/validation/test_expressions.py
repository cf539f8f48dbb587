"""Every issue's expression is FHIRPath that, evaluated on the bundle as posted, selects the offending element —
or, for a missing element, its parent (property checked over the conformance kit and the engine's mutations)."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import fhirpathpy
import pytest

from gateway.validation.validate import validate
from tests.conftest import EXAMPLES
from tests.validation.test_parity_with_models import MUTATIONS

KIT = sorted(p for p in (EXAMPLES / "invalid").glob("*-*.json"))
#: the kit's bundles that only POST /fhir refuses ($validate finds nothing in them)
VALID_FHIR = {
    name for name, e in json.loads((EXAMPLES / "invalid" / "expected.json").read_text()).items() if e["validate"] == []
}


def _selects(resource: dict[str, Any], expression: str) -> bool:
    # fhirpathpy without a model reads JSON names as posted (valueCoding, not value.ofType(Coding))
    return bool(fhirpathpy.evaluate(resource, expression))


def _parent(expression: str) -> str:
    return re.sub(r"(\.[A-Za-z_]+|\[\d+\])$", "", expression)


def _check(resource: dict[str, Any]) -> int:
    checked = 0
    for issue in validate(resource):
        if issue.expression is None:
            continue
        assert _selects(resource, issue.expression) or _selects(resource, _parent(issue.expression)), issue
        checked += 1
    return checked


@pytest.mark.parametrize("path", KIT, ids=[p.name for p in KIT])
def test_kit_expressions_select_elements(path: Any) -> None:
    checked = _check(json.loads(path.read_text()))
    assert checked > 0 or path.name in VALID_FHIR


def test_mutation_expressions_select_elements() -> None:
    base = json.loads((EXAMPLES / "referral-hospital-nurse.json").read_text())
    for name, mutate in MUTATIONS.items():
        bundle = copy.deepcopy(base)
        mutate(bundle)
        assert _check(bundle) > 0, name

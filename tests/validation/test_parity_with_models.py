"""The engine replaced the fhir.resources parse on the JSON intake path: whatever that parse caught, the engine
catches too, at the same place. Each mutation below is checked by both; the engine's findings must include an
error at every expression the R4B model reported (its codes may be more precise: type-invalid for a JSON type)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from gateway.errors import InvalidResource
from gateway.fhir.models import parse_model
from gateway.validation.engine import engine
from tests.conftest import load_example

Json = dict[str, Any]


def _entry(bundle: Json, resource_type: str) -> Json:
    found: Json = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type)
    return found


def _set(resource_type: str, path: list[str | int], value: Any) -> Callable[[Json], None]:
    def mutate(bundle: Json) -> None:
        node: Any = _entry(bundle, resource_type)["resource"]
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value

    return mutate


def _delete(resource_type: str, path: list[str | int]) -> Callable[[Json], None]:
    def mutate(bundle: Json) -> None:
        node: Any = _entry(bundle, resource_type)["resource"]
        for step in path[:-1]:
            node = node[step]
        del node[path[-1]]

    return mutate


MUTATIONS: dict[str, Callable[[Json], None]] = {
    "unknown element": _set("Patient", ["colour"], "blue"),
    "nested unknown element": _set("Patient", ["name", 0, "nickname"], "J"),
    "unknown element in a backbone": _set("Consent", ["provision", "colour"], "blue"),
    "bad date": _set("Patient", ["birthDate"], "1938-13-45"),
    "impossible date": _set("Patient", ["birthDate"], "1938-02-30"),
    "bad dateTime": _set("Consent", ["dateTime"], "yesterday"),
    "boolean as a string": _set("Patient", ["active"], "yes"),
    "a list for a single value": _set("ServiceRequest", ["subject"], [{"reference": "Patient/1"}]),
    "an object for a list": _set("ServiceRequest", ["identifier"], {"system": "urn:x", "value": "1"}),
    "a string for an object": _set("ServiceRequest", ["code"], "pathway-support"),
    "a number for a string": _set("Patient", ["name", 0, "family"], 12),
    "missing required status": _delete("ServiceRequest", ["status"]),
    "missing required intent": _delete("ServiceRequest", ["intent"]),
    "extension without url": _set("Patient", ["extension", 0, "url"], None),
    "bad id": _set("Patient", ["id"], "an id with spaces"),
    "bad uri in an identifier": _set("Practitioner", ["identifier", 0, "system"], 7),
    "missing consent status": _delete("Consent", ["status"]),
    "a boolean for a code": _set("Patient", ["gender"], True),
}


def _model_expressions(bundle: Json) -> set[str]:
    try:
        parse_model(bundle)
    except InvalidResource as exc:
        return {str(issue.expression) for issue in exc.issues}
    return set()


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_the_engine_catches_what_the_model_caught(name: str) -> None:
    bundle = copy.deepcopy(load_example("referral-hospital-nurse.json"))
    MUTATIONS[name](bundle)
    if name == "extension without url":
        del _entry(bundle, "Patient")["resource"]["extension"][0]["url"]
    by_model = _model_expressions(bundle)
    by_engine = {str(i.expression) for i in engine().validate(bundle) if i.severity == "error"}
    assert by_engine, name
    # The R4B model names "Bundle.entry[1].resource.x" where the engine may point inside it ("….x.y"), or
    # at the list rather than the item: each model finding has an engine finding at, above or under it.
    for expression in by_model:
        assert any(e == expression or e.startswith(expression) or expression.startswith(e) for e in by_engine), (
            name,
            expression,
            by_engine,
        )


def test_the_valid_examples_pass_both() -> None:
    for name in ("referral-hospital-nurse.json", "referral-social-worker.json", "referral-corsica.json"):
        bundle = load_example(name)
        assert _model_expressions(bundle) == set()
        assert [i for i in engine().validate(bundle) if i.severity == "error"] == []

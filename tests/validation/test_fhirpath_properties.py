"""Differential property test: on generated JSON nodes, the FHIRPath fast path gives fhirpathpy's answer for every
invariant of the loaded definitions that it compiles.

fhirpathpy is given the element's path (``base``), so it types choice elements from the R4 model
(``Timing.repeat.bounds`` → ``boundsDuration`` …); the nodes mix the names the expression reads, their real choice
keys, look-alikes that are not choice keys (``periodMax``, ``patientInstruction``) and the expression's own string
literals. (Not the bare name of a choice element: fhirpathpy, typing from the path, ignores such a key, the fast
path, which knows no path, reads it — and the engine reports it as an unknown element anyway.)
"""

from __future__ import annotations

import re
from typing import Any

import fhirpathpy
import pytest
from fhirpathpy.models import models
from hypothesis import given
from hypothesis import strategies as st

from gateway.validation.definitions import structure_definitions
from gateway.validation.fhirpath import _FUNCTIONS, Unsupported, compile_native
from gateway.validation.invariants import SKIPPED, UCUM
from tests.support.fuzz import fuzz_settings

pytestmark = pytest.mark.fuzz
FUZZ = fuzz_settings(30)
R4 = models["r4"]
_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'")
_NAME = re.compile(r"(?<![%$A-Za-z0-9_])[a-z][A-Za-z0-9]*")
_KEYWORDS = {"and", "or", "xor", "implies", "true", "false", *_FUNCTIONS}
#: suffixes that make a key look like a choice element without being one
_LOOK_ALIKES = ("Max", "Unit", "Instruction", "X")


def _compiled_invariants() -> list[tuple[str, str, str]]:
    found: dict[tuple[str, str], str] = {}
    for definition in structure_definitions().values():
        for element in (definition.get("snapshot") or {}).get("element") or []:
            path = str(element.get("path", ""))
            if path.endswith("[x]"):
                continue
            for constraint in element.get("constraint") or []:
                expression = constraint.get("expression")
                if constraint.get("key") in SKIPPED or not isinstance(expression, str):
                    continue
                if compile_native(expression) is not None:
                    found.setdefault((expression, path), str(constraint.get("key")))
    return sorted((key, expression, path) for (expression, path), key in found.items())


INVARIANTS = _compiled_invariants()


def _nodes(expression: str, path: str) -> st.SearchStrategy[dict[str, Any]]:
    names = sorted(set(_NAME.findall(_LITERAL.sub("", expression))) - _KEYWORDS)
    keys = set(names)
    for name in names:
        keys.update(name + suffix for suffix in _LOOK_ALIKES)
        choice = R4["choiceTypePaths"].get(R4["pathsDefinedElsewhere"].get(f"{path}.{name}", f"{path}.{name}"))
        keys.update(name + type_[0].upper() + type_[1:] for type_ in choice or [])
        if choice:  # a choice element is never its bare name in JSON (the engine reports that key as unknown)
            keys.discard(name)
    literals = [re.sub(r"\\(.)", r"\1", text[1:-1]) for text in _LITERAL.findall(expression)]
    leaves = (
        (st.sampled_from([*literals, "", "#p1", "http://x", "a b"]) if literals else st.sampled_from(["", "#p1", "x"]))
        | st.booleans()
        | st.integers(-2, 3)
    )
    values = st.recursive(
        leaves,
        lambda children: (
            st.lists(children, min_size=1, max_size=3)
            | st.dictionaries(st.sampled_from(sorted(keys)), children, min_size=1, max_size=4)
        ),
        max_leaves=12,
    )
    return st.dictionaries(st.sampled_from(sorted(keys)), values, max_size=5)


def test_there_are_invariants_to_compare() -> None:
    keys = {key for key, _, _ in INVARIANTS}
    assert len(INVARIANTS) > 50
    assert {"tim-6", "tim-7"} <= keys


@pytest.mark.parametrize(("key", "expression", "path"), INVARIANTS, ids=[f"{k}@{p}" for k, _, p in INVARIANTS])
def test_the_fast_path_agrees_with_fhirpathpy_on_generated_nodes(key: str, expression: str, path: str) -> None:
    native = compile_native(expression)
    assert native is not None

    @FUZZ
    @given(node=_nodes(expression, path))
    def agree(node: dict[str, Any]) -> None:
        env = {"resource": node, "rootResource": node, "ucum": UCUM}
        try:
            fast = native(node, env) is not False
        except Unsupported:
            return
        try:
            slow = fhirpathpy.evaluate(node, {"expression": expression, "base": path}, dict(env), R4) != [False]
        except Exception:  # fhirpathpy refuses some odd data (e.g. a number where it wants a string)
            return
        assert fast == slow, (key, expression, node)

    agree()

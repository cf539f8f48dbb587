"""FHIRPath invariants (ElementDefinition.constraint), compiled once with fhirpathpy and the R4 model.

fhirpathpy costs 0.03–0.5 ms an evaluation, so what needs no evaluation is not evaluated, and the simple
expressions most invariants are run as compiled Python (``gateway.validation.fhirpath``, same results):

- *vacuous* invariants: most read ``X.empty() or …``, ``X.exists() implies …``, ``type = 'document' implies …``
  or speak only of ``contained``; when X is absent (or the type differs) they hold, and a dictionary lookup says
  so. The guard is derived from the expression's own text (``_GUARDS``), not written per invariant.
- not evaluated at all (``SKIPPED``): ``ele-1`` and ``ext-1`` (the walker checks the same natively on every
  element: no empty object or list, an extension has a value or extensions, not both), ``txt-1`` / ``txt-2``
  (``htmlChecks()`` is not in fhirpathpy: the walker checks a narrative's XHTML natively, as R4's XPath says,
  ``gateway.validation.narrative``), ``ctm-1`` (needs ``resolve()``, which fhirpathpy lacks), and the
  best-practice ones (``dom-6``: narrative is a recommendation, never an error).

An invariant whose evaluation raises does not crash validation: it is reported as a warning
(``invariant-not-evaluated``) naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

from gateway.errors import Severity
from gateway.validation.fhirpath import Unsupported, compile_native

BEST_PRACTICE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/elementdefinition-bestpractice"
#: key → why the engine does not evaluate it with fhirpathpy.
SKIPPED = {
    "ele-1": "checked natively: an element has a value or children (no empty object, no empty list)",
    "ext-1": "checked natively: an extension has a value or extensions, not both",
    "txt-1": "checked natively on every xhtml value (gateway.validation.narrative): no htmlChecks() in fhirpathpy",
    "txt-2": "checked natively on every xhtml value (gateway.validation.narrative): no htmlChecks() in fhirpathpy",
    "ctm-1": "needs resolve(), which fhirpathpy does not implement",
}
UCUM = "http://unitsofmeasure.org"

Guard = Callable[[dict[str, Any]], bool]

# Expression shapes that hold when their first element is absent; group 1 is that element.
_ABSENT_HOLDS = (
    re.compile(r"^([a-z][A-Za-z]*)(?:\.[a-z][A-Za-z]*)*\.empty\(\) or "),
    re.compile(r"^([a-z][A-Za-z]*)(?:\.[a-z][A-Za-z]*)*\.exists\(\) implies "),
    re.compile(r"^([a-z][A-Za-z]*)\.hasValue\(\)\.not\(\) or "),
    re.compile(r"^([a-z][A-Za-z]*)\.startsWith\('#'\)\.not\(\) or "),
    re.compile(r"^(contained)\.(?:[^|]*\.empty\(\)|where\(.*\)\.empty\(\))(?: and contained\.[A-Za-z.]*\.empty\(\))*$"),
)
# "X.exists() or …" holds when X is present.
_PRESENT_HOLDS = re.compile(r"^([a-z][A-Za-z]*)\.exists\(\) or ")
_TYPE_IMPLIES = re.compile(r"^type = '([a-z-]+)' implies ")
_REFERENCE_NOT_LOCAL = re.compile(r"^(reference)\.startsWith\('#'\)\.not\(\) or ")


def _guard(expression: str) -> Guard | None:
    """A test that says, without fhirpathpy, that the invariant holds on this element (None: evaluate)."""
    match = _REFERENCE_NOT_LOCAL.match(expression)
    if match:
        return lambda node: not str(node.get("reference", "")).startswith("#")
    match = _TYPE_IMPLIES.match(expression)
    if match:
        wanted = match.group(1)
        return lambda node: node.get("type") != wanted
    match = _PRESENT_HOLDS.match(expression)
    if match and " implies " not in expression and " xor " not in expression:
        present = match.group(1)
        return lambda node: present in node
    for pattern in _ABSENT_HOLDS:
        match = pattern.match(expression)
        # "A.empty() or B implies C" groups as "(A.empty() or B) implies C": such shapes are evaluated.
        lower_precedence = " implies " in expression[match.end() :] or " xor " in expression if match else False
        if match and not lower_precedence:
            name = match.group(1)
            return lambda node: name not in node and f"_{name}" not in node
    return None


@dataclass(frozen=True, slots=True, eq=False)
class Invariant:
    key: str
    severity: Severity
    human: str
    expression: str
    source: str  # the StructureDefinition (canonical URL) that defines it
    evaluate: Callable[..., list[Any]]
    holds_without_evaluation: Guard | None
    native: Callable[[Any, dict[str, Any]], bool | None] | None = None

    def check(self, node: dict[str, Any], resource: dict[str, Any], root: dict[str, Any]) -> bool | None:
        """True when it holds, False when it fails, None when it could not be evaluated."""
        if self.holds_without_evaluation is not None and self.holds_without_evaluation(node):
            return True
        env = {"resource": resource, "rootResource": root, "ucum": UCUM}
        if self.native is not None:
            try:
                return self.native(node, env) is not False
            except Unsupported:
                pass  # this evaluation is outside the fast path: fhirpathpy decides
        try:
            result = self.evaluate(node, env)
        except Exception:  # fhirpathpy raises anything (TypeError, ValueError, its own errors) on odd data
            return None
        return result != [False]


def compile_invariant(constraint: dict[str, Any], source: str) -> Invariant | None:
    """The compiled invariant, or None when the engine does not evaluate it (``SKIPPED``, best practice)."""
    key = str(constraint.get("key"))
    expression = constraint.get("expression")
    if key in SKIPPED or not isinstance(expression, str):
        return None
    if any(extension.get("url") == BEST_PRACTICE_EXTENSION for extension in constraint.get("extension") or []):
        return None
    severity: Severity = "error" if constraint.get("severity") == "error" else "warning"
    return Invariant(
        key=key,
        severity=severity,
        human=str(constraint.get("human", key)),
        expression=expression,
        source=str(constraint.get("source") or source),
        evaluate=fhirpathpy.compile(expression, models["r4"]),
        holds_without_evaluation=_guard(expression),
        native=compile_native(expression),
    )

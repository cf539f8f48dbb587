"""R4 primitive types as the engine checks them: the JSON type each travels as (JSON's own booleans, numbers and
strings — never ``"yes"`` for true) and the regex of its StructureDefinition (``{type}.value``, extension
``regex``), compiled once. Dates also have to exist in the calendar (``1938-02-30`` matches the regex)."""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.validation.definitions import base_url, structure_definitions

REGEX_EXTENSION = "http://hl7.org/fhir/StructureDefinition/regex"
FHIR_TYPE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"

_INTEGERS = frozenset({"integer", "positiveInt", "unsignedInt"})
_DATES = frozenset({"date", "dateTime", "instant"})
_DATE_PART = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def json_kind(type_code: str) -> tuple[str, Callable[[Any], bool]]:
    """What a primitive must be in JSON: (name for the diagnostic, test)."""
    if type_code == "boolean":
        return "a JSON boolean (true or false)", lambda value: isinstance(value, bool)
    if type_code in _INTEGERS:
        return "a JSON integer", _is_integer
    if type_code == "decimal":
        return "a JSON number", _is_number
    return "a JSON string", lambda value: isinstance(value, str)


@dataclass(frozen=True, slots=True)
class PrimitiveType:
    code: str
    kind: str
    is_kind: Callable[[Any], bool]
    pattern: re.Pattern[str] | None

    def problem(self, value: Any) -> tuple[str, str] | None:
        """None, or (``"type"`` | ``"format"``, why) for a JSON value of this type."""
        if not self.is_kind(value):
            return "type", f"a FHIR {self.code} is {self.kind}, not {type(value).__name__} {value!r:.40}"
        if self.pattern is not None:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if not self.pattern.fullmatch(text):
                return "format", f"{value!r:.60} is not a valid FHIR {self.code}"
        if self.code in _DATES and isinstance(value, str) and not _real_date(value):
            return "format", f"{value!r:.60} is not a date of the calendar"
        if self.code == "positiveInt" and _is_integer(value) and value < 1:
            return "format", f"a FHIR positiveInt is at least 1, not {value}"
        return None


def _real_date(value: str) -> bool:
    match = _DATE_PART.match(value)
    if match is None:
        return True  # a year, or a year-month: the regex said enough
    try:
        datetime.date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        return False
    return True


def type_regex(definition: dict[str, Any]) -> str | None:
    for type_ in definition.get("type") or []:
        for extension in type_.get("extension") or []:
            if extension.get("url") == REGEX_EXTENSION:
                return str(extension["valueString"])
    return None


@functools.cache
def primitive_type(type_code: str) -> PrimitiveType | None:
    """The compiled primitive type, or None when ``type_code`` is not a primitive."""
    definition = structure_definitions().get(base_url(type_code))
    if definition is None or definition.get("kind") != "primitive-type":
        return None
    regex = None
    for element in definition["snapshot"]["element"]:
        if element["path"] == f"{type_code}.value":
            regex = type_regex(element)
    kind, is_kind = json_kind(type_code)
    # xhtml's content is checked by nobody here (txt-1 / txt-2 need htmlChecks()); a string it must be.
    pattern = re.compile(regex) if regex and type_code != "xhtml" else None
    return PrimitiveType(type_code, kind, is_kind, pattern)

"""An HL7 v2 message as a ``Source`` of the mapping engine.

Selectors, as the mapping files write them:

- ``each``: ``PID`` (every PID segment) or ``PID-3`` (every repetition of PID-3, in every PID);
- a value relative to a segment: ``7`` (field 7, first repetition and component), ``5.2``, ``3.4.2``
  (field.component.subcomponent);
- relative to a field repetition: ``1``, ``4.2`` (component.subcomponent);
- absolute: ``PRD-1``, ``MSH-10``: in the same segment occurrence as the match when it is of that segment, else
  in the first segment of that name.

Locations are HL7 v2.5 ERLs: ``PID^1^3^1^1``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.inbound.er7 import Segment, V2Message, erl, leaf
from gateway.inbound.mapping import MappingError, Match

_ABSOLUTE = re.compile(r"^([A-Z][A-Z0-9]{2})-(\d+)((?:\.\d+){0,2})$")
_RELATIVE = re.compile(r"^\d+(?:\.\d+){0,2}$")


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(".") if part]


@dataclass(frozen=True, slots=True)
class SegmentMatch:
    message: V2Message
    segment: Segment
    field: int | None = None  # a field repetition's match: its field and repetition
    repetition: int = 1

    def _resolve(self, selector: str) -> tuple[Segment | None, list[int]]:
        """The segment and the positions (field, repetition, component, subcomponent) ``selector`` names."""
        absolute = _ABSOLUTE.match(selector)
        if absolute is not None:
            name, field, rest = absolute.group(1), int(absolute.group(2)), _numbers(absolute.group(3))
            segment = self.segment if name == self.segment.name else self.message.first(name)
            repetition = self.repetition if (segment is self.segment and field == self.field) else 1
            return segment, [field, repetition, *rest]
        if not _RELATIVE.match(selector):
            raise MappingError(f"not an HL7 v2 selector: {selector!r}")
        numbers = _numbers(selector)
        if self.field is None:
            return self.segment, [numbers[0], 1, *numbers[1:]]
        return self.segment, [self.field, self.repetition, *numbers]

    def value(self, selector: str) -> str | None:
        segment, positions = self._resolve(selector)
        if segment is None:
            return None
        field, repetition, *rest = positions
        return leaf(segment.field(field), repetition, *[*rest, 1, 1][:2]) or None

    def location(self, selector: str | None = None) -> str:
        if selector is None:
            if self.field is None:
                return erl(self.segment.name, self.segment.occurrence)
            return erl(self.segment.name, self.segment.occurrence, self.field, self.repetition)
        segment, positions = self._resolve(selector)
        if segment is None:
            absolute = _ABSOLUTE.match(selector)
            return erl(absolute.group(1) if absolute else self.segment.name, 1, *positions)
        field, repetition, *rest = positions
        return erl(segment.name, segment.occurrence, field, repetition, *(rest or [1]))


@dataclass(frozen=True, slots=True)
class V2Source:
    message: V2Message
    document: bytes = b""  # the CDA a message carries, for ``{$document}``

    def each(self, selector: str) -> Sequence[Match]:
        name, _, field = selector.partition("-")
        segments = self.message.all(name)
        if not field:
            return [SegmentMatch(self.message, segment) for segment in segments]
        number = int(field)
        return [
            SegmentMatch(self.message, segment, number, repetition)
            for segment in segments
            for repetition in range(1, len(segment.field(number)) + 1)
            if any(any(sub for sub in component) for component in segment.field(number)[repetition - 1])
        ]

    def location(self, selector: str) -> str:
        name, _, field = selector.partition("-")
        return erl(name, 1, *([int(field)] if field else []))

"""FHIRPath expressions for elements as posted, e.g. ``Bundle.entry[3].resource.identifier[0].value``."""

from __future__ import annotations

from collections.abc import Iterable


def fhirpath(root: str, location: Iterable[str | int]) -> str:
    """Join a root and a location (names and list indexes, as pydantic and our walkers give them)."""
    expression = root
    for step in location:
        if isinstance(step, int):
            expression += f"[{step}]"
        else:
            # "_birthDate" carries birthDate's id and extensions: in FHIRPath both are "birthDate".
            expression += f".{step.removeprefix('_')}"
    return expression

"""Bounds on the shape of a posted resource, checked before anything walks it.

orjson parses up to 1,024 levels of nesting, and lxml up to 256, but the code that reads a resource afterwards
(pydantic's models, the reference and identifier walkers of intake and validation, the JSON encoder that stores
it) recurses once or twice per level and would exhaust Python's stack far sooner: a posted body could then end in
a ``RecursionError`` — a 500 — instead of an answer. So every parsed body goes through ``check_limits`` first, an
iterative walk (no recursion of its own) that refuses:

- nesting deeper than ``MAX_DEPTH`` objects and arrays (400 ``nesting-too-deep``; XML elements: ``gateway.fhir.xml``):
  real referrals stay under 15;
- a Bundle of more than ``MAX_BUNDLE_ENTRIES`` entries (413 ``bundle-too-many-entries``): a referral has tens;
- a string longer than FHIR's own limit, 1 MiB (R4 datatypes.html#string; 422 ``value-too-long``).
"""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest, InvalidResource, IssueCode, PayloadTooLarge

MAX_DEPTH = 100
MAX_BUNDLE_ENTRIES = 1000
MAX_STRING_LENGTH = 1024 * 1024


def check_limits(resource: Any) -> None:
    """Raise the error for the first bound the parsed JSON value exceeds; return quietly otherwise."""
    stack: list[tuple[Any, int, str]] = [(resource, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict):
            if depth > MAX_DEPTH:
                raise nesting_too_deep(MAX_DEPTH)
            entries = node.get("entry")
            if node.get("resourceType") == "Bundle" and isinstance(entries, list) and len(entries) > MAX_BUNDLE_ENTRIES:
                raise PayloadTooLarge.single(
                    IssueCode.BUNDLE_TOO_MANY_ENTRIES,
                    f"a Bundle may hold at most {MAX_BUNDLE_ENTRIES} entries; this one has {len(entries)}",
                    f"{path or 'Bundle'}.entry",
                    "too-long",
                )
            for key, value in node.items():
                if isinstance(value, (dict, list, str)):
                    stack.append((value, depth + 1, f"{path}.{key}" if path else str(key)))
        elif isinstance(node, list):
            if depth > MAX_DEPTH:
                raise nesting_too_deep(MAX_DEPTH)
            stack.extend(
                (item, depth + 1, f"{path}[{index}]")
                for index, item in enumerate(node)
                if isinstance(item, (dict, list, str))
            )
        elif isinstance(node, str) and len(node) > MAX_STRING_LENGTH:
            raise InvalidResource.single(
                IssueCode.VALUE_TOO_LONG,
                f"a string is longer than FHIR's limit of {MAX_STRING_LENGTH} characters",
                path or None,
                "too-long",
            )


def nesting_too_deep(limit: int) -> InvalidRequest:
    # No expression: the path of an element a hundred levels down would itself be a wall of text.
    return InvalidRequest.single(
        IssueCode.NESTING_TOO_DEEP, f"the body nests elements deeper than {limit} levels", None, "structure"
    )

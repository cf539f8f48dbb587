"""What the property-based tests share: hypothesis settings — bounded for CI, scaled up for a deeper run with
``GATEWAY_FUZZ_SCALE=20 .venv/bin/pytest -m fuzz`` (no deadline: the machine may be loaded) — and the strategy
that mutates the example referrals: elements deleted, duplicated, unwrapped, retyped, replaced by odd unicode,
numbers for strings, huge values."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SCALE = max(1, int(os.environ.get("GATEWAY_FUZZ_SCALE", "1")))


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples * SCALE,
        # CI runs the same examples every time (a red run must be reproducible); a deeper run explores anew.
        derandomize=bool(os.environ.get("CI")) and SCALE == 1,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REFERRALS = {
    path.name: json.loads(path.read_text(encoding="utf-8"))
    for path in sorted(EXAMPLES.glob("*.json"))
    if json.loads(path.read_text(encoding="utf-8")).get("type") in ("transaction", "message")
}
Path_ = tuple[str | int, ...]

odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),  # any unicode: control characters, surrogates' neighbours, RTL marks
    st.sampled_from(["", " ", "\u202e", "null", "Patient/", "urn:uuid:", "#", "../../etc", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "1" * 5000]),
    st.builds(lambda n: "x" * n, st.sampled_from([10_000, 200_000])),
    st.just([]),
    st.just({}),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.sampled_from(["reference", "value", "system", "url"]), st.text(max_size=10), max_size=2),
)


def element_paths(node: Any, path: Path_ = ()) -> Iterator[Path_]:
    """Every place in a JSON document, as the keys and indexes that lead there (the root is ``()``)."""
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from element_paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from element_paths(value, (*path, index))


def _parent(document: Any, path: Path_) -> Any:
    for step in path[:-1]:
        document = document[step]
    return document


def _mutate(document: Any, path: Path_, operation: str, value: Any) -> None:
    if not path:
        return
    parent, last = _parent(document, path), path[-1]
    if operation == "delete":
        del parent[last]
    elif operation == "duplicate" and isinstance(parent, list):
        parent.insert(int(last), copy.deepcopy(parent[int(last)]))
    elif operation == "duplicate":
        parent[last] = [copy.deepcopy(parent[last]), copy.deepcopy(parent[last])]
    elif operation == "unwrap" and isinstance(parent[last], list) and parent[last]:
        parent[last] = parent[last][0]  # a list where one element is expected, and the converse
    elif operation == "stringify":
        parent[last] = json.dumps(parent[last]) if not isinstance(parent[last], str) else 12345
    else:
        parent[last] = value


@st.composite
def mutated_referrals(draw: st.DrawFn) -> dict[str, Any]:
    bundle = copy.deepcopy(REFERRALS[draw(st.sampled_from(sorted(REFERRALS)))])
    for _ in range(draw(st.integers(1, 3))):
        paths = list(element_paths(bundle))
        path = draw(st.sampled_from(paths))
        operation = draw(st.sampled_from(["delete", "duplicate", "unwrap", "stringify", "replace", "replace"]))
        _mutate(bundle, path, operation, draw(odd_values))
    return bundle

"""Odd JSON never crashes validation: random type swaps, deletions and ``_x`` siblings anywhere in the examples
give findings (or none), never an exception other than a GatewayError (which the API renders as a 4xx)."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

from gateway.errors import GatewayError
from gateway.validation.validate import validate
from tests.conftest import EXAMPLES
from tests.support.fuzz import element_paths

ODD_VALUES: list[Any] = [None, True, 0, -1, 1.5, "", "x", [], {}, [None], [{}], {"a": 1}, ["x"], {"url": 3}]


def _mutated(example: dict[str, Any], chance: random.Random) -> dict[str, Any]:
    bundle = copy.deepcopy(example)
    paths = list(element_paths(bundle))[1:]
    for _ in range(chance.randint(1, 3)):
        path = chance.choice(paths)
        node: Any = bundle
        try:
            for step in path[:-1]:
                node = node[step]
            roll = chance.random()
            if roll < 0.6:
                node[path[-1]] = copy.deepcopy(chance.choice(ODD_VALUES))
            elif isinstance(node, dict) and roll < 0.8:
                del node[path[-1]]
            elif isinstance(node, dict):
                node[f"_{path[-1]}"] = copy.deepcopy(chance.choice(ODD_VALUES))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier swap removed the way there
    mutated: dict[str, Any] = json.loads(json.dumps(bundle))  # as posted: JSON, string keys
    return mutated


def test_odd_input_never_crashes() -> None:
    chance = random.Random(20251129)
    examples = [json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("referral-*.json"))]
    found = 0
    for _ in range(400):
        try:
            found += len(validate(_mutated(chance.choice(examples), chance)))
        except GatewayError:
            found += 1
    assert found > 400

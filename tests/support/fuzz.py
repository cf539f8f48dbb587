"""Hypothesis settings shared by the property-based tests: bounded for CI, scaled up for a deeper run with
``GATEWAY_FUZZ_SCALE=20 .venv/bin/pytest -m fuzz``. No deadline: the machine may be loaded."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SCALE = max(1, int(os.environ.get("GATEWAY_FUZZ_SCALE", "1")))


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )

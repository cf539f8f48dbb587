"""DAC Gateway: a FHIR R4 gateway for referrals to the French DAC platforms (see README.md).

The exports are imported when first used (PEP 562): the ``gateway`` command imports this package before any of
its commands runs, and ``gateway token`` or ``gateway clients add`` need none of the application's modules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from gateway.api.app import create_app
    from gateway.config import Settings
    from gateway.errors import GatewayError, Issue, IssueCode

__all__ = ["GatewayError", "Issue", "IssueCode", "Settings", "__version__", "create_app"]
_WHERE = {
    "create_app": "gateway.api.app",
    "Settings": "gateway.config",
    "GatewayError": "gateway.errors",
    "Issue": "gateway.errors",
    "IssueCode": "gateway.errors",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value

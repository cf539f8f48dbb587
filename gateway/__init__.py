"""DAC Gateway: a FHIR R4 gateway for referrals to the French DAC platforms (see README.md)."""

__version__ = "0.1.0"

from gateway.api.app import create_app
from gateway.config import Settings
from gateway.errors import GatewayError, Issue, IssueCode

__all__ = ["GatewayError", "Issue", "IssueCode", "Settings", "__version__", "create_app"]

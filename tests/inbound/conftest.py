"""HL7 v2 and CDA in: the application with authentication off (tests/conftest.py) and on (tests/auth)."""

from tests.auth.conftest import clients_file, secure, secure_app

__all__ = ["clients_file", "secure", "secure_app"]

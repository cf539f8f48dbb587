"""The application with authentication on, as tests/auth sets it up: what is published needs no token."""

from tests.auth.conftest import clients_file, secure, secure_app

__all__ = ["clients_file", "secure", "secure_app"]

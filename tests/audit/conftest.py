"""The application with authentication on, as the authentication tests have it."""

from tests.auth.conftest import clients_file, secure, secure_app

__all__ = ["clients_file", "secure", "secure_app"]

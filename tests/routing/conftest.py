"""The application with authentication on (tests/auth/conftest.py), for the routing tests that need it."""

from tests.auth.conftest import clients_file, secure, secure_app  # noqa: F401

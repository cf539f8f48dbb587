"""Authentication's settings: on by default, and never with a placeholder secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway import Settings, create_app
from gateway.auth.clients import AuthConfigError
from gateway.routing.config import RoutingTable
from tests.support.auth import TEST_SECRET


def test_authentication_is_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_AUTH", raising=False)
    assert Settings().auth_enabled


@pytest.mark.parametrize("secret", ["changeme", "secret", "short-but-real"])
def test_a_placeholder_or_short_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValidationError, match="placeholder or shorter"):
        Settings(auth="on", auth_secret=secret)


def test_the_secret_may_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(TEST_SECRET + "\n")
    assert Settings(auth_secret_file=tmp_path / "secret").access_token_secret() == TEST_SECRET


def test_auth_on_without_a_clients_file_or_secret_stops_start_up(routing: RoutingTable, tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="GATEWAY_CLIENTS"):
        create_app(Settings(auth="on", auth_secret=TEST_SECRET), routing=routing)
    with pytest.raises(AuthConfigError, match="GATEWAY_AUTH_SECRET"):
        create_app(Settings(auth="on", clients=tmp_path / "clients.toml"), routing=routing)

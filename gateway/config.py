"""Settings: every knob comes from ``GATEWAY_*`` environment variables, validated once at start-up."""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.conformance.files import example_routing

#: The example routing file (package data): the default so that `gateway serve` works out of a fresh install.
EXAMPLE_ROUTING = example_routing()


def async_database_url(url: str) -> str:
    """Map the URLs people write (``postgresql://…``, ``sqlite:///…``) to the async drivers we use."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    if url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        return url
    raise ValueError(f"unsupported database URL scheme (use postgresql:// or sqlite:///): {url.split(':', 1)[0]}")


@cache
def proxy_networks(addresses: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``GATEWAY_TRUSTED_PROXIES`` read: comma-separated addresses or CIDR ranges (ValueError on a bad one)."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in addresses.split(",") if part.strip())


def comma_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


#: Secrets that mean "not configured": refused when authentication is on.
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "changethis", "secret", "placeholder", "xxx", "todo"})
#: HS256 wants a key at least as long as its hash (RFC 7518 §3.2).
MIN_SECRET_BYTES = 32


class AuthMode(StrEnum):
    ON = "on"
    OFF = "off"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./gateway.db",
        description="SQLite file (default, under the working directory) or postgresql://user@host:port/db",
    )
    routing: Path = Field(default=EXAMPLE_ROUTING, description="Routing file (TOML), DESIGN §5")
    max_body_bytes: int = Field(default=5 * 1024 * 1024, gt=0, description="Request body limit (413 above)")
    max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        description="Request line and headers limit (431 and the connection closed above)",
    )
    body_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a client has to send a whole request body (408 after)"
    )
    parse_time_budget: float = Field(
        default=10.0,
        gt=0,
        description="Seconds an XML body may take to be read, off the event loop (503 after; nothing stored)",
    )
    base_url: str | None = Field(
        default=None, description="Public base URL of the FHIR API (…/fhir); default: from the request"
    )
    listen_url: str | None = Field(
        default=None,
        description="Set by `gateway serve` (its --host/--port): the base of the messages the worker sends when "
        "GATEWAY_BASE_URL is unset — they answer no request to take it from",
    )
    trusted_proxies: str = Field(
        default="127.0.0.1",
        description="Peers (addresses or CIDR ranges, comma-separated) whose X-Forwarded-* / Forwarded headers "
        "give the public base URL; '' trusts none",
    )
    cors_origins: str = Field(
        default="", description="Origins (comma-separated) browsers may call the API from; none by default"
    )
    default_page_size: int = Field(default=20, ge=1, le=1000)
    max_page_size: int = Field(default=500, ge=1, le=5000)
    scheduler_interval: float = Field(
        default=30.0, gt=0, description="Seconds between two runs of the worker's periodic jobs (deadlines)"
    )
    delivery_poll_interval: float = Field(default=0.5, gt=0, description="Seconds between two looks at the outbox")
    delivery_max_attempts: int = Field(default=12, ge=1, description="Attempts before a delivery is dead-lettered")
    delivery_backoff_base: float = Field(default=2.0, gt=0, description="First retry delay (seconds), doubling")
    delivery_backoff_cap: float = Field(default=3600.0, gt=0, description="Longest retry delay (seconds)")
    delivery_timeout: float = Field(default=20.0, gt=0, description="Seconds to wait for a platform's answer")
    delivery_lease: float = Field(
        default=120.0, gt=0, description="Seconds a worker holds a delivery before another may take it over"
    )
    delivery_per_destination: int = Field(
        default=16, ge=1, le=256, description="Deliveries in flight at once to one destination (its own slots)"
    )
    hop_limit: int = Field(default=3, ge=1, description="Forwardings between gateways before a message is refused")
    auth: AuthMode = Field(
        default=AuthMode.ON,
        description="SMART Backend Services authentication; 'off' is for development only (logged loudly)",
    )
    clients: Path | None = Field(default=None, description="Registered API clients (TOML); required when auth is on")
    auth_secret: SecretStr | None = Field(
        default=None, description="Key that signs the gateway's access tokens (≥ 32 bytes), shared by its processes"
    )
    auth_secret_file: Path | None = Field(default=None, description="File holding GATEWAY_AUTH_SECRET instead")
    access_token_lifetime: int = Field(
        default=300, ge=1, le=3600, description="Seconds an access token lives (a few in tests of its renewal)"
    )
    token_url: str | None = Field(
        default=None,
        description="Public URL of the token endpoint (the assertions' aud); default: next to GATEWAY_BASE_URL",
    )
    console: AuthMode | None = Field(
        default=None,
        description="The integrator console at /console: on by default with authentication off; with it on, off "
        "unless set to 'on' (its data then needs an operator's token)",
    )
    mllp_port: int | None = Field(
        default=None, ge=0, le=65535, description="MLLP listener for HL7 v2 (DESIGN §13; `gateway serve --mllp-port`)"
    )
    mllp_host: str = Field(default="127.0.0.1", description="Address the MLLP listener binds")
    mllp_allow: str = Field(
        default="127.0.0.1,::1",
        description="Addresses or CIDR ranges MLLP peers may connect from (comma-separated); others are closed",
    )
    mllp_client_id: str | None = Field(
        default=None,
        description="With auth on: the registered client MLLP messages are taken in as (MLLP carries no token)",
    )
    hl7v2_processing_id: Literal["P", "T", "D"] = Field(
        default="P",
        description="The HL7 v2 processing id (MSH-11: P production, T training, D debugging) this gateway takes; "
        "a message of another is refused (AR), so that a test system's referral never reaches a platform",
    )
    log_level: str = Field(default="INFO")
    log_json: bool = Field(default=True, description="JSON log lines (false: human-readable console)")

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        async_database_url(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: str) -> str:
        proxy_networks(value)  # a bad address stops start-up, not each request
        return value

    @field_validator("mllp_allow")
    @classmethod
    def _mllp_networks(cls, value: str) -> str:
        proxy_networks(value)
        return value

    @field_validator("base_url")
    @classmethod
    def _absolute_base(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("GATEWAY_BASE_URL must be an absolute http(s) URL")
        return value

    @model_validator(mode="after")
    def _no_wildcard_origin_with_auth(self) -> Self:
        # Any page on the web could then call the API with the browser's credentials in it.
        if self.auth is AuthMode.ON and "*" in comma_list(self.cors_origins):
            raise ValueError("GATEWAY_CORS_ORIGINS '*' is refused while authentication is on: name the origins")
        return self

    @model_validator(mode="after")
    def _no_placeholder_secret(self) -> Self:
        # Whether auth needs a secret at all is create_app's question (the CLI's other commands need none).
        secret = self.access_token_secret() if self.auth is AuthMode.ON else None
        if secret is not None and (
            secret.strip().lower() in PLACEHOLDER_SECRETS or len(secret.encode()) < MIN_SECRET_BYTES
        ):
            raise ValueError(f"the access token secret is a placeholder or shorter than {MIN_SECRET_BYTES} bytes")
        return self

    def access_token_secret(self) -> str | None:
        """The key signing access tokens: from the environment, else from its file (a mounted secret)."""
        if self.auth_secret is not None:
            return self.auth_secret.get_secret_value()
        if self.auth_secret_file is not None:
            try:
                return self.auth_secret_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"GATEWAY_AUTH_SECRET_FILE cannot be read: {exc.strerror}") from exc
        return None

    @property
    def message_base_url(self) -> str | None:
        """The base of what the gateway sends on its own (no request to take it from): the configured one, else
        the address ``gateway serve`` listens on."""
        return self.base_url or self.listen_url

    @property
    def console_enabled(self) -> bool:
        if self.console is None:
            return not self.auth_enabled
        return self.console is AuthMode.ON

    @property
    def auth_enabled(self) -> bool:
        return self.auth is AuthMode.ON

    @property
    def async_database_url(self) -> str:
        return async_database_url(self.database_url)

    @property
    def is_sqlite(self) -> bool:
        return self.async_database_url.startswith("sqlite")

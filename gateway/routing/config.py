"""The routing file (DESIGN §5): platforms and the territories they cover, read and checked once at start-up.

A mistake stops start-up with a message naming the file and the line, so an operator never finds out from a
referral that went nowhere.
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import isodate

from gateway.auth.outbound import SMART_BACKEND, OutboundAuthError, SmartBackendAuth, parse_smart_backend
from gateway.workflow.policies import Policy


class RoutingConfigError(Exception):
    """The routing file cannot be used; the message names the file and line."""


class PlatformKind(StrEnum):
    PLATFORM = "platform"
    PEER_GATEWAY = "peer-gateway"


@dataclass(frozen=True, slots=True)
class PlatformAuth:
    type: str  # "none" | "bearer" | "smart-backend"
    token_env: str | None = None
    smart: SmartBackendAuth | None = None  # type "smart-backend": the token endpoint, our client id and key there


@dataclass(frozen=True, slots=True)
class Platform:
    key: str
    name: str
    endpoint: str
    kind: PlatformKind
    policy: Policy
    gp_validation_delay: timedelta
    organization_system: str
    organization_value: str
    auth: PlatformAuth
    allow_test_identities: bool = False  # test INS (OIDs …4.10 / …4.11) accepted for this platform


@dataclass(frozen=True, slots=True)
class RoutingTable:
    platforms: Mapping[str, Platform]
    territories: Mapping[str, str]  # INSEE commune or department code → platform key
    default: str | None
    source: Path

    def outbound_auths(self) -> list[SmartBackendAuth]:
        """The destinations' ``smart-backend`` blocks (their keys are published, ``/.well-known/jwks.json``)."""
        return [p.auth.smart for p in self.platforms.values() if p.auth.smart is not None]

    def platform_of_organization(self, identifiers: list[tuple[str, str]]) -> Platform | None:
        """The platform whose Organization carries one of these identifiers (system, value)."""
        wanted = set(identifiers)
        return next(
            (p for p in self.platforms.values() if (p.organization_system, p.organization_value) in wanted), None
        )

    def platform_for_codes(self, commune: str | None, department: str | None) -> Platform | None:
        """The most specific match wins: commune row, then department row, then the default."""
        for code in (commune, department):
            if code and code in self.territories:
                return self.platforms[self.territories[code]]
        return self.platforms[self.default] if self.default else None


COMMUNE_CODE = re.compile(r"^(?:\d{5}|2[AB]\d{3})$")
DEPARTMENT_CODE = re.compile(r"^(?:0[1-9]|[1-8]\d|9[0-5]|2[AB]|97[1-6])$")
_KEYS = {"name", "endpoint", "kind", "policy", "gp_validation_delay", "organization", "auth", "allow_test_identities"}


def _line_of(text: str, pattern: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if re.search(pattern, line):
            return number
    return 1


def _platform(key: str, raw: Any, text: str, source: Path) -> Platform:
    header = _line_of(text, rf"^\s*\[platforms\.{re.escape(key)}\]")

    lines = text.splitlines()

    def field_line(field: str | None) -> int:
        for number in range(header + 1, len(lines) + 1):
            line = lines[number - 1].lstrip()
            if line.startswith("["):
                break
            if field and re.match(rf"{re.escape(field)}\s*=", line):
                return number
        return header

    def fail(message: str, field: str | None = None) -> RoutingConfigError:
        return RoutingConfigError(f"{source}:{field_line(field)}: platform {key!r}: {message}")

    if not isinstance(raw, dict):
        raise fail("must be a table")
    unknown = set(raw) - _KEYS
    if unknown:
        raise fail(f"unknown key(s) {', '.join(sorted(unknown))}; expected {', '.join(sorted(_KEYS))}")
    for field in ("name", "endpoint", "policy", "organization"):
        if field not in raw:
            raise fail(f"{field} is required")
    endpoint = raw["endpoint"]
    if not isinstance(endpoint, str) or not re.match(r"^https?://[^\s/]+", endpoint):
        raise fail("endpoint must be an http(s) URL (the platform's FHIR base)", "endpoint")
    try:
        kind = PlatformKind(raw.get("kind", "platform"))
    except ValueError:
        raise fail(f"kind must be one of {', '.join(PlatformKind)}", "kind") from None
    try:
        policy = Policy(raw["policy"])
    except ValueError:
        raise fail(f"policy must be one of {', '.join(Policy)}", "policy") from None
    try:
        delay = isodate.parse_duration(str(raw.get("gp_validation_delay", "P7D")))
    except (isodate.ISO8601Error, ValueError):
        raise fail(
            "gp_validation_delay must be an ISO 8601 duration such as P7D or PT3S", "gp_validation_delay"
        ) from None
    if not isinstance(delay, timedelta) or delay <= timedelta(0):
        raise fail(
            "gp_validation_delay must be a positive duration in days, hours, minutes or seconds", "gp_validation_delay"
        )
    organization = raw["organization"]
    if not (isinstance(organization, dict) and organization.get("system") and organization.get("value")):
        raise fail("organization must be { system = …, value = … } (e.g. FINESS)", "organization")
    auth_raw = raw.get("auth", {"type": "none"})
    if not isinstance(auth_raw, dict) or auth_raw.get("type") not in ("none", "bearer", SMART_BACKEND):
        raise fail(
            'auth must be { type = "none" }, { type = "bearer", token_env = "…" } '
            f'or {{ type = "{SMART_BACKEND}", token_url = "…", … }}',
            "auth",
        )
    if auth_raw["type"] == "bearer" and not auth_raw.get("token_env"):
        raise fail("a bearer auth names the environment variable holding the token (token_env)", "auth")
    smart = None
    if auth_raw["type"] == SMART_BACKEND:
        try:
            smart = parse_smart_backend(auth_raw, source.parent)
        except OutboundAuthError as exc:
            raise fail(str(exc), "auth") from None
    return Platform(
        key=key,
        name=str(raw["name"]),
        endpoint=endpoint.rstrip("/"),
        kind=kind,
        policy=policy,
        gp_validation_delay=delay,
        organization_system=str(organization["system"]),
        organization_value=str(organization["value"]),
        auth=PlatformAuth(auth_raw["type"], auth_raw.get("token_env"), smart),
        allow_test_identities=bool(raw.get("allow_test_identities", False)),
    )


def _territories(path: Path, platforms: Mapping[str, Platform]) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutingConfigError(f"{path}: cannot read the territories file ({exc.strerror})") from exc
    territories: dict[str, str] = {}
    reader = csv.reader(io.StringIO(text))
    for row in reader:
        line = reader.line_num
        if not row or row[0].strip().startswith("#") or (line == 1 and row[0].strip().lower() == "code"):
            continue
        if len(row) != 2:
            raise RoutingConfigError(f"{path}:{line}: expected two columns 'code,platform', got {len(row)}")
        code, platform = (cell.strip().upper() if i == 0 else cell.strip() for i, cell in enumerate(row))
        if not (COMMUNE_CODE.match(code) or DEPARTMENT_CODE.match(code)):
            raise RoutingConfigError(
                f"{path}:{line}: {code!r} is neither an INSEE commune code (75056, 2A004) "
                "nor a department code (75, 2A, 971)"
            )
        if platform not in platforms:
            raise RoutingConfigError(f"{path}:{line}: unknown platform {platform!r}")
        if code in territories:
            raise RoutingConfigError(f"{path}:{line}: territory {code} is listed twice")
        territories[code] = platform
    return territories


def load_routing(path: Path) -> RoutingTable:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutingConfigError(f"{path}: cannot read the routing file ({exc.strerror})") from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RoutingConfigError(f"{path}:{getattr(exc, 'lineno', 1)}: not valid TOML: {exc}") from exc
    raw_platforms = document.get("platforms")
    if not isinstance(raw_platforms, dict) or not raw_platforms:
        raise RoutingConfigError(f"{path}:1: no [platforms.<key>] table")
    platforms = {key: _platform(key, raw, text, path) for key, raw in raw_platforms.items()}
    territories_name = document.get("territories")
    if not isinstance(territories_name, str):
        raise RoutingConfigError(f'{path}:{_line_of(text, r"^territories")}: territories = "file.csv" is required')
    default = document.get("default")
    if default is not None and default not in platforms:
        raise RoutingConfigError(f"{path}:{_line_of(text, r'^default')}: default names unknown platform {default!r}")
    territories = _territories((path.parent / territories_name).resolve(), platforms)
    return RoutingTable(platforms, territories, default, path)

"""SMART scopes (``system/ServiceRequest.c``, ``system/*.rs``, v1 ``system/Task.read``) as data.

Only the ``system`` context is meaningful for backend services: ``patient/`` and ``user/`` scopes are never
granted. Permissions are SMART v2's ``c r u d s``; the v1 suffixes map onto them (``read`` = ``rs``,
``write`` = ``cud``, ``*`` = all).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Permission(StrEnum):
    CREATE = "c"
    READ = "r"
    UPDATE = "u"
    DELETE = "d"
    SEARCH = "s"


_ORDER = "cruds"
#: Types a wildcard scope (``system/*.rs``) does not reach: the audit trail is granted by name only.
NAMED_ONLY = frozenset({"AuditEvent"})
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^system/(\*|[A-Z][A-Za-z]{1,63})\.(read|write|\*|c?r?u?d?s?)$")


@dataclass(frozen=True, slots=True)
class Scope:
    resource_type: str  # "*" for every type
    permissions: frozenset[Permission]

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        """The scope, or None for anything that is not a well-formed ``system/`` resource scope."""
        match = _SCOPE.match(text)
        if match is None or not match.group(2):
            return None
        letters = _V1.get(match.group(2), match.group(2))
        return cls(match.group(1), frozenset(Permission(letter) for letter in letters))

    def reaches(self, resource_type: str) -> bool:
        if self.resource_type == "*":
            return resource_type not in NAMED_ONLY
        return self.resource_type == resource_type

    def covers(self, other: Scope) -> bool:
        if other.resource_type == "*":
            return self.resource_type == "*" and other.permissions <= self.permissions
        return self.reaches(other.resource_type) and other.permissions <= self.permissions

    def __str__(self) -> str:
        return f"system/{self.resource_type}.{''.join(p for p in _ORDER if Permission(p) in self.permissions)}"


@dataclass(frozen=True, slots=True)
class ScopeSet:
    scopes: tuple[Scope, ...]

    @classmethod
    def parse(cls, texts: Iterable[str]) -> ScopeSet:
        return cls(tuple(scope for text in texts if (scope := Scope.parse(text)) is not None))

    def allows(self, resource_type: str, permission: Permission) -> bool:
        return any(scope.reaches(resource_type) and permission in scope.permissions for scope in self.scopes)

    def grant(self, requested: Iterable[str]) -> list[str]:
        """The requested scopes this set covers, as the client wrote them (others are dropped, RFC 6749 §3.3)."""
        granted = []
        for text in requested:
            scope = Scope.parse(text)
            if scope is not None and any(allowed.covers(scope) for allowed in self.scopes):
                granted.append(text)
        return list(dict.fromkeys(granted))

    def __str__(self) -> str:
        return " ".join(str(scope) for scope in self.scopes)

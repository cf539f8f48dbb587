"""FHIR primitive values the gateway mints: ids and instants."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def fhir_instant(moment: datetime) -> str:
    """An R4 ``instant`` (millisecond precision, UTC as ``Z``)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def is_id(text: str) -> bool:
    """An R4 ``id`` (logical id, version id): 1 to 64 of [A-Za-z0-9-.]."""
    return _ID.fullmatch(text) is not None


def new_id() -> str:
    """A server-assigned logical id (R4 ``id``: up to 64 of [A-Za-z0-9-.])."""
    return str(uuid.uuid4())

"""What a history interaction asks (R4 http.html#history): ``_since``, ``_count``, and the page (``_offset``, in
the walk's ``_snapshot``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.errors import InvalidRequest, IssueCode
from gateway.fhir.primitives import utc_now

#: R4's instant: to the second at least, with its offset.
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
#: How the answer is written: echoed in every paging link.
_ANSWER_PARAMETERS = ("_format", "_pretty")


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    count: int
    offset: int = 0
    since: datetime | None = None
    #: What every paging link repeats (``_since``, ``_format``, ``_pretty``): all but ``_count``, ``_offset`` and
    #: ``_snapshot``.
    echo: tuple[tuple[str, str], ...] = field(default=())
    #: The walk's moment (its first page's): only the versions written up to it are paged, so that the offsets of
    #: a newest-first history stay put while versions are written during the walk. The links carry it.
    snapshot: datetime = field(default_factory=utc_now)


def _invalid(message: str, name: str) -> InvalidRequest:
    return InvalidRequest.single(IssueCode.SEARCH_PARAMETER_INVALID, message, name)


def _whole(name: str, raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise _invalid(f"{name} must be a whole number from 0", name)
    return int(raw)


def parse_history(params: list[tuple[str, str]], default_count: int, max_count: int) -> HistoryQuery:
    """The history's parameters; another is a 400 (strict, as search is). A ``_count`` above ``max_count`` is
    held to it (R4: the server may return fewer), not refused."""
    count, offset, since, snapshot = default_count, 0, None, None
    echo: list[tuple[str, str]] = []
    for name, raw in params:
        if name == "_count":
            count = min(_whole(name, raw), max_count)
        elif name == "_offset":
            offset = _whole(name, raw)
        elif name == "_since":
            if not _INSTANT.match(raw):
                raise _invalid("_since must be an instant with its offset, e.g. 2026-12-01T00:00:00Z", name)
            try:
                since = datetime.fromisoformat(raw)
            except ValueError as exc:
                raise _invalid(f"_since is not a date and time: {raw[:40]!r}", name) from exc
            echo.append((name, raw))
        elif name == "_snapshot":
            try:
                snapshot = datetime.fromisoformat(raw)
                if snapshot.tzinfo is None:
                    raise ValueError("no offset")
                snapshot = snapshot.astimezone(UTC)
            except (ValueError, OverflowError) as exc:
                raise _invalid(f"_snapshot: {raw[:40]!r} is not a paging position this gateway wrote", name) from exc
        elif name in _ANSWER_PARAMETERS:
            echo.append((name, raw))
        else:
            raise _invalid(f"history takes _since, _count and _format; not {name[:64]!r}", name[:64])
    return HistoryQuery(count, offset, since, tuple(echo), snapshot or utc_now())

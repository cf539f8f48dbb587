"""Structured logs (JSON lines by default). Log events carry ids, routes, statuses and durations — never names,
identifiers or bodies of patients."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer

#: An exception as its type and where it was raised — no message, no locals: both may hold what a patient's data
#: was being parsed or stored (pydantic, lxml and hl7 errors quote the input; a frame's locals hold the resource).
_exception_frames = structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False, use_rich=False))


def _without_exception_values(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for raised in _exceptions(event.get("exception")):
        raised.pop("exc_value", None)
        raised.pop("exc_notes", None)
        raised.pop("syntax_error", None)
    return event


def _exceptions(rendered: Any) -> list[dict[str, Any]]:
    """Each exception of a rendered chain, those of exception groups included."""
    found: list[dict[str, Any]] = []
    for raised in rendered if isinstance(rendered, list) else ():
        if isinstance(raised, dict):
            found.append(raised)
            for member in raised.get("exceptions") or ():
                found += _exceptions(member)
    return found


def _exception_as_text(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """For the development console: the exception chain as lines of ``Type`` then ``  file:line in function``."""
    if isinstance(event.get("exception"), list):
        lines = []
        for raised in _exceptions(event["exception"]):
            lines.append(str(raised.get("exc_type")))
            lines += [f"  {f['filename']}:{f['lineno']} in {f['name']}" for f in raised.get("frames") or ()]
        event["exception"] = "\n".join(lines)
    return event


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    renderers: list[structlog.types.Processor] = (
        [structlog.processors.JSONRenderer()]
        if json
        else [_exception_as_text, structlog.dev.ConsoleRenderer(colors=False)]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _exception_frames,
            _without_exception_values,
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping().get(level.upper(), 20)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )

"""Search parameters as data: what each resource type can be searched by, how index values are extracted from a
resource, and how a query string becomes criteria. Pure: the store turns criteria into SQL, the API lists the
parameters in the CapabilityStatement, and nothing else knows about them.

Names and paths follow the R4 search parameter registry (search-parameters.json); only the types we need are
implemented: token, reference, string, date (with prefixes and partial dates), and the special ``_id`` /
``_lastUpdated``; the modifiers each type takes are ``MODIFIERS``. The result parameters (``_include`` /
``_revinclude`` over every reference parameter, ``_summary``, ``_elements``, ``_total``, ``_sort``, ``_count`` and the
paging position) are parsed here too, so that the CapabilityStatement lists what this table says and nothing else.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from gateway.errors import BusinessRuleViolation, InvalidRequest, IssueCode
from gateway.fhir.france import INS_SYSTEMS, ins_form_problem
from gateway.fhir.primitives import fhir_instant
from gateway.fhir.types import Resource


class ParamType(StrEnum):
    TOKEN = "token"
    REFERENCE = "reference"
    STRING = "string"
    DATE = "date"


@dataclass(frozen=True, slots=True)
class SearchParameter:
    name: str
    type: ParamType
    paths: tuple[str, ...]  # dotted element paths from the resource root
    documentation: str = ""
    targets: tuple[str, ...] = ()  # for references: the types it may point to (empty: any)
    #: Parameters of the same type whose index rows hold some of this one's values already (``name``: ``family``
    #: and ``given``): a search by this one reads their rows too, and those values are not written again under its
    #: name — its own rows hold only its other paths' (``name.text``).
    shares: tuple[str, ...] = ()


def _p(
    name: str,
    kind: ParamType,
    *paths: str,
    doc: str = "",
    targets: tuple[str, ...] = (),
    shares: tuple[str, ...] = (),
) -> SearchParameter:
    return SearchParameter(name, kind, paths, doc, targets, shares)


T, R, S, D = ParamType.TOKEN, ParamType.REFERENCE, ParamType.STRING, ParamType.DATE

SEARCH_PARAMETERS: Mapping[str, Mapping[str, SearchParameter]] = {
    resource_type: {parameter.name: parameter for parameter in parameters}
    for resource_type, parameters in {
        "ServiceRequest": (
            _p("identifier", T, "identifier", doc="The sender's identifier for the request"),
            _p("subject", R, "subject"),
            _p("patient", R, "subject", targets=("Patient",)),
            _p("status", T, "status"),
            _p("intent", T, "intent"),
            _p("code", T, "code", doc="Mission (CodeSystem dac-mission)"),
            _p("requester", R, "requester"),
            _p("performer", R, "performer", doc="The platform the request was routed to"),
            _p("priority", T, "priority"),
            _p("supporting-info", R, "supportingInfo", doc="The referral's Consent and CareTeam (supportingInfo)"),
        ),
        "Task": (
            _p("identifier", T, "identifier"),
            _p("subject", R, "for"),
            _p("patient", R, "for", targets=("Patient",)),
            _p("status", T, "status"),
            _p("business-status", T, "businessStatus"),
            _p("code", T, "code"),
            _p("owner", R, "owner"),
            _p("focus", R, "focus"),
            _p("requester", R, "requester"),
            _p("deadline", D, "restriction.period.end", doc="When the Task is due (GP validation deadline)"),
        ),
        "Consent": (
            _p("identifier", T, "identifier"),
            _p("patient", R, "patient"),
            _p("status", T, "status"),
            _p("category", T, "category"),
        ),
        "CareTeam": (
            _p("identifier", T, "identifier"),
            _p("subject", R, "subject"),
            _p("patient", R, "subject", targets=("Patient",)),
            _p("status", T, "status"),
            _p("participant", R, "participant.member"),
        ),
        "Patient": (
            _p("identifier", T, "identifier"),
            _p("family", S, "name.family"),
            _p("given", S, "name.given"),
            _p("name", S, "name.family", "name.given", "name.text", shares=("family", "given")),
            _p("birthdate", D, "birthDate"),
            _p("gender", T, "gender"),
            _p("general-practitioner", R, "generalPractitioner"),
        ),
        "Practitioner": (
            _p("identifier", T, "identifier"),
            _p("family", S, "name.family"),
            _p("given", S, "name.given"),
            _p("name", S, "name.family", "name.given", "name.text", shares=("family", "given")),
        ),
        "PractitionerRole": (
            _p("identifier", T, "identifier"),
            _p("practitioner", R, "practitioner"),
            _p("organization", R, "organization"),
            _p("role", T, "code"),
        ),
        "Organization": (
            _p("identifier", T, "identifier"),
            _p("name", S, "name", "alias"),
        ),
        "RelatedPerson": (
            _p("identifier", T, "identifier"),
            _p("patient", R, "patient"),
        ),
        "Provenance": (
            _p("target", R, "target", doc="What the Provenance is about (Task, ServiceRequest)"),
            _p("agent", R, "agent.who"),
        ),
        "AuditEvent": (
            _p("date", D, "meta.lastUpdated", doc="When the event was stored (at most ~0.1 s after recorded)"),
            _p("agent", T, "agent.who.identifier", doc="Client id (https://fhir.dac-gateway.org/client-id)"),
            _p("entity", R, "entity.what", doc="A resource the interaction touched"),
            _p("subtype", T, "subtype", doc="The FHIR interaction (http://hl7.org/fhir/restful-interaction)"),
            _p("outcome", T, "outcome", doc="0 success, 4 refused (4xx), 8 failed (5xx)"),
            _p("action", T, "action"),
        ),
        "DocumentReference": (
            _p("identifier", T, "identifier"),
            _p("subject", R, "subject"),
            _p("patient", R, "subject", targets=("Patient",)),
            _p("status", T, "status"),
        ),
    }.items()
}

#: Parameters every type has; they search the resources table itself, not the index.
COMMON_PARAMETERS = {
    "_id": SearchParameter("_id", ParamType.TOKEN, ("id",), "Logical id"),
    "_lastUpdated": SearchParameter("_lastUpdated", ParamType.DATE, ("meta.lastUpdated",), "When last changed"),
}


def indexed_as(resource_type: str, name: str) -> tuple[str, ...]:
    """The index row names a search by parameter ``name`` of ``resource_type`` reads: its own, and those of the
    parameters it shares values with (``SearchParameter.shares``)."""
    parameter = SEARCH_PARAMETERS.get(resource_type, {}).get(name)
    return (name, *parameter.shares) if parameter is not None else (name,)


def _own_paths(parameters: Mapping[str, SearchParameter], parameter: SearchParameter) -> tuple[tuple[str, ...], ...]:
    """The paths whose values a parameter's own index rows hold (each as its steps): not those a parameter it
    shares with indexes."""
    shared = {path for name in parameter.shares for path in parameters[name].paths}
    return tuple(tuple(path.split(".")) for path in parameter.paths if path not in shared)


def is_last_updated(parameter: SearchParameter) -> bool:
    """``_lastUpdated``, or a parameter of a type whose date is its storage time (AuditEvent ``date``): searched
    on the resources table's column, with prefixes, never indexed."""
    return parameter.paths == ("meta.lastUpdated",)


#: Per resource type, each indexed parameter with the paths its own rows hold (``_own_paths``).
_INDEXED: dict[str, tuple[tuple[SearchParameter, tuple[tuple[str, ...], ...]], ...]] = {
    resource_type: tuple(
        (parameter, _own_paths(parameters, parameter))
        for parameter in parameters.values()
        if not is_last_updated(parameter)  # the storage time: never indexed
    )
    for resource_type, parameters in SEARCH_PARAMETERS.items()
}


#: Result parameters: they shape the answer, they do not select.
#: More parameters than any real search uses; each criterion is a join, and ~1,500 of them made SQLite's
#: expression tree too large (a 500). Refused with a 400 before any SQL is built.
MAX_SEARCH_PARAMETERS = 50
RESULT_PARAMETERS = (
    "_count",
    "_offset",
    "_sort",
    "_summary",
    "_elements",
    "_total",
    "_totalMethod",
    "_include",
    "_revinclude",
    "_format",
    "_pretty",
    "_snapshot",
    "_cursor",
)
SORTS = {"_lastUpdated": False, "-_lastUpdated": True}


# --- index extraction -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexEntry:
    param: str
    system: str | None
    value: str
    #: a string's folded form (``fold``), what a search without ``:exact`` compares; None for other types
    folded: str | None = None


def _walk(node: Any, steps: Sequence[str]) -> Iterator[Any]:
    if not steps:
        if isinstance(node, list):
            yield from node
        elif node is not None:
            yield node
        return
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, steps)
    elif isinstance(node, dict):
        yield from _walk(node.get(steps[0]), steps[1:])


def fold(value: str) -> str:
    """A string as searched by default (R4 search.html#string: case and accents ignored, so ``helene`` finds
    "Hélène" and ``LÉROY`` "Leroy"): case-folded, decomposed (Unicode NFKD) without its combining marks, runs of
    white space one space. Index and search fold alike; ``:exact`` compares the text as stored instead."""
    decomposed = unicodedata.normalize("NFKD", value.casefold())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


def split_reference(reference: str) -> tuple[str | None, str]:
    """``Patient/123`` → (Patient, 123); absolute URLs and history suffixes are reduced to type and id."""
    parts = reference.split("/_history/", 1)[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return parts[-2], parts[-1]
    return None, parts[-1]


def _index_values(parameter: SearchParameter, value: Any) -> Iterator[tuple[str | None, str]]:
    if parameter.type is ParamType.REFERENCE:
        if isinstance(value, dict) and isinstance(value.get("reference"), str):
            target_type, target_id = split_reference(value["reference"])
            if not parameter.targets or target_type in parameter.targets:
                yield target_type, target_id
    elif parameter.type is ParamType.STRING:
        if isinstance(value, str) and value.strip():
            yield None, value
    elif parameter.type is ParamType.DATE:
        period = date_period(value) if isinstance(value, str) else None
        if period is not None:
            # The period the value names, as two instants that sort as text: its start as the value, its end
            # (exclusive) in the system column, so that a search compares periods (the store's ``_DATE_PREFIXES``).
            yield fhir_instant(period[1]), fhir_instant(period[0])
    elif isinstance(value, dict):
        if "coding" in value:  # CodeableConcept
            for coding in value.get("coding") or []:
                if isinstance(coding, dict) and coding.get("code"):
                    yield coding.get("system"), str(coding["code"])
        elif value.get("value") is not None:  # Identifier
            yield value.get("system"), str(value["value"])
        elif value.get("code"):  # Coding
            yield value.get("system"), str(value["code"])
    elif isinstance(value, (str, bool, int)):
        yield None, str(value).lower() if isinstance(value, bool) else str(value)


IDENTIFIER_MODIFIER = "identifier"


def index_entries(resource: Resource) -> list[IndexEntry]:
    """Every search index row of a resource (deduplicated). A reference given by identifier (a logical
    reference, e.g. a patient known only by INS) is indexed for the ``:identifier`` modifier."""
    seen: dict[IndexEntry, None] = {}
    for parameter, paths in _INDEXED.get(resource["resourceType"], ()):
        for steps in paths:
            for node in _walk(resource, steps):
                for system, value in _index_values(parameter, node):
                    folded = fold(value)[:1024] if parameter.type is ParamType.STRING else None
                    seen[IndexEntry(parameter.name, system, value[:1024], folded)] = None
                if parameter.type is ParamType.REFERENCE and isinstance(node, dict):
                    identifier = node.get("identifier")
                    if isinstance(identifier, dict) and identifier.get("value"):
                        name = f"{parameter.name}:{IDENTIFIER_MODIFIER}"
                        seen[IndexEntry(name, identifier.get("system"), str(identifier["value"]))] = None
    if resource["resourceType"] == "Consent" and (resource.get("provision") or {}).get("type") == DENY:
        # A denial's patient again, under a name of its own: the few denials of a patient are found in the index
        # without reading every Consent of that patient (one per referral: unbounded) — ``DENIAL_PARAMS``.
        for entry in list(seen):
            if entry.param in _DENIAL_OF:
                seen[IndexEntry(_DENIAL_OF[entry.param], entry.system, entry.value)] = None
    return list(seen)


#: Index rows, not search parameters (no search names them): a Consent whose provision denies (``provision.type``
#: deny, whatever its status) is indexed under these names beside ``patient`` and ``patient:identifier``, so that the
#: oppositions of a patient are looked up among its denials, a handful, however many Consents its referrals brought.
DENY = "deny"
DENIAL_PARAMS = ("denial-patient", f"denial-patient:{IDENTIFIER_MODIFIER}")
_DENIAL_OF = {"patient": DENIAL_PARAMS[0], f"patient:{IDENTIFIER_MODIFIER}": DENIAL_PARAMS[1]}


# --- query parsing ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenValue:
    system: str | None  # None: any system; "": no system
    value: str | None  # None: any value (``system|``)


#: The date prefixes searched (R4 search.html#prefix); ``ap`` (approximately, a server's own choice of margin) is not.
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")


@dataclass(frozen=True, slots=True)
class DateValue:
    """A searched date: its prefix and the [start, end) it names. What a prefix selects is the store's to say, as
    R4 defines it against the stored value's own period (``resource`` below): eq, the searched period contains it;
    ne, it does not; gt / lt, it reaches past the searched end / before the searched start; ge / le, either that or
    eq; sa / eb, it lies wholly after / before the searched period."""

    prefix: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Criterion:
    """One parameter occurrence: its values are ORed; criteria are ANDed. ``modifier``: ``exact`` or ``contains``
    (strings), ``not`` (tokens: none of the values), ``missing`` (any indexed parameter: ``missing`` says which)."""

    parameter: SearchParameter
    tokens: tuple[TokenValue, ...] = ()
    strings: tuple[str, ...] = ()
    modifier: str | None = None
    dates: tuple[DateValue, ...] = ()
    missing: bool = False


@dataclass(frozen=True, slots=True)
class Include:
    """``_include=Source:param[:Target]`` (``reverse`` False: the resources the matches' ``param`` references) or
    ``_revinclude=Source:param[:Target]`` (``reverse``: the ``Source`` resources whose ``param`` references a match);
    ``iterate``: applied to included resources too (``:iterate``)."""

    source: str
    parameter: str
    target: str | None
    reverse: bool
    iterate: bool = False

    def __str__(self) -> str:
        return ":".join(part for part in (self.source, self.parameter, self.target) if part)


class Summary(StrEnum):
    """``_summary`` (R4 search.html#summary)."""

    TRUE = "true"  # the elements R4 marks isSummary
    TEXT = "text"  # text, id, meta and the mandatory elements
    DATA = "data"  # all but text
    COUNT = "count"  # the total alone
    FALSE = "false"  # all


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page of a walk starts: after the match whose sort key (its last update as at the walk's
    snapshot) and id these are (``gateway.store.repository``)."""

    moment: datetime
    id: str


@dataclass(frozen=True, slots=True)
class SearchQuery:
    resource_type: str
    criteria: tuple[Criterion, ...]
    count: int
    offset: int = 0
    descending: bool = False
    summary_count: bool = False
    #: What the paging links repeat: the selecting parameters and the result parameters honoured (``_sort``,
    #: ``_summary``, ``_elements``, ``_include``, ``_total``, ``_format``, ``_pretty``) — all but ``_count`` and the
    #: paging position (``_snapshot``, ``_cursor``, ``_offset``), which each link sets.
    echo: tuple[tuple[str, str], ...] = field(default=())
    summary: Summary = Summary.FALSE
    elements: tuple[str, ...] = ()
    includes: tuple[Include, ...] = ()
    #: False with ``_total=none``: no count is made, the Bundle has no ``total``.
    total: bool = True
    #: The instant a walk over the pages began (its first page's): each page shows the matches as they were then
    #: sorted, so that a write during the walk neither repeats nor hides one (None: now, a first page).
    snapshot: datetime | None = None
    cursor: Cursor | None = None
    #: Unknown parameters ignored under ``Prefer: handling=lenient`` (R4 search.html#errors).
    ignored: tuple[str, ...] = ()


def _invalid(message: str, name: str) -> InvalidRequest:
    return InvalidRequest.single(IssueCode.SEARCH_PARAMETER_INVALID, message, name)


_DATE = re.compile(
    r"^(?P<prefix>eq|ne|gt|lt|ge|le|sa|eb|ap)?(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})"
    r"(T(?P<hour>\d{2}):(?P<minute>\d{2})(:(?P<second>\d{2})(?P<fraction>\.\d+)?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


#: The time zone of a date or time without an offset, stored or searched: R4 search.html#date, "where both search
#: parameters and resource element date times do not have time zones, the server's local time zone should be
#: assumed" — a French gateway's, so a birth date 1941-06-14 is that day in Paris, and deadline=2026-12-05 finds
#: 2026-12-05T00:30:00+01:00. Index and search read such values alike (``_period``).
LOCAL_TIME_ZONE = ZoneInfo("Europe/Paris")


#: The earliest instant a period can start at. Paris kept local mean time (+00:09:21) until 1911, so a date of the
#: year 1 without offset starts before ``datetime.min`` in UTC; such a start is clamped here (``_utc``) rather than
#: leaving the value unindexed and its search a 400.
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)  # the end of the periods that end past year 9999


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC; one that falls before ``datetime.min`` there (year 1, east of Greenwich) is ``_EARLIEST``."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        if (moment.utcoffset() or timedelta(0)) > timedelta(0):
            return _EARLIEST
        raise  # past year 9999: not a date this gateway can index, as before


def _period(g: Mapping[str, str | None], *, milliseconds: bool = False) -> tuple[datetime, datetime]:
    """The [start, end) a date of this precision names, as UTC instants; ``milliseconds``: a fraction of a second
    counts.

    A day, month or year is reckoned on the local calendar: a day in Paris is 23 or 25 hours long when the clocks
    change, and ends at the next local midnight. A minute, second or millisecond is reckoned in UTC from its start:
    on the wall clock, 02:59 + 1 min on the morning the clocks go forward is 03:00, an instant *before* 02:59's
    (inverted period), and 02:59:59 + 1 s on the morning they go back spans the repeated hour.

    A local time that is not unambiguous is read as zoneinfo reads it (PEP 495, ``fold=0``): one the clocks skip
    (2026-03-29T02:30, in the gap) with the offset before the change, so it is the instant the clocks read 03:30
    CEST; one they show twice (2026-10-25T02:30) as its first occurrence, in summer time. Either way the period is
    one minute (second, millisecond) long, after its start."""
    if g["tz"] is None:
        tz: tzinfo = LOCAL_TIME_ZONE
    elif g["tz"] == "Z":
        tz = UTC
    else:
        tz = datetime.fromisoformat(f"2000-01-01T00:00:00{g['tz']}").tzinfo or UTC
    start = datetime(
        int(g["year"] or 0),
        int(g["month"] or 1),
        int(g["day"] or 1),
        int(g["hour"] or 0),
        int(g["minute"] or 0),
        int(g["second"] or 0),
        tzinfo=tz,
    )
    if milliseconds and g["fraction"]:
        start += timedelta(milliseconds=int(g["fraction"][1:4].ljust(3, "0")))
        length = timedelta(milliseconds=1)
    elif g["second"]:
        length = timedelta(seconds=1)
    elif g["minute"]:
        length = timedelta(minutes=1)
    else:
        try:
            if g["day"]:
                end = start + timedelta(days=1)  # aware arithmetic is on the wall clock: the next midnight
            elif g["month"]:
                year, month = divmod(int(g["month"]), 12)
                end = start.replace(year=start.year + year, month=month + 1)
            else:
                end = start.replace(year=start.year + 1)
        except (OverflowError, ValueError):  # the last day, month or year of 9999 (a "no end" placeholder)
            # Its end, midnight of year 10000 there, is no datetime: the last day's start in UTC plus a day (no
            # clock change on 31 December), or the latest instant where that is past it (west of Greenwich).
            last_day = _utc(datetime(9999, 12, 31, tzinfo=tz))
            return _utc(start), last_day + timedelta(days=1) if _LATEST - last_day > timedelta(days=1) else _LATEST
        return _utc(start), min(_utc(end), _LATEST)
    utc_start = _utc(start)
    return utc_start, utc_start + length if _LATEST - utc_start > length else _LATEST


def date_period(text: str) -> tuple[datetime, datetime] | None:
    """The [start, end) instants a stored date, dateTime or instant names (``1941-06-14``: that whole day, in
    ``LOCAL_TIME_ZONE`` when it has no offset); None when it is none of those."""
    match = _DATE.match(text)
    if match is None or match.group("prefix"):
        return None
    try:
        return _period(match.groupdict(), milliseconds=True)
    except (ValueError, OverflowError):
        return None


def _date_value(text: str, name: str) -> DateValue:
    """A prefixed, possibly partial date as searched (FHIR R4 search §3.1.1.5.7)."""
    match = _DATE.match(text)
    if not match:
        raise _invalid(f"{name}: {text!r} is not a FHIR date (e.g. ge2026-01-01 or 2026-11-23T10:00:00Z)", name)
    prefix = match.group("prefix") or "eq"
    if prefix not in DATE_PREFIXES:
        raise _invalid(f"{name}: the prefix {prefix!r} is not supported (use {', '.join(DATE_PREFIXES)})", name)
    try:
        # A fraction of a second narrows the search as it narrows a stored value (…25.123Z is not …25.910Z).
        start, end = _period(match.groupdict(), milliseconds=True)
    except (ValueError, OverflowError) as exc:
        raise _invalid(f"{name}: {text!r} is not a valid date", name) from exc
    return DateValue(prefix, start, end)


#: The modifiers each type of parameter takes (beside ``missing``, which every indexed one takes) — what the
#: CapabilityStatement lists.
MODIFIERS: Mapping[ParamType, tuple[str, ...]] = {
    ParamType.STRING: ("exact", "contains", "missing"),
    ParamType.TOKEN: ("not", "missing"),
    ParamType.REFERENCE: (IDENTIFIER_MODIFIER, "missing"),
    ParamType.DATE: ("missing",),
}


def _criterion(parameter: SearchParameter, name: str, modifier: str | None, raw: str) -> Criterion:
    special = parameter.name in COMMON_PARAMETERS or is_last_updated(parameter)  # never missing, not indexed
    if modifier is not None and (modifier not in MODIFIERS[parameter.type] or special):
        supported = () if special else MODIFIERS[parameter.type]
        hint = f" (use {', '.join(f':{m}' for m in supported)})" if supported else ""
        raise _invalid(f"{name}: modifier :{modifier} is not supported{hint}", name)
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise _invalid(f"{name} takes true or false", name)
        return Criterion(parameter, modifier=modifier, missing=raw == "true")
    values = [value for value in raw.split(",") if value != ""]
    if not values:
        raise _invalid(f"{name} needs a value", name)
    if parameter.type is ParamType.DATE:
        return Criterion(parameter, dates=tuple(_date_value(value, name) for value in values))
    if parameter.type is ParamType.STRING:
        # :exact compares the text as stored; a search without it (a prefix) or with :contains, the folded forms.
        strings = tuple(values) if modifier == "exact" else tuple(fold(value) for value in values)
        return Criterion(parameter, strings=strings, modifier=modifier)
    if modifier == IDENTIFIER_MODIFIER:
        # patient:identifier=system|value — searched like a token, under its own index name.
        parameter = SearchParameter(f"{parameter.name}:{IDENTIFIER_MODIFIER}", ParamType.TOKEN, parameter.paths)
        modifier = None
    tokens = []
    for value in values:
        if parameter.type is ParamType.REFERENCE:
            target_type, target_id = split_reference(value)
            if target_type is not None and parameter.targets and target_type not in parameter.targets:
                raise _invalid(f"{name} takes a reference to {', '.join(parameter.targets)}", name)
            tokens.append(TokenValue(target_type, target_id))
        elif parameter.type is ParamType.TOKEN and "|" in value:
            system, _, code = value.partition("|")
            if system in INS_SYSTEMS and code and (problem := ins_form_problem(code)):
                # The INS's one form, as everywhere it is posted: another spelling would find nothing, and say so
                # with a 200 (an empty Bundle) where the caller means a patient.
                raise BusinessRuleViolation.single(IssueCode.INS_KEY_INVALID, f"{name}: {problem} ({system})", name)
            tokens.append(TokenValue(system, code or None))
        else:
            tokens.append(TokenValue(None, value))
    return Criterion(parameter, tokens=tuple(tokens), modifier=modifier)


def documentation(parameter: SearchParameter) -> str:
    """A parameter's documentation as the CapabilityStatement gives it: with the modifiers it takes (R4's
    CapabilityStatement has no element for them)."""
    parts = [f"{parameter.documentation.rstrip('.')}."] if parameter.documentation else []
    if parameter.type is ParamType.STRING:
        parts.append("Case and accents ignored, the start of the value, unless :exact.")
    if not (parameter.name in COMMON_PARAMETERS or is_last_updated(parameter)):
        parts.append(f"Modifiers: {', '.join(f':{m}' for m in MODIFIERS[parameter.type])}.")
    return " ".join(parts)


#: The result parameters, as the CapabilityStatement lists them (name, R4 search parameter type, documentation).
RESULT_PARAMETER_DEFINITIONS: tuple[tuple[str, str, str], ...] = (
    ("_count", "number", "Page size; one above the maximum is the maximum (the self link says which applied)"),
    ("_sort", "string", "_lastUpdated (oldest first, the default) or -_lastUpdated, id breaking ties"),
    ("_summary", "token", "true (R4 isSummary elements), text, data, count, false; cut resources are SUBSETTED"),
    ("_elements", "string", "Top-level elements to return, beside id, meta and mandatory ones; SUBSETTED"),
    ("_total", "token", "none (no total), estimate, accurate (both counted); also _totalMethod (fhirpy)"),
    ("_include", "special", "Type:parameter[:Target] from the matches; :iterate from what was included too"),
    ("_revinclude", "special", "Type:parameter[:Target] pointing to the matches; :iterate from what was included"),
    (
        "_cursor",
        "special",
        "Paging position the next links carry, with _snapshot: each match existing at the first page seen once",
    ),
)


def includes(resource_type: str) -> list[str]:
    """What ``_include`` takes on a search of ``resource_type``: each of its reference parameters."""
    parameters = SEARCH_PARAMETERS.get(resource_type, {})
    return [f"{resource_type}:{p.name}" for p in parameters.values() if p.type is ParamType.REFERENCE]


def revincludes(resource_type: str) -> list[str]:
    """What ``_revinclude`` takes on a search of ``resource_type``: every reference parameter of a served type
    that may point to it."""
    return [
        f"{source}:{p.name}"
        for source, parameters in sorted(SEARCH_PARAMETERS.items())
        for p in parameters.values()
        if p.type is ParamType.REFERENCE and (not p.targets or resource_type in p.targets)
    ]


def _include(resource_type: str, name: str, raw: str) -> Include:
    reverse, modifier = name.startswith("_revinclude"), name.partition(":")[2]
    if modifier not in ("", "iterate"):
        raise _invalid(f"{name}: modifier :{modifier} is not supported (use :iterate)", name)
    source, _, rest = raw.partition(":")
    parameter_name, _, target = rest.partition(":")
    parameter = SEARCH_PARAMETERS.get(source, {}).get(parameter_name)
    if parameter is None or parameter.type is not ParamType.REFERENCE:
        raise _invalid(f"{name}: {raw!r} is not Type:parameter, a reference parameter of a served type", name)
    if target and (target not in SEARCH_PARAMETERS or (parameter.targets and target not in parameter.targets)):
        raise _invalid(f"{name}: {raw!r} names a target type {source}:{parameter_name} cannot reference", name)
    if not modifier and not reverse and source != resource_type:
        raise _invalid(f"{name}: {raw!r} does not start from {resource_type} (or use _include:iterate)", name)
    if not modifier and reverse and f"{source}:{parameter_name}" not in revincludes(resource_type):
        raise _invalid(f"{name}: {source}:{parameter_name} cannot reference a {resource_type}", name)
    return Include(source, parameter_name, target or None, reverse, modifier == "iterate")


def _instant(name: str, raw: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            raise ValueError("no offset")
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # overflow: year 1 east of Greenwich
        raise _invalid(f"{name}: {raw!r} is not a paging position this gateway wrote", name) from exc


def paging_instant(moment: datetime) -> str:
    """An instant of a paging link (``_snapshot``, ``_cursor``): to the microsecond, as stored."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


#: ``_total`` (R4) and fhirpy's ``_totalMethod`` (Aidbox's name; ``count`` is R4's ``accurate``): whether to count.
_TOTALS = {"none": False, "estimate": True, "accurate": True, "count": True}


def parse_search(
    resource_type: str,
    params: Sequence[tuple[str, str]],
    *,
    default_count: int,
    max_count: int,
    lenient: bool = False,
) -> SearchQuery:
    """Query string pairs → SearchQuery. Unknown parameters are a 400, never silently ignored: an ignored
    filter would return other patients' data — unless the client asked for that (``lenient``, from ``Prefer:
    handling=lenient``): then they are listed in ``ignored``, for the answer to say so. A ``_count`` above
    ``max_count`` is ``max_count`` (R4: a server may return fewer; the links say what was applied)."""
    if len(params) > MAX_SEARCH_PARAMETERS:
        raise InvalidRequest.single(
            IssueCode.SEARCH_PARAMETER_INVALID,
            f"a search takes at most {MAX_SEARCH_PARAMETERS} parameters; this one has {len(params)}",
            None,
            "too-long",
        )
    for name, raw in params:
        if "\x00" in name or "\x00" in raw:
            # PostgreSQL text cannot hold NUL (a driver error, a 500); SQLite can: refused for both, as in bodies.
            raise InvalidRequest.single(
                IssueCode.VALUE_TOO_LONG, f"search parameter {name!r} holds a NUL character", name, "value"
            )
    known = SEARCH_PARAMETERS.get(resource_type, {})
    criteria: list[Criterion] = []
    echo: list[tuple[str, str]] = []
    found_includes: list[Include] = []
    ignored: list[str] = []
    count, offset, descending, summary, total = default_count, 0, False, Summary.FALSE, True
    elements: tuple[str, ...] = ()
    snapshot: datetime | None = None
    cursor: Cursor | None = None
    for name, raw in params:
        base, _, modifier = name.partition(":")
        if base in RESULT_PARAMETERS:
            if base == "_count":
                count = min(_integer(name, raw, 0, 10**9), max_count)
            elif base == "_offset":
                offset = _integer(name, raw, 0, 10**9)
            elif base == "_snapshot":
                snapshot = _instant(name, raw)
            elif base == "_cursor":
                moment, _, last_id = raw.rpartition(",")
                cursor = Cursor(_instant(name, moment), last_id)
            elif base == "_sort":
                if raw not in SORTS:
                    raise _invalid(f"_sort supports {', '.join(SORTS)}", name)
                descending = SORTS[raw]
                echo.append((name, raw))
            elif base == "_summary":
                if raw not in Summary.__members__.values():
                    raise _invalid(f"_summary supports {', '.join(Summary)}", name)
                summary = Summary(raw)
                echo.append((name, raw))
            elif base in ("_total", "_totalMethod"):
                if raw not in _TOTALS:
                    raise _invalid(f"{base} supports none, estimate and accurate", name)
                total = _TOTALS[raw]
                echo.append((name, raw))
            elif base == "_elements":
                elements = tuple(dict.fromkeys(e.strip() for e in raw.split(",") if e.strip()))
                if not elements or not all(re.fullmatch(r"[a-z][A-Za-z0-9]*(\[x\])?", e) for e in elements):
                    raise _invalid("_elements takes element names of the resource, e.g. _elements=status,subject", name)
                echo.append((name, raw))
            elif base in ("_include", "_revinclude"):
                found_includes.append(_include(resource_type, name, raw))
                echo.append((name, raw))
            else:  # _format, _pretty: how the answer is written, and so its other pages
                echo.append((name, raw))
            continue
        parameter = known.get(base) or COMMON_PARAMETERS.get(base)
        if parameter is None:
            if lenient:
                ignored.append(name)
                continue
            supported = sorted([*known, *COMMON_PARAMETERS, *RESULT_PARAMETERS])
            raise InvalidRequest.single(
                IssueCode.SEARCH_PARAMETER_UNKNOWN,
                f"{resource_type} has no search parameter {base!r}; supported: {', '.join(supported)}",
                name,
                "not-supported",
            )
        criteria.append(_criterion(parameter, name, modifier or None, raw))
        echo.append((name, raw))
    if elements and summary is not Summary.FALSE:
        raise _invalid("_elements and _summary cannot be combined (R4 leaves their union undefined)", "_elements")
    return SearchQuery(
        resource_type,
        tuple(criteria),
        count,
        offset,
        descending,
        summary is Summary.COUNT,
        tuple(echo),
        summary=summary,
        elements=elements,
        includes=tuple(found_includes),
        total=total,
        snapshot=snapshot,
        cursor=cursor,
        ignored=tuple(ignored),
    )


def parse_condition(resource_type: str, criteria: str, where: str, label: str) -> SearchQuery:
    """The search of a conditional create (R4 http.html#ccreate: what would follow the ``?`` of a search URL) —
    the ``If-None-Exist`` header, or a transaction entry's ``request.ifNoneExist``. At most two matches are ever
    needed (none, one, several). A search that is not valid is a 400 whose issues point at ``where``, their
    diagnostics prefixed with ``label``: the parameter alone would name nothing the client sent as such."""
    params = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
    try:
        if result := [name for name, _ in params if name.partition(":")[0] in RESULT_PARAMETERS]:
            raise _invalid(f"{', '.join(result)} shapes a search's answer, and selects nothing", result[0])
        query = parse_search(resource_type, params, default_count=2, max_count=2)
        if not query.criteria:
            # No criterion would match every resource the caller may see: the first one found adopted as this
            # entry's (another patient's record, a Consent stored in place of an opposition).
            raise _invalid("a condition needs at least one search parameter, e.g. identifier=system|value", label)
    except (InvalidRequest, BusinessRuleViolation) as exc:
        raise type(exc)(
            *(
                dataclasses.replace(issue, diagnostics=f"{label}: {issue.diagnostics}", expression=where)
                for issue in exc.issues
            )
        ) from exc
    return query


def _integer(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError as exc:
        raise _invalid(f"{name} must be a whole number", name) from exc
    if not low <= value <= high:
        raise _invalid(f"{name} must be between {low} and {high}", name)
    return value

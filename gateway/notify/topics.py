"""The topics one may subscribe to (DESIGN §12), what triggers each, what it may be filtered by — and a posted
Subscription read against the backport profile and these topics.

Filters are searches on the topic's resource (``Task?owner=Practitioner/123&code=gp-validation``), parsed by the
search code (``gateway.fhir.search.parse_search``) and matched against the index entries the store writes for the
changed resource (``index_entries``): the same parameter definitions, the same extraction, for a search and for a
notification.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeGuard
from urllib.parse import parse_qsl

from gateway.errors import BusinessRuleViolation, InvalidRequest, Issue, IssueCode
from gateway.fhir.outcome import CANONICAL_BASE
from gateway.fhir.search import Criterion, IndexEntry, ParamType, parse_search
from gateway.fhir.types import Resource

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
BACKPORT_SUBSCRIPTION = f"{BACKPORT}/backport-subscription"
SUBSCRIPTION_STATUS_PROFILE = f"{BACKPORT}/backport-subscription-status-r4"
NOTIFICATION_PROFILE = f"{BACKPORT}/backport-subscription-notification-r4"
FILTER_CRITERIA = f"{BACKPORT}/backport-filter-criteria"
PAYLOAD_CONTENT = f"{BACKPORT}/backport-payload-content"
HEARTBEAT_PERIOD = f"{BACKPORT}/backport-heartbeat-period"
TIMEOUT = f"{BACKPORT}/backport-timeout"
MAX_COUNT = f"{BACKPORT}/backport-max-count"
TOPIC_CANONICAL = f"{BACKPORT}/capabilitystatement-subscriptiontopic-canonical"

PAYLOAD_TYPES = ("application/fhir+json", "application/fhir+xml")
CONTENTS = ("empty", "id-only", "full-resource")
#: The shortest heartbeat period taken (seconds): a shorter one would be most of what is sent.
MIN_HEARTBEAT = 10
#: The largest unsignedInt / positiveInt (FHIR: 32-bit): a larger JSON number is not one (the XML reader refuses it
#: too), and a heartbeat period beyond it overflowed PostgreSQL's integer column (a 500).
MAX_INT = 2**31 - 1


def _status_changed(before: Resource | None, after: Resource) -> bool:
    return before is None or before.get("status") != after.get("status")


def _task_changed(before: Resource | None, after: Resource) -> bool:
    return before is None or any(before.get(key) != after.get(key) for key in ("status", "businessStatus", "owner"))


@dataclass(frozen=True, slots=True)
class Topic:
    url: str
    resource_type: str
    filters: tuple[str, ...]  # the search parameters of ``resource_type`` it may be filtered by
    triggered: Callable[[Resource | None, Resource], bool]  # (before — None when created —, after)
    description: str


REFERRAL_STATUS = Topic(
    f"{CANONICAL_BASE}/SubscriptionTopic/referral-status",
    "ServiceRequest",
    ("identifier", "requester", "patient", "performer", "status"),
    _status_changed,
    "A referral (ServiceRequest) created, or its status changed",
)
TASK = Topic(
    f"{CANONICAL_BASE}/SubscriptionTopic/task",
    "Task",
    ("owner", "code", "status", "focus"),
    _task_changed,
    "A Task created, or its status, businessStatus or owner changed",
)
TOPICS = {topic.url: topic for topic in (REFERRAL_STATUS, TASK)}
TOPIC_OF_TYPE = {topic.resource_type: topic for topic in TOPICS.values()}


@dataclass(frozen=True, slots=True)
class Filter:
    """One ``backport-filter-criteria``: the criteria of a search on the topic's resource (ANDed)."""

    text: str
    criteria: tuple[Criterion, ...]

    def matches(self, entries: Sequence[IndexEntry]) -> bool:
        return all(_criterion_matches(criterion, entries) for criterion in self.criteria)


def _criterion_matches(criterion: Criterion, entries: Sequence[IndexEntry]) -> bool:
    """A token or reference criterion (its values ORed) against a resource's index entries, as the store's SQL
    compares them: the value exactly; a system (or, for a reference, the target type) when one is given — ``""``
    meaning none."""
    name = criterion.parameter.name
    values = [entry for entry in entries if entry.param == name]
    for token in criterion.tokens:
        for entry in values:
            if token.value is not None and entry.value != token.value:
                continue
            if token.system is not None and (entry.system or "") != token.system:
                continue
            return True
    return False


def parse_filter(topic: Topic, text: str, expression: str) -> Filter:
    """``Task?owner=…&code=…`` for the topic's resource, by the parameters the topic allows, without modifiers (a
    422 naming ``expression`` otherwise)."""

    def refused(reason: str) -> BusinessRuleViolation:
        return BusinessRuleViolation.single(
            IssueCode.SUBSCRIPTION_FILTER_UNSUPPORTED, f"filter {text!r}: {reason}", expression
        )

    resource_type, _, query = text.partition("?")
    if resource_type != topic.resource_type or not query:
        raise refused(f"a filter of this topic is a search on {topic.resource_type} ({topic.resource_type}?name=value)")
    params = parse_qsl(query, keep_blank_values=True)
    for name, _ in params:
        if name not in topic.filters:
            raise refused(f"{name} is not a filter of this topic (use {', '.join(topic.filters)})")
    try:
        parsed = parse_search(topic.resource_type, params, default_count=1, max_count=1)
    except (InvalidRequest, BusinessRuleViolation) as exc:
        raise refused("; ".join(issue.diagnostics for issue in exc.issues)) from exc
    for criterion in parsed.criteria:
        if criterion.modifier is not None or criterion.parameter.type not in (ParamType.TOKEN, ParamType.REFERENCE):
            raise refused(f"{criterion.parameter.name} takes no modifier here")
    return Filter(text, parsed.criteria)


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    """A posted Subscription as the gateway takes it."""

    topic: Topic
    filters: tuple[Filter, ...]
    endpoint: str
    payload_type: str
    content: str
    headers: tuple[tuple[str, str], ...]
    heartbeat_period: int | None


def _extension(element: object, url: str) -> list[dict[str, object]]:
    if not isinstance(element, dict):
        return []
    return [e for e in element.get("extension") or [] if isinstance(e, dict) and e.get("url") == url]


@dataclass(frozen=True, slots=True)
class Channel:
    """How a stored Subscription's notifications are sent."""

    endpoint: str
    payload_type: str
    content: str
    headers: tuple[tuple[str, str], ...]
    #: ``backport-max-count``: how many events one notification may carry (1 when not given).
    max_count: int = 1
    #: ``backport-timeout``: the seconds each notification's POST may take (the gateway's own when not given).
    timeout: int | None = None


def channel_of(subscription: Resource) -> Channel:
    """A stored Subscription's channel (it was checked by ``read_subscription`` when created)."""
    channel = subscription.get("channel") or {}
    content = _extension(channel.get("_payload"), PAYLOAD_CONTENT)
    headers = tuple(
        (name.strip(), value.strip())
        for name, _, value in (str(header).partition(":") for header in channel.get("header") or [])
    )
    max_count = next((e.get("valuePositiveInt") for e in _extension(channel, MAX_COUNT)), 1)
    timeout = next((e.get("valueUnsignedInt") for e in _extension(channel, TIMEOUT)), None)
    return Channel(
        str(channel.get("endpoint", "")),
        str(channel.get("payload", PAYLOAD_TYPES[0])),
        str(content[0].get("valueCode")) if content else "id-only",
        headers,
        max_count if isinstance(max_count, int) and max_count > 0 else 1,
        timeout if _whole_seconds(timeout) else None,
    )


def _whole_seconds(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_INT


def filters_of(topic: Topic, subscription: Resource) -> tuple[Filter, ...]:
    """A stored Subscription's filters (ANDed, as R5's filterBy)."""
    extensions = _extension(subscription.get("_criteria"), FILTER_CRITERIA)
    return tuple(parse_filter(topic, str(e.get("valueString", "")), "Subscription.criteria") for e in extensions)


def read_subscription(resource: Resource, endpoint: Callable[[object, str], str | None]) -> SubscriptionRequest:
    """The posted Subscription checked against the backport profile and what this gateway offers; every problem
    found is a 422 issue naming its element. ``endpoint``: the callback rule (``gateway.routing.callbacks``)."""
    issues: list[Issue] = []

    def problem(code: IssueCode, diagnostics: str, expression: str) -> None:
        issues.append(Issue(code, diagnostics, expression, "business-rule"))

    if not isinstance(resource.get("reason"), str) or not resource["reason"].strip():
        problem(IssueCode.SUBSCRIPTION_INVALID, "reason is required (R4: 1..1)", "Subscription.reason")
    criteria = resource.get("criteria")
    topic = TOPICS.get(criteria) if isinstance(criteria, str) else None
    if not isinstance(criteria, str) or not criteria:
        problem(
            IssueCode.SUBSCRIPTION_INVALID, "criteria (the topic's canonical URL) is required", "Subscription.criteria"
        )
    elif topic is None:
        problem(
            IssueCode.SUBSCRIPTION_TOPIC_UNSUPPORTED,
            f"criteria names no topic of this gateway (use {' or '.join(TOPICS)})",
            "Subscription.criteria",
        )
    filters: list[Filter] = []
    criteria_element = resource.get("_criteria")
    for n, extension in enumerate(_extension(criteria_element, FILTER_CRITERIA)):
        where = f"Subscription.criteria.extension('{FILTER_CRITERIA}')[{n}].valueString"
        value = extension.get("valueString")
        if not isinstance(value, str):
            problem(IssueCode.SUBSCRIPTION_INVALID, "a filter criteria extension needs a valueString", where)
        elif topic is not None:
            try:
                filters.append(parse_filter(topic, value, where))
            except BusinessRuleViolation as exc:
                issues.extend(exc.issues)
    channel = resource.get("channel")
    channel = channel if isinstance(channel, dict) else {}
    if not channel:
        problem(IssueCode.SUBSCRIPTION_INVALID, "channel is required", "Subscription.channel")
    elif channel.get("type") != "rest-hook":
        problem(
            IssueCode.SUBSCRIPTION_CHANNEL_UNSUPPORTED, "channel.type must be rest-hook", "Subscription.channel.type"
        )
    url: str | None = None
    if channel:
        try:
            url = endpoint(channel.get("endpoint"), "Subscription.channel.endpoint")
        except BusinessRuleViolation as exc:
            issues.extend(exc.issues)
        else:
            if url is None:
                problem(
                    IssueCode.SUBSCRIPTION_CHANNEL_UNSUPPORTED,
                    "channel.endpoint must be the http(s) URL notifications are posted to",
                    "Subscription.channel.endpoint",
                )
    payload_type = channel.get("payload")
    payload_element = channel.get("_payload")
    content_extensions = _extension(payload_element, PAYLOAD_CONTENT)
    content = content_extensions[0].get("valueCode") if content_extensions else None
    if channel and payload_type not in PAYLOAD_TYPES:
        problem(
            IssueCode.SUBSCRIPTION_PAYLOAD_UNSUPPORTED,
            f"channel.payload must be {' or '.join(PAYLOAD_TYPES)}",
            "Subscription.channel.payload",
        )
    if channel and content not in CONTENTS:
        problem(
            IssueCode.SUBSCRIPTION_PAYLOAD_UNSUPPORTED,
            f"channel.payload needs the backport-payload-content extension, one of {', '.join(CONTENTS)}",
            f"Subscription.channel.payload.extension('{PAYLOAD_CONTENT}')",
        )
    headers: list[tuple[str, str]] = []
    for n, header in enumerate(channel.get("header") or []):
        name, colon, value = str(header).partition(":")
        if not colon or not name.strip() or any(c in str(header) for c in "\r\n"):
            problem(IssueCode.SUBSCRIPTION_INVALID, "a header is 'Name: value'", f"Subscription.channel.header[{n}]")
        else:
            headers.append((name.strip(), value.strip()))
    heartbeat: int | None = None
    for extension in _extension(channel, HEARTBEAT_PERIOD):
        value = extension.get("valueUnsignedInt")
        if not isinstance(value, int) or isinstance(value, bool) or not MIN_HEARTBEAT <= value <= MAX_INT:
            problem(
                IssueCode.SUBSCRIPTION_INVALID,
                f"the heartbeat period is a whole number of seconds, from {MIN_HEARTBEAT} to {MAX_INT}",
                f"Subscription.channel.extension('{HEARTBEAT_PERIOD}')",
            )
        else:
            heartbeat = value
    for extension in _extension(channel, TIMEOUT):
        if not _whole_seconds(extension.get("valueUnsignedInt")):
            problem(
                IssueCode.SUBSCRIPTION_INVALID,
                f"the timeout is a whole number of seconds (valueUnsignedInt), from 1 to {MAX_INT}",
                f"Subscription.channel.extension('{TIMEOUT}')",
            )
    for extension in _extension(channel, MAX_COUNT):
        if not _whole_seconds(extension.get("valuePositiveInt")):  # a positiveInt: the same range
            problem(
                IssueCode.SUBSCRIPTION_INVALID,
                f"max-count is a positiveInt, from 1 to {MAX_INT}",
                f"Subscription.channel.extension('{MAX_COUNT}')",
            )
    if issues:
        raise BusinessRuleViolation(*issues)
    assert topic is not None and url is not None and isinstance(payload_type, str) and isinstance(content, str)
    return SubscriptionRequest(topic, tuple(filters), url, payload_type, content, tuple(headers), heartbeat)

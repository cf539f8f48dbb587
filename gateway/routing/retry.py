"""What a delivery attempt's result means, and when to try again: exponential backoff with jitter, honouring
``Retry-After``. Pure, so the policy is tested as a table."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class AttemptResult:
    verdict: Verdict
    error: str | None = None
    retry_after: float | None = None  # seconds the receiver asked us to wait
    shipped: tuple[str, ...] = ()  # the resources the message carried (Type/id), for the attempt's AuditEvent
    # False when the message never left: our own credentials could not be had (the destination's token endpoint is
    # down, or refuses us). Such a wait is retried with the same backoff but never makes a dead letter (DESIGN §11:
    # a peer's token endpoint down delays deliveries, none is lost); ``attempts`` still counts it, for the backoff.
    sent: bool = True
    status: int | None = None  # the receiver's HTTP status, when it answered (shown per attempt in the audit)


def is_retryable_status(status: int) -> bool:
    """408 and 429 say "later"; 5xx is the receiver's trouble. Any other 4xx will fail the same way again."""
    return status in (408, 429) or 500 <= status <= 599


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # isdigit alone takes '²' (a latin-1 header byte), float() does not
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - now).total_seconds())


def issue_codes(body: str) -> list[str]:
    """The codes of an OperationOutcome answer — never its diagnostics, which may quote patient data."""
    try:
        outcome = json.loads(body)
        issues = outcome.get("issue") if isinstance(outcome, dict) else None
        codes = []
        for issue in issues if isinstance(issues, list) else []:
            codings = ((issue.get("details") or {}).get("coding") or []) if isinstance(issue, dict) else []
            code = next((c.get("code") for c in codings if isinstance(c, dict) and c.get("code")), None)
            codes.append(str(code or issue.get("code") if isinstance(issue, dict) else "?"))
        return codes[:10]
    except (ValueError, AttributeError):
        return []


def judge_response(status: int, retry_after: str | None, body: str, now: datetime) -> AttemptResult:
    if 200 <= status <= 299:
        return AttemptResult(Verdict.DELIVERED, status=status)
    codes = issue_codes(body)
    error = f"HTTP {status}" + (f" ({', '.join(codes)})" if codes else "")
    if is_retryable_status(status):
        return AttemptResult(Verdict.RETRY, error, parse_retry_after(retry_after, now), status=status)
    return AttemptResult(Verdict.DEAD, error, status=status)


def backoff(attempts: int, *, base: float, cap: float, retry_after: float | None, rng: random.Random) -> float:
    """Seconds before the next attempt, after ``attempts`` failed ones: base·2ⁿ⁻¹ capped, with jitter (50–100 %
    so that a platform coming back is not hit by every retry at once), and never sooner than Retry-After."""
    exponential = min(cap, base * 2 ** max(0, attempts - 1))
    delay: float = exponential * rng.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay

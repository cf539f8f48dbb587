"""The published Task state machine (DESIGN §3.3): which status may follow which, what a decision may change,
and what each decision does to the ServiceRequest. Tables, checked by pure functions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import Conflict, Issue, IssueCode, UnprocessableEntity
from gateway.fhir.types import Resource
from gateway.workflow.policies import TaskType
from gateway.workflow.tasks import BusinessStatus, RevocationReason

FINAL = frozenset({"completed", "rejected", "cancelled", "failed", "entered-in-error"})

TRANSITIONS: Mapping[str, frozenset[str]] = {
    "draft": frozenset({"requested", "cancelled"}),
    "requested": frozenset({"received", "accepted", "in-progress", "completed", "rejected", "cancelled"}),
    "received": frozenset({"accepted", "in-progress", "completed", "rejected", "cancelled"}),
    "accepted": frozenset({"in-progress", "completed", "cancelled"}),
    "in-progress": frozenset({"on-hold", "completed", "failed", "cancelled"}),
    "on-hold": frozenset({"in-progress", "cancelled"}),
    **{status: frozenset() for status in FINAL},
}

#: R4's Task statuses (required binding http://hl7.org/fhir/ValueSet/task-status).
TASK_STATUSES = frozenset(
    {
        "draft", "requested", "received", "accepted", "rejected", "ready", "cancelled", "in-progress", "on-hold",
        "failed", "completed", "entered-in-error",
    }
)  # fmt: skip

#: What a decision may set; everything else (focus, for, requester, owner, code, …) stays as it is.
DECIDABLE = frozenset({"status", "statusReason", "businessStatus", "note", "output"})
_SERVER_MANAGED = frozenset({"meta", "lastModified", "executionPeriod"})  # set by the gateway, whatever is sent
_NEEDS_REASON = frozenset({"rejected", "cancelled"})

#: The businessStatus a status implies when the decision does not set one (BSeR progression).
IMPLIED_BUSINESS_STATUS = {
    "accepted": BusinessStatus.ACCEPTED,
    "rejected": BusinessStatus.DECLINED,
    "completed": BusinessStatus.COMPLETED,
    "cancelled": BusinessStatus.CANCELLED,
}


@dataclass(frozen=True, slots=True)
class ServiceRequestEffect:
    """What a Task decision does to its ServiceRequest."""

    from_statuses: frozenset[str]
    to_status: str
    revocation_reason: str | None = None


#: (task type, new status) → effect on the focus ServiceRequest (D6327-4: validated → active and routed;
#: rejected → revoked, the requester informed).
EFFECTS: Mapping[tuple[str, str], ServiceRequestEffect] = {
    (TaskType.GP_VALIDATION, "accepted"): ServiceRequestEffect(frozenset({"draft", "on-hold"}), "active"),
    (TaskType.GP_VALIDATION, "completed"): ServiceRequestEffect(frozenset({"draft", "on-hold"}), "active"),
    (TaskType.GP_VALIDATION, "rejected"): ServiceRequestEffect(
        frozenset({"draft", "on-hold", "active"}), "revoked", RevocationReason.GP_REJECTED
    ),
    # Nobody will validate any more: a referral still waiting is withdrawn, not left draft for ever.
    (TaskType.GP_VALIDATION, "cancelled"): ServiceRequestEffect(
        frozenset({"draft", "on-hold"}), "revoked", RevocationReason.WITHDRAWN
    ),
    (TaskType.GP_VALIDATION, "failed"): ServiceRequestEffect(
        frozenset({"draft", "on-hold"}), "revoked", RevocationReason.WITHDRAWN
    ),
}


def _comparable(task: Resource) -> dict[str, Any]:
    return {key: value for key, value in task.items() if key not in DECIDABLE | _SERVER_MANAGED}


def check_status(proposed: Resource) -> str:
    """The proposed Task's status, when it is one of R4's; a 422 otherwise — whoever asks, before who may set which
    status is looked at (a typo is no missing right)."""
    status = proposed.get("status")
    if status is None:
        raise UnprocessableEntity.single(
            IssueCode.ELEMENT_REQUIRED, "Task.status is required", "Task.status", "required"
        )
    if not isinstance(status, str):
        raise UnprocessableEntity.single(
            IssueCode.VALUE_INVALID, "Task.status is a code: a string", "Task.status", "value"
        )
    if status not in TASK_STATUSES:
        raise UnprocessableEntity.single(
            IssueCode.BINDING_REQUIRED,
            f"{status!r} is not a Task status (required binding http://hl7.org/fhir/ValueSet/task-status: "
            f"{', '.join(sorted(TASK_STATUSES))})",
            "Task.status",
            "code-invalid",
        )
    return status


def check_decision(current: Resource, proposed: Resource) -> str | None:
    """Raise when the proposed Task is not an allowed decision on the current one; return the new status when
    the status changes."""
    before, after = _comparable(current), _comparable(proposed)
    changed = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
    if changed:
        raise UnprocessableEntity(
            *(
                Issue(
                    IssueCode.TASK_ELEMENT_IMMUTABLE,
                    f"Task.{key} cannot be changed by a decision; only {', '.join(sorted(DECIDABLE))} can",
                    f"Task.{key}",
                    "business-rule",
                )
                for key in changed
            )
        )
    old, new = current.get("status"), check_status(proposed)
    if old == new:
        if old in FINAL:
            raise Conflict.single(
                IssueCode.TRANSITION_FORBIDDEN,
                f"the Task is {old}: a final status, nothing changes any more",
                "Task.status",
            )
        return None
    allowed = TRANSITIONS.get(str(old), frozenset())
    if new not in allowed:
        options = ", ".join(sorted(allowed)) or "none (final status)"
        raise Conflict.single(
            IssueCode.TRANSITION_FORBIDDEN,
            f"a Task cannot go from {old} to {new}; allowed from {old}: {options}",
            "Task.status",
        )
    if new in _NEEDS_REASON and not proposed.get("statusReason"):
        raise UnprocessableEntity.single(
            IssueCode.STATUS_REASON_REQUIRED,
            f"a Task {new} needs a statusReason saying why",
            "Task.statusReason",
            "required",
        )
    return new

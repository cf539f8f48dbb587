"""The decision rights table: role × Task code × target status (DESIGN §3.3), without a database."""

from __future__ import annotations

import pytest

from gateway.auth.clients import Role
from gateway.errors import Forbidden
from gateway.fhir.types import Resource
from gateway.workflow.permissions import check_decision_right
from gateway.workflow.policies import TaskType
from gateway.workflow.tasks import TASK_TYPE_SYSTEM, BusinessStatus, business_status, coding


def _task(code: str, escalated: bool = False) -> Resource:
    return {
        "resourceType": "Task",
        "status": "requested",
        "code": {"coding": [coding(TASK_TYPE_SYSTEM, code)]},
        "businessStatus": business_status(BusinessStatus.ESCALATED if escalated else BusinessStatus.CREATED),
    }


ALLOWED = [
    (Role.OPERATOR, TaskType.GP_VALIDATION, False, "accepted"),
    (Role.OPERATOR, TaskType.GP_INFORMATION, False, "completed"),
    (Role.SENDER, TaskType.GP_VALIDATION, False, "cancelled"),
    (Role.SENDER, TaskType.GP_VALIDATION, True, "cancelled"),
    (Role.PLATFORM, TaskType.GP_VALIDATION, True, "accepted"),
    (Role.PLATFORM, TaskType.GP_VALIDATION, True, "rejected"),
    (Role.PLATFORM, TaskType.PLATFORM_INTAKE, False, "completed"),
    (Role.PLATFORM, TaskType.CONTACT_GP, False, "in-progress"),
    (Role.PLATFORM, TaskType.PATIENT_INFORMATION, False, "completed"),
    # The GP informed (D6327-4): by the requester's software, or failing that by the platform.
    (Role.SENDER, TaskType.GP_INFORMATION, False, "in-progress"),
    (Role.SENDER, TaskType.GP_INFORMATION, False, "completed"),
    (Role.PLATFORM, TaskType.GP_INFORMATION, False, "in-progress"),
    (Role.PLATFORM, TaskType.GP_INFORMATION, False, "completed"),
]
REFUSED = [
    (Role.SENDER, TaskType.GP_VALIDATION, False, "accepted"),
    (Role.SENDER, TaskType.GP_VALIDATION, False, "completed"),
    (Role.SENDER, TaskType.GP_VALIDATION, False, "rejected"),
    (Role.SENDER, TaskType.GP_VALIDATION, False, "requested"),  # a note or businessStatus without a withdrawal
    (Role.SENDER, TaskType.PLATFORM_INTAKE, False, "completed"),
    (Role.SENDER, TaskType.PATIENT_INFORMATION, False, "completed"),
    (Role.PLATFORM, TaskType.GP_VALIDATION, False, "accepted"),
    (Role.PLATFORM, TaskType.GP_VALIDATION, False, "requested"),  # may not escalate it itself
    (Role.PLATFORM, TaskType.GP_VALIDATION, True, "cancelled"),
    (Role.SENDER, TaskType.GP_INFORMATION, False, "accepted"),  # informing is no validation
    (Role.SENDER, TaskType.GP_INFORMATION, False, "rejected"),
    (Role.SENDER, TaskType.GP_INFORMATION, False, "cancelled"),
    (Role.SENDER, TaskType.GP_INFORMATION, False, "requested"),
    (Role.PLATFORM, TaskType.GP_INFORMATION, False, "accepted"),
    (Role.PLATFORM, TaskType.GP_INFORMATION, False, "cancelled"),
]


@pytest.mark.parametrize(("role", "code", "escalated", "status"), ALLOWED)
def test_allowed(role: Role, code: str, escalated: bool, status: str) -> None:
    check_decision_right({role}, _task(code, escalated), _task(code, escalated) | {"status": status})


@pytest.mark.parametrize(("role", "code", "escalated", "status"), REFUSED)
def test_refused(role: Role, code: str, escalated: bool, status: str) -> None:
    with pytest.raises(Forbidden) as refused:
        check_decision_right({role}, _task(code, escalated), _task(code, escalated) | {"status": status})
    assert refused.value.issues[0].code == "decision-not-allowed"

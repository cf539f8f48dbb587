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
    # The GP's own software (DESIGN §11): the GP's answer, before or after the escalation; the GP informed.
    (Role.PRACTITIONER, TaskType.GP_VALIDATION, False, "accepted"),
    (Role.PRACTITIONER, TaskType.GP_VALIDATION, False, "rejected"),
    (Role.PRACTITIONER, TaskType.GP_VALIDATION, True, "accepted"),
    (Role.PRACTITIONER, TaskType.GP_INFORMATION, False, "in-progress"),
    (Role.PRACTITIONER, TaskType.GP_INFORMATION, False, "completed"),
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
    (Role.PRACTITIONER, TaskType.GP_VALIDATION, False, "cancelled"),  # the requester withdraws, not the GP
    (Role.PRACTITIONER, TaskType.GP_INFORMATION, False, "accepted"),
    (Role.PRACTITIONER, TaskType.PLATFORM_INTAKE, False, "completed"),
    (Role.PRACTITIONER, TaskType.CONTACT_GP, False, "completed"),
    (Role.PRACTITIONER, TaskType.PATIENT_INFORMATION, False, "completed"),
]


@pytest.mark.parametrize(("role", "code", "escalated", "status"), ALLOWED)
def test_allowed(role: Role, code: str, escalated: bool, status: str) -> None:
    check_decision_right({role}, _task(code, escalated), _task(code, escalated) | {"status": status})


@pytest.mark.parametrize(("role", "code", "escalated", "status"), REFUSED)
def test_refused(role: Role, code: str, escalated: bool, status: str) -> None:
    with pytest.raises(Forbidden) as refused:
        check_decision_right({role}, _task(code, escalated), _task(code, escalated) | {"status": status})
    assert refused.value.issues[0].code == "decision-not-allowed"


# --- the requester relays the GP's answer (X-Provenance onBehalfOf the Task's owner) -----------------------------

GP = "PractitionerRole/gp"


def _owned(code: str = TaskType.GP_VALIDATION) -> Resource:
    return _task(code) | {"owner": {"reference": GP}}


@pytest.mark.parametrize("status", ["accepted", "rejected"])
def test_a_sender_relays_the_gps_answer_on_the_gps_behalf(status: str) -> None:
    check_decision_right({Role.SENDER}, _owned(), _owned() | {"status": status}, [None, GP])


@pytest.mark.parametrize(
    ("code", "status", "on_behalf_of"),
    [
        pytest.param(TaskType.GP_VALIDATION, "accepted", [], id="no X-Provenance"),
        pytest.param(TaskType.GP_VALIDATION, "accepted", [None], id="not on anyone's behalf"),
        pytest.param(TaskType.GP_VALIDATION, "completed", [GP], id="completed: not a relayed answer"),
        pytest.param(TaskType.GP_INFORMATION, "accepted", [GP], id="gp-information"),
    ],
)
def test_without_the_gp_behind_it_a_sender_does_not_answer(
    code: str, status: str, on_behalf_of: list[str | None]
) -> None:
    with pytest.raises(Forbidden) as refused:
        check_decision_right({Role.SENDER}, _owned(code), _owned(code) | {"status": status}, on_behalf_of)
    assert refused.value.issues[0].code == "decision-not-allowed"


def test_a_relay_on_behalf_of_another_than_the_owner_names_the_mismatch() -> None:
    with pytest.raises(Forbidden) as refused:
        check_decision_right({Role.SENDER}, _owned(), _owned() | {"status": "accepted"}, [GP, "Practitioner/other"])
    issue = refused.value.issues[0]
    assert issue.code == "provenance-agent-mismatch"
    assert issue.expression == "Provenance.agent[1].onBehalfOf"
    assert "Practitioner/other" in issue.diagnostics and GP in issue.diagnostics


def test_a_platform_does_not_relay_before_the_escalation() -> None:
    with pytest.raises(Forbidden) as refused:
        check_decision_right({Role.PLATFORM}, _owned(), _owned() | {"status": "accepted"}, [GP])
    assert refused.value.issues[0].code == "decision-not-allowed"

"""Task resources (profile ``dac-task``) and the codes the workflow writes on Tasks and ServiceRequests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.fhir.outcome import CANONICAL_BASE
from gateway.fhir.primitives import fhir_instant
from gateway.fhir.types import Resource
from gateway.workflow.policies import TaskType

TASK_TYPE_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/dac-task-type"
BUSINESS_STATUS_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/dac-task-business-status"
DELIVERY_STATUS_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/dac-delivery-status"
REVOCATION_REASON_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/dac-revocation-reason"
DAC_TASK_PROFILE = f"{CANONICAL_BASE}/StructureDefinition/dac-task"
#: R4 core extension for the reason of a Request's status (ServiceRequest has no statusReason element in R4).
REQUEST_STATUS_REASON = "http://hl7.org/fhir/StructureDefinition/request-statusReason"

_TASK_DISPLAY = {
    TaskType.GP_VALIDATION: "Validation du recours par le médecin traitant",
    TaskType.GP_INFORMATION: "Information du médecin traitant",
    TaskType.PATIENT_INFORMATION: "Information du patient (droit d'opposition)",
    TaskType.PLATFORM_INTAKE: "Prise en charge par la plateforme",
    TaskType.CONTACT_GP: "Contact du médecin traitant par la plateforme",
}


class BusinessStatus:
    """``dac-task-business-status``: the BSeR progression (created, accepted, declined, completed) and ours."""

    CREATED = "created"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ESCALATED = "escalated"  # still requested at its deadline: the platform contacts the GP (D6327-4, "à défaut")


class RevocationReason:
    PATIENT_OPPOSITION = "patient-opposition"
    GP_REJECTED = "gp-rejected"
    WITHDRAWN = "withdrawn"


def coding(system: str, code: str, display: str | None = None) -> Resource:
    rendered: Resource = {"system": system, "code": code}
    if display:
        rendered["display"] = display
    return rendered


def business_status(code: str) -> Resource:
    return {"coding": [coding(BUSINESS_STATUS_SYSTEM, code)]}


def revocation_reason(code: str) -> Resource:
    return {"url": REQUEST_STATUS_REASON, "valueCodeableConcept": {"coding": [coding(REVOCATION_REASON_SYSTEM, code)]}}


def task_type_of(task: Resource) -> str | None:
    for item in (task.get("code") or {}).get("coding") or []:
        if isinstance(item, dict) and item.get("system") == TASK_TYPE_SYSTEM:
            return str(item.get("code"))
    return None


@dataclass(frozen=True, slots=True)
class TaskReferences:
    """Where a referral's Tasks point: all already stored references (``Type/id``)."""

    service_request: str
    patient: str
    requester: str | None
    gp: str | None
    platform: str


def build_task(
    task_type: TaskType,
    references: TaskReferences,
    *,
    owner: str,
    now: datetime,
    status: str = "requested",
    deadline: datetime | None = None,
    note: str | None = None,
) -> Resource:
    done = status == "completed"
    task: Resource = {
        "resourceType": "Task",
        "meta": {"profile": [DAC_TASK_PROFILE]},
        "status": status,
        "intent": "order",
        "code": {"coding": [coding(TASK_TYPE_SYSTEM, task_type, _TASK_DISPLAY[task_type])]},
        "businessStatus": business_status(BusinessStatus.COMPLETED if done else BusinessStatus.CREATED),
        "focus": {"reference": references.service_request},
        "for": {"reference": references.patient},
        "authoredOn": fhir_instant(now),
        "lastModified": fhir_instant(now),
        "owner": {"reference": owner},
    }
    if references.requester:
        task["requester"] = {"reference": references.requester}
    if deadline is not None:
        task["restriction"] = {"period": {"end": fhir_instant(deadline)}}
    if note:
        task["note"] = [{"text": note}]
    return task

"""GP validation deadlines (D6327-4, "à défaut par la plateforme"): a ``gp-validation`` Task still requested at
its deadline is escalated — its businessStatus says so — and a ``contact-gp`` Task is created for the platform,
with a Provenance of the escalation (the gateway decided it), in one transaction.

Safe with several workers: the escalation is a version-checked update, so of two workers that find the same
Task, one writes and the other's transaction is dropped.
"""

from __future__ import annotations

from datetime import datetime

import structlog

from gateway.fhir.primitives import fhir_instant, new_id, utc_now
from gateway.fhir.types import Resource
from gateway.store.database import Database
from gateway.store.unit_of_work import UnitOfWork
from gateway.workflow.policies import TaskType
from gateway.workflow.provenance import GATEWAY, provenance
from gateway.workflow.tasks import BusinessStatus, TaskReferences, build_task, business_status, task_type_of

log = structlog.get_logger("gateway.workflow")


def _is_due(task: Resource) -> bool:
    escalated = business_status(BusinessStatus.ESCALATED)
    return (
        task_type_of(task) == TaskType.GP_VALIDATION
        and task.get("status") in ("requested", "received")
        and task.get("businessStatus") != escalated
    )


async def escalate_due(database: Database, now: datetime | None = None) -> int:
    """Escalate every overdue GP validation; returns how many this call escalated."""
    now = now or utc_now()
    async with UnitOfWork(database, write=False) as uow:
        candidates = await uow.resources.ids_below("Task", "deadline", fhir_instant(now))
    escalated = 0
    for task_id in candidates:
        try:
            escalated += await _escalate(database, task_id, now)
        except Exception as exc:  # one broken Task must not hold up every deadline after it
            log.error("escalation_failed", task_id=task_id, error_type=type(exc).__name__)
    return escalated


async def _escalate(database: Database, task_id: str, now: datetime) -> int:
    """Escalate one Task if it is still due; 1 when this call did it, 0 otherwise."""
    async with UnitOfWork(database) as uow:
        current = await uow.resources.get("Task", task_id)
        if current is None or not _is_due(current.content):
            return 0
        task = dict(current.content)
        task["businessStatus"] = business_status(BusinessStatus.ESCALATED)
        task["lastModified"] = fhir_instant(now)
        task["note"] = [
            *task.get("note", []),
            {
                "time": fhir_instant(now),
                "text": "No answer from the GP by the deadline: the platform contacts them.",
            },
        ]
        updated = await uow.resources.update(current, task)
        if updated is None:
            return 0  # another worker escalated it first
        service_request_reference = str(task["focus"]["reference"])
        service_request = await uow.resources.get("ServiceRequest", service_request_reference.split("/")[-1])
        performers = (service_request.content.get("performer") if service_request else None) or []
        platform = performers[0].get("reference") if performers else None
        if platform is None:
            log.warning("escalation_without_platform", task_id=task_id)
            return 0
        references = TaskReferences(
            service_request_reference,
            str(task["for"]["reference"]),
            (task.get("requester") or {}).get("reference"),
            (task.get("owner") or {}).get("reference"),
            str(platform),
        )
        contact = build_task(
            TaskType.CONTACT_GP,
            references,
            owner=str(platform),
            now=now,
            note=f"The GP did not validate Task/{task_id} in time: contact them and record their answer on "
            "that Task on their behalf (X-Provenance with onBehalfOf).",
        )
        contact["partOf"] = [{"reference": f"Task/{task_id}"}]
        contact_id = new_id()
        uow.resources.add(contact, resource_id=contact_id)
        deadline = ((task.get("restriction") or {}).get("period") or {}).get("end")
        uow.resources.add(
            provenance(
                [f"Task/{task_id}/_history/{updated.version_id}", f"Task/{contact_id}"],
                now,
                [GATEWAY],
                "GP validation escalated to the platform",
                reason=f"no answer from the GP by the deadline{f' {deadline}' if deadline else ''} "
                "(D6327-4: à défaut par la plateforme)",
            )
        )
        await uow.commit()
        log.info("gp_validation_escalated", task_id=task_id)
    return 1

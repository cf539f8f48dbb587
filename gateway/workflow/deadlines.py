"""GP validation deadlines (D6327-4, "à défaut par la plateforme"): a ``gp-validation`` Task still requested at
its deadline is escalated — its businessStatus says so —, a ``contact-gp`` Task is created for the platform, the
platform is sent a ``contact-gp`` message carrying the referral (DESIGN §11, "Escalation is told"), and a
Provenance records the escalation (the gateway decided it), in one transaction.

The scan is index-driven: it reads the due rows of ``pending_deadlines`` (``gateway.store.deadlines``), which
holds the validations still waiting — a row written with the Task at intake (``track_deadlines``), removed when
the Task is decided, cancelled or escalated. Its cost follows the validations due, not how many Tasks were ever
decided. The Task stays the truth: a row whose Task waits no more is dropped, one whose deadline moved is moved.

Safe with several workers: the escalation is a version-checked update, so of two workers that find the same
Task, one writes and the other's transaction is dropped — one contact-gp Task, one message.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import structlog

from gateway.fhir.primitives import fhir_instant, new_id, utc_now
from gateway.fhir.search import date_period, parse_search, split_reference
from gateway.fhir.types import Resource
from gateway.routing.config import PlatformKind, RoutingTable
from gateway.routing.schedule import platform_of, schedule_contact_gp
from gateway.store.database import Database
from gateway.store.unit_of_work import UnitOfWork
from gateway.workflow.permissions import escalated
from gateway.workflow.policies import TaskType
from gateway.workflow.provenance import GATEWAY, provenance
from gateway.workflow.tasks import BusinessStatus, TaskReferences, build_task, business_status, task_type_of

log = structlog.get_logger("gateway.workflow")

#: Rows taken per round: a round's time stays bounded however many come due at once (the next takes the rest).
ROUND_LIMIT = 200
#: A Task whose escalation failed (a broken resource) comes due again this much later, not at every round.
RETRY_LATER = timedelta(minutes=10)
#: The ServiceRequest statuses of a referral held for the GP's validation: only those are escalated.
HELD = frozenset({"draft", "on-hold"})
_WAITING = frozenset({"requested", "received"})


def deadline_of(task: Resource) -> datetime | None:
    """When a Task is due: the start of its ``restriction.period.end`` (None when it has none)."""
    end = ((task.get("restriction") or {}).get("period") or {}).get("end")
    period = date_period(end) if isinstance(end, str) else None
    return period[0] if period else None


def waiting(task: Resource) -> bool:
    """A GP validation waiting for its answer, not escalated yet: what ``pending_deadlines`` holds."""
    return (
        task_type_of(task) == TaskType.GP_VALIDATION
        and task.get("status") in _WAITING
        and not escalated(task)
        and deadline_of(task) is not None
    )


def track_deadlines(uow: UnitOfWork, tasks: Iterable[Resource]) -> None:
    """Record, in the transaction that stores them, the deadlines of these new Tasks (ids set) that wait for the
    GP."""
    for task in tasks:
        due = deadline_of(task)
        if due is not None and waiting(task):
            uow.deadlines.add(str(task["id"]), due)


async def decided(uow: UnitOfWork, task: Resource) -> None:
    """A Task's new version, in its transaction: its deadline row goes when it no longer waits."""
    if task_type_of(task) == TaskType.GP_VALIDATION and not waiting(task):
        await uow.deadlines.remove([str(task["id"])])


async def escalated_to_platform(uow: UnitOfWork, service_request: str) -> bool:
    """Whether a referral held for the GP was escalated to its platform (a contact-gp Task on it): the platform
    received it then, and is told of what becomes of it (an opposition) as if it had been routed."""
    _, found = await uow.resources.search(
        parse_search(
            "Task", [("focus", service_request), ("code", TaskType.CONTACT_GP.value)], default_count=1, max_count=1
        )
    )
    return bool(found)


async def escalate_due(
    database: Database, now: datetime | None = None, *, routing: RoutingTable, limit: int = ROUND_LIMIT
) -> int:
    """Escalate the overdue GP validations (up to ``limit`` rows this round); returns how many this call escalated.
    ``routing``: where each referral's platform is sent its ``contact-gp`` message."""
    now = now or utc_now()
    async with UnitOfWork(database, write=False) as uow:
        candidates = await uow.deadlines.due(now, limit)
    escalated_here = 0
    for task_id, _ in candidates:
        try:
            escalated_here += await _escalate(database, routing, task_id, now)
        except Exception as exc:  # one broken Task must not hold up every deadline after it
            log.error("escalation_failed", task_id=task_id, error_type=type(exc).__name__)
            try:
                async with UnitOfWork(database) as uow:
                    await uow.deadlines.move(task_id, now + RETRY_LATER)
                    await uow.commit()
            except Exception as again:  # the row stays due: tried again next round
                log.error("escalation_postpone_failed", task_id=task_id, error_type=type(again).__name__)
    return escalated_here


async def _escalate(database: Database, routing: RoutingTable, task_id: str, now: datetime) -> int:
    """Escalate one Task if it is still due; 1 when this call did it, 0 otherwise (its row dropped or moved)."""
    async with UnitOfWork(database) as uow:
        current = await uow.resources.get("Task", task_id)
        due = deadline_of(current.content) if current is not None else None
        if current is None or due is None or not waiting(current.content):
            await uow.deadlines.remove([task_id])  # decided, cancelled or escalated by a path that left its row
            await uow.commit()
            return 0
        if due > now:  # its deadline moved later: so does its row
            await uow.deadlines.move(task_id, due)
            await uow.commit()
            return 0
        task = dict(current.content)
        focus_type, focus_id = split_reference(str((task.get("focus") or {}).get("reference", "")))
        service_request = (
            await uow.resources.get("ServiceRequest", focus_id) if focus_type == "ServiceRequest" else None
        )
        if service_request is None or service_request.content.get("status") not in HELD:
            # Revoked (an opposition, a withdrawal) or already on its way: nothing to escalate, nothing to send.
            await uow.deadlines.remove([task_id])
            await uow.commit()
            log.info("escalation_not_held", task_id=task_id)
            return 0
        platform = await platform_of(uow, routing, service_request.content)
        performers = service_request.content.get("performer") or []
        organization = performers[0].get("reference") if performers else None
        if platform is None or organization is None or platform.kind is not PlatformKind.PLATFORM:
            # The routing file no longer names its platform: tried again later, once it does (or the GP answers).
            await uow.deadlines.move(task_id, now + RETRY_LATER)
            await uow.commit()
            log.warning("escalation_without_platform", task_id=task_id)
            return 0
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
            return 0  # another worker escalated it first (or the GP answered): its transaction counts
        await uow.deadlines.remove([task_id])
        service_request_reference = f"ServiceRequest/{focus_id}"
        references = TaskReferences(
            service_request_reference,
            str(task["for"]["reference"]),
            (task.get("requester") or {}).get("reference"),
            (task.get("owner") or {}).get("reference"),
            str(organization),
        )
        contact = build_task(
            TaskType.CONTACT_GP,
            references,
            owner=str(organization),
            now=now,
            note=f"The GP did not validate Task/{task_id} in time: contact them and record their answer on "
            "that Task on their behalf (X-Provenance with onBehalfOf).",
        )
        contact["partOf"] = [{"reference": f"Task/{task_id}"}]
        contact_id = new_id()
        uow.resources.add(contact, resource_id=contact_id)
        # Told, not polled: the message carries the referral as a referral-request does, the new Task with it.
        schedule_contact_gp(uow, platform, service_request_reference, contact_id, now)
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
        log.info("gp_validation_escalated", task_id=task_id, destination=platform.key)
    return 1

"""Asking for deliveries, inside the transaction of the change they announce: the referral to its platform (a
``platform-intake`` Task shows where the delivery stands), and updates back to a sender that asked for them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from gateway.fhir.primitives import new_id
from gateway.fhir.search import split_reference
from gateway.fhir.types import Resource
from gateway.routing.config import Platform, PlatformKind, RoutingTable
from gateway.routing.destinations import SENDER_PREFIX
from gateway.store.unit_of_work import UnitOfWork
from gateway.workflow.policies import TaskType
from gateway.workflow.provenance import GATEWAY, Agent, provenance
from gateway.workflow.tasks import DELIVERY_STATUS_SYSTEM, TaskReferences, build_task, coding

REFERRAL_REQUEST = "referral-request"
REFERRAL_UPDATE = "referral-update"
CONTACT_GP = "contact-gp"


def delivery_status(code: str) -> Resource:
    return {"coding": [coding(DELIVERY_STATUS_SYSTEM, code)]}


def schedule_referral(
    uow: UnitOfWork,
    platform: Platform,
    references: TaskReferences,
    now: datetime,
    *,
    hop: int = 0,
    deciders: Sequence[Agent] = (GATEWAY,),
) -> list[Resource]:
    """The platform-intake Task and the outbox row that delivers the referral; returns the resources to store:
    the Task, and the Provenance of the routing — for a peer gateway, of the forwarding (DESIGN §3.6) — whose
    agents are ``deciders`` (the gateway, and the client that caused it). Their ids are set."""
    task = build_task(TaskType.PLATFORM_INTAKE, references, owner=references.platform, now=now)
    task["id"] = new_id()
    task["businessStatus"] = delivery_status("queued")
    uow.outbox.enqueue(
        id=new_id(),
        destination=platform.key,
        endpoint=platform.endpoint,
        event=REFERRAL_REQUEST,
        payload={"focus": references.service_request, "hop": hop + 1, "kind": platform.kind.value},
        now=now,
        task_id=task["id"],
    )
    agents = list(deciders)
    if platform.kind is PlatformKind.PEER_GATEWAY:
        activity = f"forwarded to the peer gateway of {platform.name} ({platform.endpoint})"
        agents.append(Agent("custodian", references.platform))  # the peer runs the referral's workflow from now
    else:
        activity = f"routed to {platform.name}"
    routing = provenance(
        [references.service_request, f"Task/{task['id']}"],
        now,
        agents,
        activity,
        reason=f"{platform.name} ({platform.key}) serves the patient's territory in the routing file",
    )
    return [task, routing]


async def platform_of(uow: UnitOfWork, routing: RoutingTable, service_request: Resource) -> Platform | None:
    """The platform a stored ServiceRequest was routed to (its performer's Organization, in the routing file)."""
    for performer in service_request.get("performer") or []:
        resource_type, resource_id = split_reference(str(performer.get("reference", "")))
        organization = await uow.resources.get("Organization", resource_id) if resource_type == "Organization" else None
        if organization is not None:
            identifiers = [
                (str(i.get("system")), str(i.get("value"))) for i in organization.content.get("identifier") or []
            ]
            if platform := routing.platform_of_organization(identifiers):
                return platform
    return None


def schedule_contact_gp(
    uow: UnitOfWork, platform: Platform, service_request: str, contact_task: str, now: datetime
) -> None:
    """Tell the platform a GP validation ran past its deadline (DESIGN §11): a ``contact-gp`` message carrying the
    referral as a ``referral-request`` does (built when sent, from what is stored then), so that it contacts the
    GP. Its delivery is any message's: retries, dead letters, the destination's own slots. ``contact_task``: the
    escalation's contact-gp Task id — the delivery names it (its audit, and whether the platform received the
    referral, should the patient object later); its businessStatus stays the platform's to set."""
    uow.outbox.enqueue(
        id=new_id(),
        destination=platform.key,
        endpoint=platform.endpoint,
        event=CONTACT_GP,
        payload={"focus": service_request, "kind": platform.kind.value},
        now=now,
        task_id=contact_task,
    )


def schedule_platform_update(
    uow: UnitOfWork, platform: Platform, service_request: str, now: datetime, what: str
) -> None:
    """Tell the platform a referral it received changed (revoked by an opposition, …)."""
    uow.outbox.enqueue(
        id=new_id(),
        destination=platform.key,
        endpoint=platform.endpoint,
        event=REFERRAL_UPDATE,
        payload={"focus": service_request, "what": what, "kind": platform.kind.value},
        now=now,
    )


async def schedule_update(uow: UnitOfWork, service_request: str, now: datetime, what: str) -> bool:
    """A ``referral-update`` message to the sender of a referral that came by $process-message, if it did."""
    return await schedule_updates(uow, [(service_request, what)], now) == 1


def _enqueue_update(
    uow: UnitOfWork, origin: str, sender: str | None, service_request: str, now: datetime, what: str
) -> None:
    """``sender``: the client that posted the referral, whose registration's ``auth`` the delivery uses."""
    payload = {"focus": service_request, "what": what} | ({"client": sender} if sender is not None else {})
    uow.outbox.enqueue(
        id=new_id(),
        destination=f"{SENDER_PREFIX}{origin}"[:128],
        endpoint=origin,
        event=REFERRAL_UPDATE,
        payload=payload,
        now=now,
    )


async def schedule_updates(uow: UnitOfWork, changes: Sequence[tuple[str, str]], now: datetime) -> int:
    """``schedule_update`` for many (ServiceRequest reference, what) at once — one look-up of their origins.
    Returns how many were scheduled."""
    origins = await uow.outbox.origins_of(reference.split("/")[-1] for reference, _ in changes)
    senders = await uow.outbox.senders_of(origins) if origins else {}
    scheduled = 0
    for reference, what in changes:
        service_request_id = reference.split("/")[-1]
        origin = origins.get(service_request_id)
        if origin is not None:
            _enqueue_update(uow, origin, senders.get(service_request_id), reference, now, what)
            scheduled += 1
    return scheduled

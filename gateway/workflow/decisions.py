"""A decision on a Task (the GP validates or rejects, the platform records an answer): one transaction that
writes the Task's next version, moves its ServiceRequest as ``EFFECTS`` says, and records a Provenance."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from gateway.errors import (
    BusinessRuleViolation,
    Forbidden,
    InvalidRequest,
    IssueCode,
    PreconditionFailed,
    ResourceNotFound,
)
from gateway.fhir.models import parse_model
from gateway.fhir.primitives import fhir_instant, utc_now
from gateway.fhir.search import split_reference
from gateway.fhir.types import Resource
from gateway.routing.config import RoutingTable
from gateway.routing.router import route
from gateway.routing.schedule import platform_of, schedule_referral, schedule_update
from gateway.store.database import Database
from gateway.store.repository import StoredResource
from gateway.store.unit_of_work import UnitOfWork
from gateway.store.visibility import EVERYTHING, Viewer
from gateway.workflow.deadlines import decided
from gateway.workflow.provenance import GATEWAY, Actor, Agent, AgentMismatch, decision_agents, provenance
from gateway.workflow.references import platform_keys, server_references, unresolved_references
from gateway.workflow.tasks import TaskReferences, business_status, revocation_reason, task_type_of
from gateway.workflow.transitions import EFFECTS, FINAL, IMPLIED_BUSINESS_STATUS, check_decision


async def _after_service_request_moved(
    uow: UnitOfWork,
    routing: RoutingTable,
    task: Resource,
    service_request: Resource,
    now: datetime,
    deciders: Sequence[Agent],
) -> None:
    """Validated: the referral goes to its platform now (routed by the gateway, caused by the decision's
    ``deciders``). Rejected: the sender is told (if it asked)."""
    reference = f"ServiceRequest/{service_request['id']}"
    if service_request["status"] == "active":
        platform = await platform_of(uow, routing, service_request)
        if platform is None:
            # The routing file changed while the referral waited: route it again, or refuse the decision.
            patient = await uow.resources.get(
                "Patient", str((task.get("for") or {}).get("reference", "")).split("/")[-1]
            )
            platform = route(routing, patient.content if patient else {}, "Task.for")
        if platform is not None:
            references = TaskReferences(
                reference,
                str((task.get("for") or {}).get("reference")),
                (task.get("requester") or {}).get("reference"),
                (task.get("owner") or {}).get("reference"),
                str(service_request["performer"][0]["reference"]),
            )
            for resource in schedule_referral(uow, platform, references, now, deciders=[GATEWAY, *deciders]):
                uow.resources.add(resource, resource_id=resource.pop("id"))
        await schedule_update(uow, reference, now, "validated")
    else:
        await schedule_update(uow, reference, now, service_request["status"])


async def _professional(uow: UnitOfWork, actor: Actor, owner: str) -> str | None:
    """The Practitioner behind the Task's owner (itself, or a PractitionerRole's practitioner), when it carries one
    of the practitioner actor's identifiers: the professional the actor decides for."""
    owner_type, owner_id = split_reference(owner)
    if owner_type == "PractitionerRole":
        role = await uow.resources.get("PractitionerRole", owner_id)
        owner_type, owner_id = split_reference(
            str(((role.content if role else {}).get("practitioner") or {}).get("reference", ""))
        )
    practitioner = await uow.resources.get("Practitioner", owner_id) if owner_type == "Practitioner" else None
    carried = {
        (str(identifier.get("system")), str(identifier.get("value")))
        for identifier in (practitioner.content.get("identifier") or [] if practitioner else [])
        if isinstance(identifier, dict)
    }
    return f"Practitioner/{owner_id}" if carried & set(actor.professionals) else None


async def _agents(uow: UnitOfWork, actor: Actor | None, claimed: Sequence[Agent], owner: str) -> list[Agent]:
    organization = professional = None
    if actor is not None and actor.organization is not None:
        found = await uow.resources.identify("Organization", [(actor.organization.system, actor.organization.value)])
        organization = f"Organization/{found}" if found else None
    if actor is not None and actor.professionals:
        professional = await _professional(uow, actor, owner)
    try:
        return decision_agents(actor, claimed, owner, organization, professional)
    except AgentMismatch as exc:
        raise Forbidden.single(IssueCode.PROVENANCE_AGENT_MISMATCH, str(exc), f"Provenance.agent[{exc.index}]") from exc


def _stale(current: StoredResource, expected_version: int) -> PreconditionFailed:
    return PreconditionFailed.single(
        IssueCode.VERSION_MISMATCH,
        f'If-Match W/"{expected_version}" is not the current version of {current.reference}: {current.etag}',
        "Task.meta.versionId",
    )


async def decide(
    database: Database,
    routing: RoutingTable,
    task_id: str,
    proposed: Resource,
    expected_version: int,
    agents: Sequence[Agent] = (),
    actor: Actor | None = None,
    viewer: Viewer = EVERYTHING,
    method: str = "PUT",
    own_base: str | None = None,
) -> StoredResource:
    """``method``: how the decision came (PUT, PATCH), as the Task's history tells it. ``agents``: what
    X-Provenance claims; ``actor``: the authenticated client (None when authentication is
    off), which the claim must match (``decision_agents``) — a 403 ``provenance-agent-mismatch`` otherwise;
    ``viewer``: what the caller may see — what the decision adds by id (an output, a note's author) must be one of
    those, or shared directory data (``gateway.workflow.references``), else it is the 422 of an unknown id —
    written relatively or as an absolute URL on ``own_base``, this gateway's FHIR base (``gateway.fhir.references``:
    one rule for every element)."""
    if proposed.get("resourceType") != "Task" or proposed.get("id") != task_id:
        # R4 http.html#update: the body carries the id of the URL; none, or another, is a 400 (a PATCH's result is
        # processed as an update, so a patch that removes or changes it is one too).
        found = f"id {proposed['id']!r}" if "id" in proposed else "no id"
        raise InvalidRequest.single(
            IssueCode.ENTRY_REQUEST_INVALID,
            f"the body must be Task/{task_id}: resourceType Task and id {task_id!r}, the id in the URL ({found})",
            "Task.id",
        )
    async with UnitOfWork(database) as uow:
        current = await uow.resources.get("Task", task_id)
        if current is None:
            raise ResourceNotFound.single(IssueCode.RESOURCE_NOT_FOUND, f"Task/{task_id} is not known")
        if current.version_id != expected_version:
            raise _stale(current, expected_version)
        new_status = check_decision(current.content, proposed)
        # Only what the decision adds: what the gateway wrote in the Task (focus, for, owner…) stays as it is.
        already = {target for target, _ in server_references(current.content, "Task", own_base)}
        added = [
            (target, path) for target, path in server_references(proposed, "Task", own_base) if target not in already
        ]
        unresolved = await unresolved_references(uow, viewer, added, platform_keys(routing))
        if unresolved:
            raise BusinessRuleViolation(*unresolved)
        who = await _agents(uow, actor, agents, str((current.content.get("owner") or {}).get("reference", "")))
        now = utc_now()
        content = {key: value for key, value in proposed.items() if key not in ("meta", "executionPeriod")}
        profiles = (current.content.get("meta") or {}).get("profile")
        if profiles:  # the profile the gateway claimed for it (dac-task) still holds: the meta sent never counts
            content["meta"] = {"profile": profiles}
        content["id"] = task_id
        content["lastModified"] = fhir_instant(now)
        if "executionPeriod" in current.content:
            content["executionPeriod"] = current.content["executionPeriod"]
        parse_model(content)  # a decision is a valid Task, or a 422 naming the element
        if new_status is not None:
            implied = IMPLIED_BUSINESS_STATUS.get(new_status)
            if implied and proposed.get("businessStatus") == current.content.get("businessStatus"):
                content["businessStatus"] = business_status(implied)
            if new_status in FINAL:
                content["executionPeriod"] = {**content.get("executionPeriod", {}), "end": fhir_instant(now)}
        updated = await uow.resources.update(current, content, method=method)
        if updated is None:  # someone decided in between
            raise _stale(current, expected_version)
        await decided(uow, updated.content)  # a GP validation answered waits for no deadline any more
        targets = [f"Task/{task_id}/_history/{updated.version_id}"]

        effect = EFFECTS.get((str(task_type_of(current.content)), new_status or ""))
        focus_type, focus_id = split_reference(str((current.content.get("focus") or {}).get("reference", "")))
        service_request = (
            await uow.resources.get("ServiceRequest", focus_id) if focus_type == "ServiceRequest" else None
        )
        if (
            effect is not None
            and service_request is not None
            and service_request.content.get("status") in effect.from_statuses
        ):
            moved = dict(service_request.content)
            moved["status"] = effect.to_status
            if effect.revocation_reason:
                moved["extension"] = [*moved.get("extension", []), revocation_reason(effect.revocation_reason)]
            changed = await uow.resources.update(service_request, moved)
            if changed is None:
                raise _stale(current, expected_version)
            targets.append(f"ServiceRequest/{focus_id}/_history/{changed.version_id}")
            await _after_service_request_moved(uow, routing, current.content, changed.content, now, who)

        uow.resources.add(provenance(targets, now, who, f"Task {current.content.get('status')} → {content['status']}"))
        await uow.commit()
    return updated

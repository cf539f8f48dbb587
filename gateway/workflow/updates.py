"""Following a referral we forwarded: the peer gateway that runs its workflow reports status changes."""

from __future__ import annotations

from gateway.errors import BusinessRuleViolation, IssueCode, ResourceNotFound
from gateway.fhir.primitives import utc_now
from gateway.fhir.search import parse_search
from gateway.fhir.types import Resource
from gateway.routing.config import PlatformKind, RoutingTable
from gateway.routing.schedule import platform_of
from gateway.store.database import Database
from gateway.store.repository import StoredResource
from gateway.store.unit_of_work import UnitOfWork
from gateway.store.visibility import performed_by
from gateway.workflow.provenance import Agent, provenance

#: Statuses a peer may report that our copy takes over (an active or draft report changes nothing here).
FOLLOWED_STATUSES = frozenset({"revoked", "completed", "on-hold", "entered-in-error"})


async def follow_update(
    database: Database,
    routing: RoutingTable,
    reported: Resource,
    reporter_platform: str | None = None,
    *,
    authenticated: bool = False,
) -> StoredResource:
    """Only for a referral this gateway forwarded to a peer gateway: any other referral's course is decided
    here, by its GP and platform, not by a message. With authentication on, only from the peer itself: a
    ``platform`` client bound to the platform key (``reporter_platform``) the referral was forwarded to; anyone
    else gets the 404 of an unknown referral, so that a message learns nothing about another party's referral."""
    identifiers = [i for i in reported.get("identifier") or [] if i.get("system") and i.get("value")]
    params = [("identifier", ",".join(f"{i['system']}|{i['value']}" for i in identifiers))] if identifiers else []
    # With authentication on, among the referrals forwarded to the reporter only: identifiers are each sender's own
    # (idempotency keys per client), so another sender's referral may carry the same one — it must neither make
    # the report ambiguous (a 404 for ever: the peer's updates lost) nor be the one it moves.
    reporter = routing.platforms.get(reporter_platform or "") if authenticated else None
    if authenticated and reporter is None:
        params = []
    forwarded_to = performed_by((reporter.organization_system, reporter.organization_value)) if reporter else None
    async with UnitOfWork(database) as uow:
        matches = (
            await uow.resources.find(
                parse_search("ServiceRequest", params, default_count=2, max_count=2), limit=2, visible=forwarded_to
            )
            if params
            else []
        )
        platform = await platform_of(uow, routing, matches[0].content) if len(matches) == 1 else None
        if len(matches) != 1 or (authenticated and (platform is None or platform.key != reporter_platform)):
            raise ResourceNotFound.single(
                IssueCode.RESOURCE_NOT_FOUND,
                "this gateway holds no referral with the reported ServiceRequest identifier",
                "Bundle.entry.resource.identifier",
            )
        current = matches[0]
        if platform is None or platform.kind is not PlatformKind.PEER_GATEWAY:
            raise BusinessRuleViolation.single(
                IssueCode.MESSAGE_EVENT_UNSUPPORTED,
                "this referral was not forwarded to a peer gateway: its status is not set by referral-update",
                "Bundle.entry[0].resource.eventCoding",
            )
        status = reported.get("status")
        if status in FOLLOWED_STATUSES and status != current.content.get("status"):
            moved = dict(current.content) | {"status": status}
            if reported.get("extension"):
                reasons = [e for e in reported["extension"] if str(e.get("url", "")).endswith("request-statusReason")]
                moved["extension"] = [*moved.get("extension", []), *reasons]
            updated = await uow.resources.update(current, moved)
            if updated is not None:
                performer = (current.content.get("performer") or [{}])[0].get("reference")
                uow.resources.add(
                    provenance(
                        [f"{updated.reference}/_history/{updated.version_id}"],
                        utc_now(),
                        [Agent("informant", str(performer or updated.reference))],
                        f"status reported by the gateway the referral was forwarded to: {status}",
                    )
                )
                current = updated
        await uow.commit()
    return current

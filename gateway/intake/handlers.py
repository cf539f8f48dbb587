"""Entry points of intake: a posted Bundle in, the answer Bundle out."""

from __future__ import annotations

from gateway.errors import IssueCode, StoreUnavailable
from gateway.fhir.types import Resource
from gateway.intake.referral import read_referral
from gateway.intake.responses import message_response, transaction_response
from gateway.intake.service import take_in
from gateway.routing.config import RoutingTable
from gateway.store.database import Database
from gateway.store.unit_of_work import UnitOfWork


async def process_transaction(database: Database, routing: RoutingTable, bundle: Resource, base_url: str) -> Resource:
    outcome = await take_in(database, read_referral(bundle, "transaction"), routing)
    return transaction_response(outcome, base_url)


async def process_message(database: Database, routing: RoutingTable, bundle: Resource, base_url: str) -> Resource:
    referral = read_referral(bundle, "message")
    outcome = await take_in(database, referral, routing)
    async with UnitOfWork(database, write=False) as uow:
        service_request = await uow.resources.get("ServiceRequest", outcome.service_request_id)
    if service_request is None:  # pragma: no cover - stored in the same transaction as the outcome
        raise StoreUnavailable.single(IssueCode.STORE_UNAVAILABLE, "the stored referral could not be read back")
    assert referral.message_header is not None
    return message_response(outcome, referral.message_header, service_request, base_url)

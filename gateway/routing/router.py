"""Choosing the competent platform for a referral: the patient's territory, looked up in the routing table."""

from __future__ import annotations

from gateway.errors import BusinessRuleViolation, IssueCode
from gateway.fhir.types import Resource
from gateway.routing.config import Platform, RoutingTable
from gateway.routing.territory import territory_of


def route(routing: RoutingTable, patient: Resource, expression: str) -> Platform:
    """The platform of the patient's territory; a 422 naming the address when none covers it."""
    territory = territory_of(patient)
    platform = routing.platform_for_codes(territory.commune, territory.department)
    if platform is not None:
        return platform
    if territory.known:
        message = (
            f"no DAC platform covers the patient's territory (commune {territory.commune or '?'}, department "
            f"{territory.department}) and the routing file names no default"
        )
    else:
        message = (
            "the patient's address gives no territory: an INSEE commune code (fr-core-address-insee-code "
            "extension or district) or a French postal code is needed to route the referral"
        )
    raise BusinessRuleViolation.single(IssueCode.TERRITORY_UNKNOWN, message, expression)

"""What the workflow decides when a referral is taken in: the ServiceRequest's stored status and the Tasks.

Today every accepted referral is ``active`` with no Task. The GP validation step, patient information and
opposition (DESIGN §3 steps 2–4, issue 5) are decided here, from the referral and the platform's policy, and
nowhere else: intake stores whatever plan this returns, in the same transaction as the referral.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.fhir.types import Resource


@dataclass(frozen=True, slots=True)
class IntakePlan:
    service_request_status: str
    tasks: list[Resource] = field(default_factory=list)


def plan_intake(service_request: Resource, patient: Resource) -> IntakePlan:
    return IntakePlan(service_request_status="active")

"""What the workflow decides when a referral is taken in (DESIGN §3 steps 2–4): the ServiceRequest's stored
status, the Tasks, and their Provenances — of a validation the requester declares, of a referral held for the
GP's validation, of one revoked for an opposition (routing's is ``schedule_referral``'s). Pure: intake gives the
facts and the stored references, and stores whatever plan comes back in the same transaction as the referral.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.fhir.primitives import fhir_instant, new_id
from gateway.fhir.types import Resource
from gateway.referral.facts import ConsentState, Trigger
from gateway.workflow.policies import Owner, Policy, TaskType, gp_step
from gateway.workflow.provenance import GATEWAY, Agent, provenance
from gateway.workflow.tasks import RevocationReason, TaskReferences, build_task, revocation_reason

#: How an opposition on record ends (DESIGN §11): told to the sender of a referral it revoked — a permit inside a
#: referral does not lift it.
LIFTING = (
    "A Consent inside a referral does not lift an opposition on record: the patient's withdrawal of it is a Consent "
    "of its own — POST /fhir/Consent with provision.type permit, dated (dateTime) after the opposition, or the "
    "opposition's poster (or an operator) setting it inactive with PUT /fhir/Consent/{id}. This referral stays "
    "revoked: send a new one once the opposition is lifted."
)


@dataclass(frozen=True, slots=True)
class ReferralFacts:
    policy: Policy
    gp_validation_delay: timedelta
    trigger: Trigger
    consent: ConsentState
    opposition_on_record: bool = False
    declared_validation: datetime | None = None  # dac-gp-validation: when the GP validated, per the requester
    declared_validator: str | None = None  # … and who (a stored reference), when said
    forwarded: bool = False  # the competent platform runs its own gateway: its workflow decides, not ours
    consents: tuple[str, ...] = ()  # the referral's Consents (stored references): what an opposition rests on
    #: The oppositions (Consent deny) on record that the sender may read, as stored references: what the
    #: Provenance names besides the referral's own deny (``opposition_on_record`` counts them all).
    oppositions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IntakePlan:
    service_request_status: str
    routed: bool  # the request goes to the platform now (else it waits for the GP, or is revoked)
    service_request_extensions: list[Resource] = field(default_factory=list)
    tasks: list[Resource] = field(default_factory=list)
    provenances: list[Resource] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # information for the sender, in the answer


def plan_intake(
    facts: ReferralFacts, references: TaskReferences, now: datetime, deciders: Sequence[Agent] = (GATEWAY,)
) -> IntakePlan:
    """``deciders``: the agents of the gateway's own decisions' Provenances (the gateway, and the client that
    posted the referral when known)."""
    if facts.consent is ConsentState.DENY or facts.opposition_on_record:
        why = (
            "the patient objects to the referral (Consent deny)"
            if facts.consent is ConsentState.DENY
            else "an opposition of this patient is on record"
        )
        return IntakePlan(
            service_request_status="revoked",
            routed=False,
            service_request_extensions=[revocation_reason(RevocationReason.PATIENT_OPPOSITION)],
            provenances=[
                provenance(
                    [references.service_request],
                    now,
                    deciders,
                    "referral revoked at intake, not routed",
                    reason=f"patient-opposition: {why} (L1110-12)",
                    # What the revocation rests on: the referral's own deny, and any opposition on record.
                    entities=list(
                        dict.fromkeys(
                            (*(facts.consents if facts.consent is ConsentState.DENY else ()), *facts.oppositions)
                        )
                    ),
                )
            ],
            notes=[
                f"Referral revoked and not routed: {why} (droit d'opposition, CSP art. L1110-12).",
                *([LIFTING] if facts.opposition_on_record else []),
            ],
        )

    if facts.forwarded:
        return IntakePlan(
            service_request_status="active",
            routed=True,
            notes=["Forwarded to the competent platform's own gateway, which runs its GP and consent steps."],
        )
    step = gp_step(facts.policy, facts.trigger)
    tasks: list[Resource] = []
    provenances: list[Resource] = []
    notes: list[str] = []
    if step.task is not None:
        owner = references.gp if step.owner is Owner.GP else references.platform
        assert owner is not None, "a GP-owned step needs a known GP"
        task = build_task(
            step.task,
            references,
            owner=owner,
            now=now,
            status="completed" if step.already_done else "requested",
            deadline=now + facts.gp_validation_delay if step.blocks_routing else None,
        )
        task["id"] = new_id()
        tasks.append(task)
        if step.already_done and references.requester:
            # The gateway did not see the GP validate: the requester said so, and Provenance keeps who said it.
            task["executionPeriod"] = {"end": fhir_instant(facts.declared_validation or now)}
            agents = [Agent("informant", references.requester)]
            if facts.declared_validator:
                agents.append(Agent("verifier", facts.declared_validator))
            provenances.append(
                provenance([f"Task/{task['id']}"], now, agents, "GP validation declared by the requester")
            )
        if step.blocks_routing:
            provenances.append(
                provenance(
                    [references.service_request, f"Task/{task['id']}"],
                    now,
                    deciders,
                    "referral held for the GP's validation, not routed",
                    reason=f"{facts.policy} policy (D6327-4): the requester is not the GP and did not declare "
                    "the GP's validation",
                )
            )
            notes.append(
                f"Waiting for the GP's validation ({facts.policy} policy, D6327-4): Task/{task['id']} must be "
                f"accepted by {fhir_instant(now + facts.gp_validation_delay)}."
            )
    if facts.consent is ConsentState.NONE:
        task = build_task(TaskType.PATIENT_INFORMATION, references, owner=references.platform, now=now)
        task["id"] = new_id()
        tasks.append(task)
        notes.append("No Consent came with the referral: the platform informs the patient (L1110-12).")
    return IntakePlan(
        service_request_status="draft" if step.blocks_routing else "active",
        routed=not step.blocks_routing,
        tasks=tasks,
        provenances=provenances,
        notes=notes,
    )

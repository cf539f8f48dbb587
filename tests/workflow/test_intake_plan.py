"""The policy × trigger × consent matrix of DESIGN §3 steps 2–4, as a table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.referral.facts import ConsentState, Trigger
from gateway.workflow.intake import ReferralFacts, plan_intake
from gateway.workflow.policies import Policy
from gateway.workflow.tasks import REQUEST_STATUS_REASON, task_type_of

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def _refs(gp: str | None = "PractitionerRole/gp"):  # type: ignore[no-untyped-def]
    from gateway.workflow.tasks import TaskReferences

    return TaskReferences("ServiceRequest/sr", "Patient/p", "PractitionerRole/req", gp, "Organization/dac")


P16, D22 = Policy.PTA_2016, Policy.DAC_2022
GP, LINKED, VALIDATED, OTHER, NO_GP = (
    Trigger.GP, Trigger.LINKED_PHYSICIAN, Trigger.GP_VALIDATED, Trigger.OTHER, Trigger.NO_GP,
)  # fmt: skip

# policy, trigger → (ServiceRequest status, [(task type, status, owner)]) with a permit Consent
MATRIX = [
    (P16, GP, "active", []),
    (P16, LINKED, "active", [("gp-information", "requested", "PractitionerRole/gp")]),
    (P16, VALIDATED, "active", [("gp-validation", "completed", "PractitionerRole/gp")]),
    (P16, OTHER, "draft", [("gp-validation", "requested", "PractitionerRole/gp")]),
    (P16, NO_GP, "active", [("contact-gp", "requested", "Organization/dac")]),
    (D22, GP, "active", []),
    (D22, LINKED, "active", [("gp-information", "requested", "PractitionerRole/gp")]),
    (D22, VALIDATED, "active", [("gp-validation", "completed", "PractitionerRole/gp")]),
    (D22, OTHER, "active", [("gp-information", "requested", "PractitionerRole/gp")]),
    (D22, NO_GP, "active", [("contact-gp", "requested", "Organization/dac")]),
]


@pytest.mark.parametrize(("policy", "trigger", "status", "tasks"), MATRIX)
def test_gp_step(policy: Policy, trigger: Trigger, status: str, tasks: list[tuple[str, str, str]]) -> None:
    facts = ReferralFacts(policy, timedelta(days=7), trigger, ConsentState.PERMIT)
    plan = plan_intake(facts, _refs(None if trigger is NO_GP else "PractitionerRole/gp"), NOW)
    assert plan.service_request_status == status
    assert plan.routed is (status == "active")
    assert [(task_type_of(t), t["status"], t["owner"]["reference"]) for t in plan.tasks] == tasks
    for task in plan.tasks:
        assert task["focus"] == {"reference": "ServiceRequest/sr"} and task["for"] == {"reference": "Patient/p"}
        assert task["intent"] == "order" and task["requester"] == {"reference": "PractitionerRole/req"}


def test_blocking_validation_has_a_deadline() -> None:
    facts = ReferralFacts(P16, timedelta(days=7), OTHER, ConsentState.PERMIT)
    (task,) = plan_intake(facts, _refs(), NOW).tasks
    assert task["restriction"]["period"]["end"] == "2026-11-30T10:00:00.000Z"


def test_declared_validation_has_provenance_naming_the_requester() -> None:
    declared = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    facts = ReferralFacts(P16, timedelta(days=7), VALIDATED, ConsentState.PERMIT, False, declared, "Practitioner/gp")
    plan = plan_intake(facts, _refs(), NOW)
    (task,) = plan.tasks
    (provenance,) = plan.provenances
    assert provenance["target"] == [{"reference": f"Task/{task['id']}"}]
    agents = {a["type"]["coding"][0]["code"]: a["who"]["reference"] for a in provenance["agent"]}
    assert agents == {"informant": "PractitionerRole/req", "verifier": "Practitioner/gp"}
    assert task["executionPeriod"]["end"] == "2026-11-20T09:30:00.000Z"


@pytest.mark.parametrize("policy", [P16, D22])
@pytest.mark.parametrize("trigger", [GP, OTHER, NO_GP])
def test_no_consent_adds_patient_information(policy: Policy, trigger: Trigger) -> None:
    facts = ReferralFacts(policy, timedelta(days=7), trigger, ConsentState.NONE)
    plan = plan_intake(facts, _refs(None if trigger is NO_GP else "PractitionerRole/gp"), NOW)
    information = [t for t in plan.tasks if task_type_of(t) == "patient-information"]
    assert len(information) == 1 and information[0]["owner"] == {"reference": "Organization/dac"}
    assert any("informs the patient" in note for note in plan.notes)


@pytest.mark.parametrize("policy", [P16, D22])
@pytest.mark.parametrize("trigger", list(Trigger))
@pytest.mark.parametrize(("consent", "on_record"), [(ConsentState.DENY, False), (ConsentState.PERMIT, True)])
def test_opposition_revokes_whatever_else(
    policy: Policy, trigger: Trigger, consent: ConsentState, on_record: bool
) -> None:
    plan = plan_intake(ReferralFacts(policy, timedelta(days=7), trigger, consent, on_record), _refs(), NOW)
    assert plan.service_request_status == "revoked" and not plan.routed and plan.tasks == []
    (reason,) = plan.service_request_extensions
    assert reason["url"] == REQUEST_STATUS_REASON
    assert reason["valueCodeableConcept"]["coding"][0]["code"] == "patient-opposition"
    assert "L1110-12" in plan.notes[0]

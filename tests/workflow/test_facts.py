from __future__ import annotations

import pytest

from gateway.referral.facts import (
    ConsentState,
    Trigger,
    consent_state,
    gp_reference,
    professional_keys,
    requester_is_gp,
    trigger_of,
)


@pytest.mark.parametrize(
    ("gp", "is_gp", "link", "declared", "expected"),
    [
        ("Practitioner/gp", True, None, False, Trigger.GP),
        ("Practitioner/gp", True, "none", True, Trigger.GP),  # identifiers win over declarations
        ("Practitioner/gp", False, "self", False, Trigger.OTHER),  # claims to be the GP, identifiers disagree
        ("Practitioner/gp", False, "linked-physician", False, Trigger.LINKED_PHYSICIAN),
        ("Practitioner/gp", False, "none", True, Trigger.GP_VALIDATED),
        ("Practitioner/gp", False, None, False, Trigger.OTHER),
        (None, False, None, False, Trigger.NO_GP),
        (None, False, "self", False, Trigger.GP),  # no GP on file, the requester says they are
    ],
)
def test_trigger(gp: str | None, is_gp: bool, link: str | None, declared: bool, expected: Trigger) -> None:
    assert trigger_of(gp=gp, requester_is_gp=is_gp, gp_link=link, validation_declared=declared) is expected


def test_professional_keys_normalise_idnps() -> None:
    practitioner = {
        "identifier": [
            {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810100123453"},
            {"system": "https://adeli.esante.gouv.fr", "value": "751234567"},
        ]
    }
    assert professional_keys(practitioner) == {"rpps:10100123453", "adeli:751234567"}


async def test_requester_is_gp_through_roles_and_identifiers() -> None:
    resources = {
        "PractitionerRole/a": {"practitioner": {"reference": "Practitioner/1"}},
        "PractitionerRole/b": {"practitioner": {"reference": "Practitioner/2"}},
        "Practitioner/1": {"identifier": [{"system": "https://rpps.esante.gouv.fr", "value": "10100123453"}]},
        "Practitioner/2": {"identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810100123453"}]},
        "Practitioner/3": {"identifier": [{"system": "https://rpps.esante.gouv.fr", "value": "10100345676"}]},
    }

    async def load(reference: str):  # type: ignore[no-untyped-def]
        return resources.get(reference)

    assert await requester_is_gp("PractitionerRole/a", "PractitionerRole/b", load)  # same RPPS, two roles
    assert await requester_is_gp("PractitionerRole/a", "Practitioner/2", load)
    assert not await requester_is_gp("PractitionerRole/a", "Practitioner/3", load)
    assert not await requester_is_gp("PractitionerRole/a", None, load)


def test_gp_from_care_team_role() -> None:
    care_team = {
        "participant": [
            {
                "role": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "PCP"}]}],
                "member": {"reference": "Practitioner/gp"},
            }
        ]
    }
    assert gp_reference({}, [care_team]) == "Practitioner/gp"
    assert (
        gp_reference({"generalPractitioner": [{"reference": "PractitionerRole/x"}]}, [care_team])
        == "PractitionerRole/x"
    )
    assert gp_reference({}, []) is None


def test_consent_state() -> None:
    assert consent_state([]) is ConsentState.NONE
    assert consent_state([{"status": "active", "provision": {"type": "permit"}}]) is ConsentState.PERMIT
    assert consent_state([{"status": "active", "provision": {"type": "deny"}}]) is ConsentState.DENY

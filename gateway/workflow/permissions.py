"""Who may decide what on a Task (DESIGN §3.3): role × Task code × target status, as one table.

Visibility comes first (``gateway.store.visibility``: a Task the caller may not see is a 404); this table then
says which of the Tasks it sees a client may move, and to which status — anything else is a 403
``decision-not-allowed``. The state machine (``gateway.workflow.transitions``) still applies on top.

- an ``operator`` makes any allowed transition (support, corrections);
- a ``sender`` (the requester's software) only withdraws its referral: its gp-validation Task ``cancelled``,
  with a statusReason — it never validates, completes or rejects in the GP's place;
- a ``sender`` relays the GP's answer too (D6327-4: the GP "est systématiquement contacté par le professionnel
  requérant"): its gp-validation Task ``accepted`` or ``rejected`` when its X-Provenance names the GP — the Task's
  owner — as the agent it acts ``onBehalfOf`` (``RELAYED``); the convention the platform uses after escalation;
- a ``practitioner`` (the GP's own software) gives the GP's answer on the gp-validation Tasks its professionals
  own, and reports a gp-information Task under way or done — escalated or not: the GP may still answer once
  the platform was asked to contact them;
- a ``platform`` works its own Tasks (platform-intake, contact-gp, patient-information), and records the GP's
  answer on a gp-validation Task once the Task is escalated (no answer by its deadline: "à défaut par la
  plateforme", D6327-4) — never before, when the GP still answers for itself (it does not even see the referral
  before: ``gateway.store.visibility``);
- a gp-information Task (the GP is informed, not asked: the requester is a physician linked to the GP, or any
  professional under dac-2022) records that the GP was told. D6327-4: the GP "est systématiquement contacté par
  le professionnel requérant, ou à défaut par la plate-forme" — so the ``sender`` (the requester's software)
  and the ``platform`` both may report it under way or done (``GP_INFORMED``), and nothing else: informing is no
  validation, so neither accepts nor rejects it, and it is no withdrawal, so neither cancels it (an opposition
  or an operator does). The platform sees the Task only once the referral is routed to it — for gp-information,
  at intake, since informing never holds routing: from then on it is the platform's referral to take over.

"Target status": the status the decision leaves the Task in; a decision that keeps the status (a note, an
output) needs the right to that status too.

A Consent (what the patient said) is updated — an opposition ended, or corrected — by who posted it, or by an
operator (DESIGN §11): ``CONSENT_UPDATES``. Visibility comes first there too: a Consent the caller may not see is
a 404, one it sees but did not post a 403 ``consent-update-not-allowed``.

A client acts in the capacity in which it sees the Task (``acting_roles``): a platform's client sees the Tasks of
what was routed to its platform and, as any client, of the referrals it posted — on those it is their sender, with
a sender's rights, not a platform's (else a peer gateway could work another platform's Tasks, or answer for the GP
on a referral it sent). A practitioner's client likewise acts as the GP on its professionals' Tasks only.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from enum import StrEnum

from gateway.auth.clients import Role
from gateway.errors import Forbidden, IssueCode
from gateway.fhir.types import Resource
from gateway.store.database import Database
from gateway.store.unit_of_work import UnitOfWork
from gateway.store.visibility import Viewer
from gateway.workflow.policies import TaskType
from gateway.workflow.tasks import BUSINESS_STATUS_SYSTEM, BusinessStatus, task_type_of
from gateway.workflow.transitions import TRANSITIONS, check_status

ANY_STATUS = frozenset(TRANSITIONS)
#: What the GP answers on a gp-validation Task (the platform records it for the GP once escalated).
GP_ANSWERS = frozenset({"received", "in-progress", "accepted", "completed", "rejected"})
WITHDRAWAL = frozenset({"cancelled"})
#: Informing the GP (gp-information): under way, then done — by the requester or, failing that, the platform.
GP_INFORMED = frozenset({"in-progress", "completed"})
NOTHING: frozenset[str] = frozenset()

#: (role, Task code, the Task escalated?) → the statuses a decision may leave it in. ``None`` as the code: any.
DECISIONS: Mapping[tuple[Role, str | None, bool], frozenset[str]] = {
    (Role.OPERATOR, None, False): ANY_STATUS,
    (Role.OPERATOR, None, True): ANY_STATUS,
    (Role.SENDER, TaskType.GP_VALIDATION, False): WITHDRAWAL,
    (Role.SENDER, TaskType.GP_VALIDATION, True): WITHDRAWAL,
    (Role.PLATFORM, TaskType.GP_VALIDATION, True): GP_ANSWERS,
    **{(Role.PRACTITIONER, TaskType.GP_VALIDATION, escalated): GP_ANSWERS for escalated in (False, True)},
    **{
        (role, TaskType.GP_INFORMATION, escalated): GP_INFORMED
        for role in (Role.SENDER, Role.PLATFORM, Role.PRACTITIONER)
        for escalated in (False, True)
    },
    **{
        (Role.PLATFORM, code, escalated): ANY_STATUS
        for code in (TaskType.PLATFORM_INTAKE, TaskType.CONTACT_GP, TaskType.PATIENT_INFORMATION)
        for escalated in (False, True)
    },
}

#: (role, Task code) → the statuses it may set when relaying the answer of the Task's owner: an X-Provenance agent
#: acting ``onBehalfOf`` the owner (the requester's software reports what the GP answered it).
RELAYED: Mapping[tuple[Role, str], frozenset[str]] = {
    (Role.SENDER, TaskType.GP_VALIDATION): frozenset({"accepted", "rejected"}),
}


def escalated(task: Resource) -> bool:
    coding = (task.get("businessStatus") or {}).get("coding") or []
    return any(
        isinstance(c, dict) and c.get("system") == BUSINESS_STATUS_SYSTEM and c.get("code") == BusinessStatus.ESCALATED
        for c in coding
    )


def allowed_statuses(role: Role, task: Resource) -> frozenset[str]:
    """The statuses ``role`` may leave this (stored) Task in."""
    code, late = task_type_of(task), escalated(task)
    return DECISIONS.get((role, None, late), NOTHING) | DECISIONS.get((role, code or "", late), NOTHING)


async def acting_roles(database: Database, role: Role, viewer: Viewer, task_id: str) -> frozenset[Role]:
    """The capacities in which the caller acts on a Task it sees: its role — but a platform's client acts as the
    platform only on a Task its platform sees, a practitioner's as the GP only on its professionals' Tasks, and
    either as a sender on a Task of a referral it posted."""
    if role not in (Role.PLATFORM, Role.PRACTITIONER):
        return frozenset({role})
    # From what its view holds: a platform the routing file no longer names routes nothing to the client, whose
    # token may outlive that change — it then acts as the sender of what it posted, never as a platform.
    capacities: dict[Role, Viewer] = {}
    if viewer.platform_organization is not None:
        capacities[Role.PLATFORM] = Viewer(platform_organization=viewer.platform_organization)
    if viewer.professionals:
        capacities[Role.PRACTITIONER] = Viewer(professionals=viewer.professionals)
    if viewer.sender is not None:
        capacities[Role.SENDER] = Viewer(sender=viewer.sender)
    async with UnitOfWork(database, write=False) as uow:
        return frozenset(
            [capacity for capacity, seen in capacities.items() if await uow.visibility.can_see(seen, "Task", task_id)]
        )


def check_decision_right(
    roles: Collection[Role], current: Resource, proposed: Resource, on_behalf_of: Sequence[str | None] = ()
) -> None:
    """403 (``decision-not-allowed``) unless one of ``roles`` may make this decision on the stored Task
    ``current``, by itself or relaying its owner's answer (``on_behalf_of``: X-Provenance's agents' onBehalfOf,
    in order; one naming someone else than the owner is a 403 ``provenance-agent-mismatch``)."""
    target = check_status(proposed)  # no status, or none of R4's: a 422 first
    allowed = frozenset().union(*(allowed_statuses(role, current) for role in roles))
    if target in allowed:
        return
    code = task_type_of(current) or "unknown"
    who = " or ".join(sorted(str(role) for role in roles)) or "this"
    if any(target in RELAYED.get((role, code), NOTHING) for role in roles):
        owner = (current.get("owner") or {}).get("reference")
        for index, named in enumerate(on_behalf_of):
            if named is not None and named != owner:
                raise Forbidden.single(
                    IssueCode.PROVENANCE_AGENT_MISMATCH,
                    f"X-Provenance agent[{index}].onBehalfOf is {named}, not the Task's owner ({owner}): a {who} "
                    "client relays the answer of the professional who owns the Task only",
                    f"Provenance.agent[{index}].onBehalfOf",
                )
        if owner is not None and owner in on_behalf_of:
            return
        raise Forbidden.single(
            IssueCode.DECISION_NOT_ALLOWED,
            f"a {who} client sets a {code} Task {target} only to relay the GP's answer: send X-Provenance with an "
            f"agent acting onBehalfOf the Task's owner ({owner})",
            "Task.status",
        )
    if allowed:
        detail = f"on a {code} Task a {who} client may only set status {', '.join(sorted(allowed))}"
    elif Role.PLATFORM in roles and code == TaskType.GP_VALIDATION:
        detail = "a platform records the GP's answer on a gp-validation Task only once it is escalated"
    else:
        detail = f"a {who} client does not decide {code} Tasks"
    raise Forbidden.single(IssueCode.DECISION_NOT_ALLOWED, detail, "Task.status")


class ConsentRight(StrEnum):
    ANY = "any"  # every Consent it sees
    POSTED = "posted"  # the Consents it posted: on their own, or in its referrals


#: Role → which Consents it may update (end or correct). A role not listed updates none.
CONSENT_UPDATES: Mapping[Role, ConsentRight] = {
    Role.OPERATOR: ConsentRight.ANY,
    Role.SENDER: ConsentRight.POSTED,
    Role.PLATFORM: ConsentRight.POSTED,
    Role.PRACTITIONER: ConsentRight.POSTED,
}


def check_consent_update_right(role: Role, posted: bool) -> None:
    """403 (``consent-update-not-allowed``) unless ``role`` may update a Consent it sees, ``posted`` by it or not."""
    right = CONSENT_UPDATES.get(role)
    if right is ConsentRight.ANY or (right is ConsentRight.POSTED and posted):
        return
    raise Forbidden.single(
        IssueCode.CONSENT_UPDATE_NOT_ALLOWED,
        "a Consent is updated (an opposition ended or corrected) by the client that posted it, or by an operator",
        "Consent",
    )

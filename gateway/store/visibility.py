"""Who may see what: each referral's members and senders, and the SQL condition that filters by them.

A referral is its ServiceRequest; its *members* are the resources it brought or made at intake (Patient,
professionals, Consent, CareTeam, Tasks, …), its *senders* the clients that posted it. A viewer sees a resource
when it is a party to a referral the resource belongs to:

- a sender — any client — to the referrals it sent (``referral_senders``, recorded at intake: the only place that
  knows);
- a platform, to the referrals routed to it — read from the ServiceRequest's ``performer`` in the search index
  (the platform's Organization), so routing needs no bookkeeping of its own and a re-routed referral follows —
  once they reached it: routed (a ``platform-intake`` Task of its own) or escalated to it (a ``contact-gp`` Task).
  A referral held for the GP's validation (pta-2016) names its platform already, but is not the platform's yet
  (DESIGN §11): until then it sees nothing of it;
- a practitioner (a GP's software), to the referrals a Task of one of its professionals focuses on — a Task owned
  by a Practitioner carrying one of its RPPS numbers (as RPPS or IDNPS), or by a PractitionerRole of one; of their
  Tasks it sees only those (not the platform's);
- an operator, to everything.

Tasks made after intake (decisions, deadlines) belong to the referral their ``focus`` names, and a platform also
sees the Tasks it owns (once the referral reached it); a Provenance belongs to the referral of the ServiceRequest
or Task it targets: all read from the search index, so no later writer has to remember to register them.
A resource shared by several referrals (one Patient referred twice) is visible to the parties of each. A Consent
posted on its own (``POST /fhir/Consent``, an opposition message) is a record of its own: its members and senders
are keyed by its reference (``Consent/…``, never a ServiceRequest id), its poster the sender. The referrals an
opposition revokes do not get it: their parties learn why from the revocation reason, not what the Consent says.

What a viewer reads of a resource it may see is the stored resource, but for one reference: a Consent names the
stored Patient (``patient.reference``) only to who may see that Patient. An opposition posted by INS for another
party's patient is stored linked to that Patient — the link revokes its referrals, finds the opposition at later
intakes and is the operators' to read — and its poster reads it as it posted it, the patient by identifier: the
same Consent whether or not that patient is known here, and no id of a Patient it could not resolve
(``as_seen``, for every read and for the answer to the post). A search by that link answers as the read does
(``searchable``): ``Consent?patient=Patient/<id>`` matches only the Consents whose Patient the viewer may see,
so that a search never confirms a link the read hides — the empty Bundle of an unknown patient.

Why tables of our own rather than a column on ``resources``: a resource belongs to any number of referrals, and
a membership row costs one bulk insert in the intake's flush, while the resource rows stay as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.fhir.outcome import CANONICAL_BASE
from gateway.fhir.search import SearchQuery, split_reference
from gateway.store.repository import PendingWrites, StoredResource, any_of
from gateway.store.tables import referral_members, referral_senders, resource_identities, resources, search_index


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whose view of the store. ``everything`` for operators; else the client id it sent as, for a platform's
    client its platform's Organization identifier (system, value) too, and for a practitioner's its professionals,
    as the identifiers (system, value) a Practitioner carries them under (an RPPS number and its IDNPS)."""

    everything: bool = False
    sender: str | None = None
    platform_organization: tuple[str, str] | None = None
    professionals: tuple[tuple[str, str], ...] = ()


EVERYTHING = Viewer(everything=True)
#: The Tasks that bring a referral to its platform (``gateway.workflow.policies.TaskType``): routing's
#: platform-intake, an escalation's contact-gp — (CodeSystem, codes).
_REACHED_BY = (f"{CANONICAL_BASE}/CodeSystem/dac-task-type", ("platform-intake", "contact-gp"))


def _party_to(
    viewer: Viewer, service_request_id: sa.ColumnElement[str], *, as_professional: bool = True
) -> sa.ColumnElement[bool]:
    """The viewer is a party to the referral whose ServiceRequest id is ``service_request_id`` (a practitioner's
    professionals' part left out when not ``as_professional``: of a referral's Tasks, it sees its own only)."""
    parties: list[sa.ColumnElement[bool]] = []
    if viewer.sender is not None:
        s = referral_senders.c
        parties.append(sa.exists().where(s.service_request_id == service_request_id, s.client_id == viewer.sender))
    if viewer.platform_organization is not None:
        organization = _organization_id(viewer.platform_organization)
        parties.append(
            sa.and_(
                _indexed("ServiceRequest", service_request_id, "performer", "Organization", organization),
                _reached(organization, service_request_id),
            )
        )
    if viewer.professionals and as_professional:
        focus = search_index.alias()
        parties.append(
            sa.exists().where(
                focus.c.resource_type == "Task",
                focus.c.param == "focus",
                focus.c.system == "ServiceRequest",
                focus.c.value == service_request_id,
                _owned_by_professional(viewer, focus.c.resource_id),
            )
        )
    return sa.or_(*parties) if parties else sa.false()


def _reached(organization: Any, service_request_id: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
    """The referral reached the platform whose Organization id is ``organization``: it owns a Task that routing or
    an escalation made for it (``_REACHED_BY``) on that referral."""
    focus, owner, code = search_index.alias(), search_index.alias(), search_index.alias()
    system, codes = _REACHED_BY
    return sa.exists().where(
        focus.c.resource_type == "Task",
        focus.c.param == "focus",
        focus.c.system == "ServiceRequest",
        focus.c.value == service_request_id,
        owner.c.resource_type == "Task",
        owner.c.resource_id == focus.c.resource_id,
        owner.c.param == "owner",
        owner.c.system == "Organization",
        owner.c.value == organization,
        code.c.resource_type == "Task",
        code.c.resource_id == focus.c.resource_id,
        code.c.param == "code",
        code.c.system == system,
        code.c.value.in_(codes),
    )


def _owned_by_professional(viewer: Viewer, task_id: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
    """The Task's owner is one of the viewer's professionals: a Practitioner carrying one of its identifiers, or a
    PractitionerRole whose practitioner is one."""
    carrier = search_index.alias()
    practitioners = sa.select(carrier.c.resource_id).where(
        carrier.c.resource_type == "Practitioner",
        carrier.c.param == "identifier",
        sa.or_(
            *(sa.and_(carrier.c.system == system, carrier.c.value == value) for system, value in viewer.professionals)
        ),
    )
    owner, by_role, role = search_index.alias(), search_index.alias(), search_index.alias()
    return sa.or_(
        sa.exists().where(
            owner.c.resource_type == "Task",
            owner.c.resource_id == task_id,
            owner.c.param == "owner",
            owner.c.system == "Practitioner",
            owner.c.value.in_(practitioners),
        ),
        sa.exists().where(
            by_role.c.resource_type == "Task",
            by_role.c.resource_id == task_id,
            by_role.c.param == "owner",
            by_role.c.system == "PractitionerRole",
            role.c.resource_type == "PractitionerRole",
            role.c.resource_id == by_role.c.value,
            role.c.param == "practitioner",
            role.c.system == "Practitioner",
            role.c.value.in_(practitioners),
        ),
    )


def _indexed(
    resource_type: str, resource_id: sa.ColumnElement[str], param: str, target_type: str, target: Any
) -> sa.ColumnElement[bool]:
    """The resource's reference ``param`` points to ``target_type``/``target`` (from the search index)."""
    i = search_index.alias()
    return sa.exists().where(
        i.c.resource_type == resource_type,
        i.c.resource_id == resource_id,
        i.c.param == param,
        i.c.system == target_type,
        i.c.value == target,
    )


def _organization_id(identifier: tuple[str, str]) -> sa.ScalarSelect[str]:
    i = resource_identities.c
    system, value = identifier
    return (
        sa.select(i.resource_id)
        .where(i.resource_type == "Organization", i.system == system, i.value == value)
        .scalar_subquery()
    )


def performed_by(organization: tuple[str, str]) -> sa.ColumnElement[bool]:
    """The condition for a ServiceRequest (a row of ``resources``) to name as its performer the Organization
    registered under ``organization`` (system, value): a platform's, from the routing file."""
    return _indexed("ServiceRequest", resources.c.id, "performer", "Organization", _organization_id(organization))


def visible(viewer: Viewer, resource_type: str, resource_id: sa.ColumnElement[str]) -> sa.ColumnElement[bool] | None:
    """The condition for a resource of ``resource_type`` whose id is ``resource_id`` to be visible; None when
    the viewer sees everything."""
    if viewer.everything:
        return None
    m = referral_members.alias()
    task = resource_type == "Task"  # a practitioner sees its professionals' Tasks, not all of their referrals'
    alternatives: list[sa.ColumnElement[bool]] = [
        sa.exists().where(
            m.c.resource_type == resource_type,
            m.c.resource_id == resource_id,
            _party_to(viewer, m.c.service_request_id, as_professional=not task),
        )
    ]
    if task:
        alternatives.append(_of_a_referral(viewer, "Task", resource_id, "focus", as_professional=False))
        if viewer.platform_organization is not None:
            # Its own Tasks, once their referral reached it (a re-routed referral's Task stays its owner's).
            organization = _organization_id(viewer.platform_organization)
            focus, code = search_index.alias(), search_index.alias()
            system, codes = _REACHED_BY
            alternatives.append(
                sa.and_(
                    _indexed("Task", resource_id, "owner", "Organization", organization),
                    sa.or_(
                        sa.exists().where(
                            code.c.resource_type == "Task",
                            code.c.resource_id == resource_id,
                            code.c.param == "code",
                            code.c.system == system,
                            code.c.value.in_(codes),
                        ),
                        sa.exists().where(
                            focus.c.resource_type == "Task",
                            focus.c.resource_id == resource_id,
                            focus.c.param == "focus",
                            focus.c.system == "ServiceRequest",
                            _reached(organization, focus.c.value),
                        ),
                    ),
                )
            )
        if viewer.professionals:
            alternatives.append(_owned_by_professional(viewer, resource_id))
    if resource_type == "Provenance":  # a decision's: its targets are the referral's ServiceRequest or Tasks
        target = search_index.alias()
        alternatives.append(_of_a_referral(viewer, "Provenance", resource_id, "target"))
        # One on a Task, for who may see that Task: a practitioner sees its professionals' Tasks of a referral,
        # not the platform's — nor, then, what the platform decided on them.
        task_visible = visible(viewer, "Task", target.c.value)
        assert task_visible is not None  # the viewer does not see everything
        alternatives.append(
            sa.exists().where(
                target.c.resource_type == "Provenance",
                target.c.resource_id == resource_id,
                target.c.param == "target",
                target.c.system == "Task",
                task_visible,
            )
        )
    return sa.or_(*alternatives)


def visible_type(viewer: Viewer, resource_type: str) -> sa.ColumnElement[bool] | None:
    """``visible`` for the rows of ``resources`` of that type (what ``_include`` and ``_revinclude`` add)."""
    return visible(viewer, resource_type, resources.c.id)


def _of_a_referral(
    viewer: Viewer, resource_type: str, resource_id: sa.ColumnElement[str], param: str, *, as_professional: bool = True
) -> sa.ColumnElement[bool]:
    """The resource's ``param`` references a ServiceRequest the viewer is a party to."""
    link = search_index.alias()
    return sa.exists().where(
        link.c.resource_type == resource_type,
        link.c.resource_id == resource_id,
        link.c.param == param,
        link.c.system == "ServiceRequest",
        _party_to(viewer, link.c.value, as_professional=as_professional),
    )


#: The one link a reader reads only when it may see its target: a Consent's ``patient`` — (resource type, search
#: parameter, target type). ``as_seen`` drops it from what the reader reads, ``searchable`` from what it searches.
_HIDDEN_LINK = ("Consent", "patient", "Patient")


def searchable(viewer: Viewer, query: SearchQuery) -> sa.ColumnElement[bool] | None:
    """The condition for a match of ``query`` to be shown to the viewer; None when it sees everything. A resource
    it may see (``visible``) — and, for a search by the hidden link (``Consent?patient=…``, by id, typed or not), one
    whose link it may read: else the search would confirm who the Consent is about where the read names the patient
    by INS only. A search by that INS (``patient:identifier``) matches: it finds what the poster posted."""
    condition = visible(viewer, query.resource_type, resources.c.id)
    resource_type, param, target_type = _HIDDEN_LINK
    if condition is None or query.resource_type != resource_type:
        return condition
    if not any(criterion.parameter.name == param for criterion in query.criteria):
        return condition
    # In SQL, beside the visibility filter, so that the total and the paging links count only what is shown.
    link = search_index.alias()
    target_visible = visible(viewer, target_type, link.c.value)
    assert target_visible is not None  # the viewer does not see everything
    hidden = sa.exists().where(
        link.c.resource_type == resource_type,
        link.c.resource_id == resources.c.id,
        link.c.param == param,
        link.c.system == target_type,
        sa.not_(target_visible),
    )
    return sa.and_(condition, sa.not_(hidden))


def _consent_patient(stored: StoredResource) -> str | None:
    """The id of the stored Patient a Consent names by reference, if any."""
    resource_type, param, target_type = _HIDDEN_LINK
    patient = stored.content.get(param) if stored.resource_type == resource_type else None
    if not isinstance(patient, dict) or not isinstance(patient.get("reference"), str):
        return None
    reference_type, target_id = split_reference(patient["reference"])
    return target_id if reference_type == target_type else None


def _patient_by_identifier(stored: StoredResource) -> StoredResource:
    """The Consent with ``patient`` as its poster identified it: the reference without its ``reference`` (its
    ``identifier``, the INS, is stored with it); none at all when nothing else names the patient."""
    content = dict(stored.content)
    named = {key: value for key, value in content["patient"].items() if key != "reference"}
    if named:
        content["patient"] = named
    else:
        del content["patient"]
    return dataclasses.replace(stored, content=content)


class VisibilityRepository:
    def __init__(self, connection: AsyncConnection, pending: PendingWrites) -> None:
        self._connection = connection
        self._pending = pending

    def _among(self, column: sa.ColumnElement[str], ids: list[str]) -> sa.ColumnElement[bool]:
        """``column`` is one of ``ids``: on PostgreSQL ``= ANY`` of one array, a statement whatever their number (an
        IN list is a statement per length, prepared again for each claim's number of referrals)."""
        return any_of(column, "ids", ids) if self._connection.dialect.name == "postgresql" else column.in_(ids)

    def add_members(self, service_request_id: str, members: Iterable[tuple[str, str]]) -> None:
        """Resources (type, id) that belong to the referral; written with the unit of work's bulk flush."""
        for resource_type, resource_id in dict.fromkeys(members):
            self._pending.add(
                referral_members,
                {"resource_type": resource_type, "resource_id": resource_id, "service_request_id": service_request_id},
            )

    def add_sender(self, service_request_id: str, client_id: str) -> None:
        self._pending.add(referral_senders, {"service_request_id": service_request_id, "client_id": client_id})

    async def is_sender(self, service_request_id: str, client_id: str) -> bool:
        """``client_id`` posted the referral whose ServiceRequest id this is."""
        await self._pending.flush(self._connection)
        s = referral_senders.c
        query = sa.select(sa.exists().where(s.service_request_id == service_request_id, s.client_id == client_id))
        return bool((await self._connection.execute(query)).scalar_one())

    async def records_of(self, resource_type: str, resource_id: str) -> list[str]:
        """The records (a referral's ServiceRequest id, or a Consent's own reference) a resource belongs to."""
        await self._pending.flush(self._connection)
        m = referral_members.c
        result = await self._connection.execute(
            sa.select(m.service_request_id).where(m.resource_type == resource_type, m.resource_id == resource_id)
        )
        return [row.service_request_id for row in result]

    async def posted_by(self, client_id: str, resource_type: str, resource_id: str) -> bool:
        """``client_id`` posted this resource: it is a member of a record (a referral, a Consent posted on its own)
        whose sender the client is."""
        await self._pending.flush(self._connection)
        m, s = referral_members.c, referral_senders.c
        query = sa.select(
            sa.exists().where(
                m.resource_type == resource_type,
                m.resource_id == resource_id,
                s.service_request_id == m.service_request_id,
                s.client_id == client_id,
            )
        )
        return bool((await self._connection.execute(query)).scalar_one())

    async def members_of(self, service_request_ids: Iterable[str]) -> dict[str, set[tuple[str, str]]]:
        """The members (type, id) of each of these referrals — one query."""
        ids = list(dict.fromkeys(service_request_ids))
        if not ids:
            return {}
        await self._pending.flush(self._connection)
        m = referral_members.c
        result = await self._connection.execute(
            sa.select(m.service_request_id, m.resource_type, m.resource_id).where(
                self._among(m.service_request_id, ids)
            )
        )
        members: dict[str, set[tuple[str, str]]] = {}
        for row in result:
            members.setdefault(row.service_request_id, set()).add((row.resource_type, row.resource_id))
        return members

    async def senders_of(self, service_request_ids: Iterable[str]) -> dict[str, list[str]]:
        """The clients that posted each of these referrals (none recorded with authentication off) — one query."""
        ids = list(dict.fromkeys(service_request_ids))
        if not ids:
            return {}
        await self._pending.flush(self._connection)
        s = referral_senders.c
        result = await self._connection.execute(
            sa.select(s.service_request_id, s.client_id).where(self._among(s.service_request_id, ids))
        )
        senders: dict[str, list[str]] = {}
        for row in result:
            senders.setdefault(row.service_request_id, []).append(row.client_id)
        return senders

    async def can_see(self, viewer: Viewer, resource_type: str, resource_id: str) -> bool:
        condition = visible(viewer, resource_type, sa.literal(resource_id, sa.String))
        if condition is None:
            return True
        await self._pending.flush(self._connection)
        return bool((await self._connection.execute(sa.select(condition))).scalar_one())

    async def as_seen(self, viewer: Viewer, found: Sequence[StoredResource]) -> list[StoredResource]:
        """``found`` — resources the viewer may see — as it reads them: a Consent naming by reference a Patient
        the viewer may not see names it by identifier instead (see the module's docstring)."""
        if viewer.everything:
            return list(found)
        hidden: dict[str, bool] = {}
        for patient in {p for stored in found if (p := _consent_patient(stored)) is not None}:
            hidden[patient] = not await self.can_see(viewer, "Patient", patient)
        return [
            _patient_by_identifier(stored) if hidden.get(_consent_patient(stored) or "") else stored for stored in found
        ]

"""Provenance of what the workflow records: who decided, possibly on whose behalf, and why.

Every decision the gateway stores carries one, written in the decision's own transaction: a client's decision
on a Task (the client, or the platform on the GP's behalf), and the gateway's own — routing a referral, holding
it for the GP, revoking it for an opposition, escalating a GP validation past its deadline, forwarding to a peer.
The gateway names itself as the ``performer`` (``GATEWAY``: a Device by display, as in the audit trail), and the
client that caused the decision beside it, by its client id (``client_agent``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.audit.events import CLIENT_ID_SYSTEM
from gateway.fhir.primitives import fhir_instant, new_id
from gateway.fhir.types import Resource

PROVENANCE_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


@dataclass(frozen=True, slots=True)
class Identifier:
    system: str
    value: str


@dataclass(frozen=True, slots=True)
class Agent:
    type: str  # provenance-participant-type: author, informant, verifier, performer, enterer, …
    who: str | Identifier | None  # a reference, an identifier, or None for the gateway itself
    on_behalf_of: str | None = None


#: The gateway deciding by itself (routing, holding, revoking, escalating, forwarding).
GATEWAY = Agent("performer", None)


def client_agent(client_id: str, type: str = "author") -> Agent:
    """An API client, by its client id: the software that asked for what was decided."""
    return Agent(type, Identifier(CLIENT_ID_SYSTEM, client_id))


def _who(who: str | Identifier | None) -> Resource:
    if who is None:
        return {"type": "Device", "display": "DAC Gateway"}
    if isinstance(who, Identifier):
        return {"identifier": {"system": who.system, "value": who.value}}
    return {"reference": who}


def provenance(
    targets: Sequence[str],
    now: datetime,
    agents: Sequence[Agent],
    activity: str | None = None,
    *,
    reason: str | None = None,
    entities: Sequence[str] = (),
) -> Resource:
    """``entities``: what the decision rests on (an opposition's Consent, …), as ``source`` entities."""
    rendered: Resource = {
        "resourceType": "Provenance",
        "id": new_id(),
        "target": [{"reference": target} for target in targets],
        "recorded": fhir_instant(now),
        "agent": [],
    }
    for agent in agents:
        item: Resource = {
            "type": {"coding": [{"system": PROVENANCE_PARTICIPANT, "code": agent.type}]},
            "who": _who(agent.who),
        }
        if agent.on_behalf_of:
            item["onBehalfOf"] = {"reference": agent.on_behalf_of}
        rendered["agent"].append(item)
    if activity:
        rendered["activity"] = {"text": activity}
    if reason:
        rendered["reason"] = [{"text": reason}]
    if entities:
        rendered["entity"] = [{"role": "source", "what": {"reference": entity}} for entity in entities]
    return rendered


@dataclass(frozen=True, slots=True)
class Actor:
    """The authenticated client behind a decision: what its Provenance names, and what it may claim.

    - a platform acts as its own Organization (``organization``: the routing file's identifier for its platform);
    - a practitioner's software acts as the professional who owns the Task (the Practitioner carrying one of
      its ``professionals`` identifiers), and is added as the ``enterer``; on any other Task, as a sender;
    - a sender acts as itself, by client id;
    - either may say it acts on behalf of the Task's owner (the GP whose answer it records), nobody else;
    - an operator (``trusted``) may record other agents; it is then added as the ``enterer``.
    """

    client_id: str
    organization: Identifier | None = None
    trusted: bool = False
    professionals: tuple[tuple[str, str], ...] = ()  # (system, value): RPPS numbers and their IDNPS


class AgentMismatch(ValueError):
    """An X-Provenance agent the authenticated client may not claim; ``index`` is the agent's position."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def decision_agents(
    actor: Actor | None,
    claimed: Sequence[Agent],
    owner: str,
    organization_reference: str | None,
    professional: str | None = None,
) -> list[Agent]:
    """The agents of a decision's Provenance. ``claimed``: X-Provenance's; ``owner``: the Task's owner;
    ``organization_reference``: the stored Organization of a platform actor, when there is one; ``professional``:
    the Practitioner behind the owner when the actor is a practitioner's software acting for them.
    Without an actor (authentication off), what was claimed, else the Task's owner."""
    if actor is None:
        return list(claimed) or [Agent("author", owner)]
    if professional is not None:
        return _professional_agents(actor, claimed, owner, professional)
    own: str | Identifier = (
        (organization_reference or actor.organization)
        if actor.organization is not None
        else Identifier(CLIENT_ID_SYSTEM, actor.client_id)
    )
    if not claimed:
        return [Agent("author", own)]
    if actor.trusted:
        return [*claimed, Agent("enterer", Identifier(CLIENT_ID_SYSTEM, actor.client_id))]
    # A platform names its Organization by reference or by identifier; a sender names itself by client id.
    accepted = {own, actor.organization} if actor.organization is not None else {own}
    for index, agent in enumerate(claimed):
        if agent.who not in accepted:
            named = "its own Organization" if actor.organization is not None else "itself (by client id)"
            raise AgentMismatch(
                index, f"X-Provenance agent[{index}].who is not the authenticated client: it may only name {named}"
            )
        if agent.on_behalf_of not in (None, owner):
            raise AgentMismatch(
                index,
                f"X-Provenance agent[{index}].onBehalfOf may only name the Task's owner ({owner}), "
                "whose answer the client records",
            )
    return list(claimed)


def _professional_agents(actor: Actor, claimed: Sequence[Agent], owner: str, professional: str) -> list[Agent]:
    """A practitioner's software deciding for the professional who owns the Task: the Provenance names that
    Practitioner (the owner may be their PractitionerRole), whatever X-Provenance calls them, and the software as
    the ``enterer``. X-Provenance may name the professional only, by either reference."""
    for index, agent in enumerate(claimed):
        if agent.who not in (professional, owner):
            raise AgentMismatch(
                index,
                f"X-Provenance agent[{index}].who is not the professional who owns the Task: a practitioner's "
                f"software may only name them ({professional} or {owner})",
            )
        if agent.on_behalf_of not in (None, owner):
            raise AgentMismatch(
                index, f"X-Provenance agent[{index}].onBehalfOf may only name the Task's owner ({owner})"
            )
    acting = [Agent(agent.type, professional, agent.on_behalf_of) for agent in claimed] or [
        Agent("author", professional)
    ]
    return [*acting, Agent("enterer", Identifier(CLIENT_ID_SYSTEM, actor.client_id))]

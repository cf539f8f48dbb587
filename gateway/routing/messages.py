"""The message Bundles the gateway sends (DESIGN §3.5): built when sent, from what is stored then, under the
outbox entry's id — the MessageHeader id, the same on every retry, so receivers drop duplicates.

A worker builds the messages of a whole claim at once, one query per level of references for all of them, and
splices each stored resource's JSON into the Bundle as it is: only the resources whose references lead further
(ServiceRequest, PractitionerRole, CareTeam, Patient) are parsed, nothing is dumped again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from gateway.fhir.primitives import fhir_instant, utc_now
from gateway.fhir.references import local_reference
from gateway.fhir.search import split_reference
from gateway.fhir.types import Resource
from gateway.referral.bundle import HOP_COUNT_EXTENSION, MESSAGE_EVENT_SYSTEM
from gateway.store.outbox import DELIVERED, PENDING, OutboxEntry
from gateway.store.unit_of_work import UnitOfWork
from gateway.store.visibility import Viewer
from gateway.validation.definitions import PROFILE_BY_TYPE
from gateway.workflow.references import referenceable
from gateway.workflow.tasks import REQUEST_STATUS_REASON, REVOCATION_REASON_SYSTEM, RevocationReason

OPPOSITION = RevocationReason.PATIENT_OPPOSITION
#: The events whose message carries the whole referral (a referral-request, an escalation's contact-gp): never
#: sent once the referral is revoked.
_CARRYING_THE_REFERRAL = frozenset({"referral-request", "contact-gp"})

Key = tuple[str, str]  # (resource type, id)


def _references(resource_type: str, content: Resource) -> list[str]:
    """What a resource of the referral stands on, to send along with it."""
    references: list[str] = []
    if resource_type == "ServiceRequest":
        references += [str((content.get(key) or {}).get("reference", "")) for key in ("subject", "requester")]
        references += [str(item.get("reference", "")) for item in content.get("performer") or []]
        references += [str(item.get("reference", "")) for item in content.get("supportingInfo") or []]
    elif resource_type == "PractitionerRole":
        references += [str((content.get(k) or {}).get("reference", "")) for k in ("practitioner", "organization")]
    elif resource_type == "CareTeam":
        references += [str((p.get("member") or {}).get("reference", "")) for p in content.get("participant") or []]
    elif resource_type == "Patient":
        references += [str(item.get("reference", "")) for item in content.get("generalPractitioner") or []]
    return references


_LEADING = frozenset({"ServiceRequest", "PractitionerRole", "CareTeam", "Patient"})  # those _references follows


@dataclass(frozen=True, slots=True)
class NothingToSend:
    """The delivery has no reason to be any more (its referral is gone, or was revoked before it left) — or, when
    ``later``, none yet: it is tried again (an update about a referral whose own delivery is still under way)."""

    reason: str
    later: bool = False


@dataclass(slots=True)
class _Parties:
    """Who may see what a referral's messages carry (``gateway.store.visibility``): its members, and what its
    senders may reference — its parties' view, as their reads have it."""

    members: dict[str, set[Key]]
    senders: dict[str, list[str]]
    platforms: frozenset[tuple[str, str]]
    seen: dict[tuple[str, Key], bool] = field(default_factory=dict)

    async def may_ship(self, uow: UnitOfWork, service_request: str, key: Key) -> bool:
        if key in self.members.get(service_request, ()):
            return True
        senders = self.senders.get(service_request)
        if not senders:
            return True  # authentication off: its one party, the development caller, sees everything
        if (service_request, key) not in self.seen:
            shared = False
            for sender in senders:
                if await referenceable(uow, Viewer(sender=sender), key[0], key[1], self.platforms):
                    shared = True
                    break
            self.seen[service_request, key] = shared
        return self.seen[service_request, key]


async def _gather(
    uow: UnitOfWork, service_requests: dict[str, str], parsed: dict[Key, Resource], base_url: str, parties: _Parties
) -> dict[str, dict[Key, str]]:
    """For each ServiceRequest (id → JSON), it and what it stands on: patient, requester (role, practitioner,
    organisation), platform, CareTeam and its members, Consent — in order found. One query per level. ``parsed``
    holds the resources parsed so far (the ServiceRequests at least), and gains those parsed here. Only resources
    of this gateway (``local_reference``: an absolute URL elsewhere is external, never loaded by its id) that the
    referral's parties may see (``_Parties``)."""
    texts: dict[Key, str] = {("ServiceRequest", sr): text for sr, text in service_requests.items()}
    found: dict[str, dict[Key, str]] = {sr: {("ServiceRequest", sr): text} for sr, text in service_requests.items()}
    level: dict[str, list[Key]] = {sr: [("ServiceRequest", sr)] for sr in service_requests}
    while level:
        wanted: dict[str, list[Key]] = {}
        for sr, keys in level.items():
            for key in keys:
                if key[0] not in _LEADING:
                    continue
                if key not in parsed:
                    parsed[key] = orjson.loads(texts[key])
                for reference in _references(key[0], parsed[key]):
                    local = local_reference(reference, base_url)
                    resource_type, resource_id = split_reference(local) if local else (None, "")
                    if resource_type and (resource_type, resource_id) not in found[sr]:
                        wanted.setdefault(sr, []).append((resource_type, resource_id))
        missing = {key for keys in wanted.values() for key in keys if key not in texts}
        texts.update(await uow.outbox.resource_texts(missing))
        level = {}
        for sr, keys in wanted.items():
            for key in dict.fromkeys(keys):
                if key in texts and key not in found[sr] and await parties.may_ship(uow, sr, key):
                    found[sr][key] = texts[key]
                    level.setdefault(sr, []).append(key)
    return found


def opposed(service_request: Resource) -> bool:
    """Revoked for the patient's opposition (its revocation reason says so)."""
    return service_request.get("status") == "revoked" and any(
        isinstance(extension, dict)
        and extension.get("url") == REQUEST_STATUS_REASON
        and any(
            isinstance(c, dict) and c.get("system") == REVOCATION_REASON_SYSTEM and c.get("code") == OPPOSITION
            for c in (extension.get("valueCodeableConcept") or {}).get("coding") or []
        )
        for extension in service_request.get("extension") or []
    )


def _bare(reference: object) -> Resource | None:
    """A Reference cut to its ``reference`` (no display, no identifier)."""
    if isinstance(reference, dict) and isinstance(reference.get("reference"), str):
        return {"reference": reference["reference"]}
    return None


def _cut(resource: Resource, kept: tuple[str, ...], references: tuple[str, ...]) -> Resource:
    cut: Resource = {"resourceType": resource["resourceType"]}
    cut |= {key: resource[key] for key in kept if key in resource}
    cut |= {key: bare for key in references if (bare := _bare(resource.get(key))) is not None}
    return cut


def minimal_service_request(service_request: Resource) -> Resource:
    """The ServiceRequest as an update after an opposition carries it (DESIGN §11): what the referral was and
    why it ended, nothing about the patient but the bare reference R4 requires. It still conforms to
    dac-servicerequest (identifier, code and requester kept): it claims that profile when the stored one did, and
    no other (a sender's own profile may require what was cut)."""
    cut = _cut(service_request, _SERVICE_REQUEST_KEPT, ("subject", "requester"))
    ours = PROFILE_BY_TYPE["ServiceRequest"]
    if ours in ((service_request.get("meta") or {}).get("profile") or []):
        cut["meta"] = {"profile": [ours]}
    reasons = [e for e in service_request.get("extension") or [] if e.get("url") == REQUEST_STATUS_REASON]
    if reasons:
        cut["extension"] = reasons
    return cut


def minimal_task(task: Resource) -> Resource:
    """A Task as an update after an opposition carries it: its course, not whom it was for nor who held it —
    so no longer a dac-task (which requires ``for`` and ``owner``): it claims no profile. ``intent`` stays: R4
    requires it."""
    return _cut(task, _TASK_KEPT, ("focus",))


_SERVICE_REQUEST_KEPT = ("id", "identifier", "status", "intent", "code", "authoredOn")
_TASK_KEPT = ("id", "identifier", "status", "statusReason", "businessStatus", "intent", "code")


class Message(bytes):
    """A message Bundle, serialised, with the resources it carries (``Type/id``, its MessageHeader apart): what the
    attempt's AuditEvent names, known when the message is made rather than parsed back from it at every attempt
    (5% of a worker's CPU in the delivery bench's profile)."""

    shipped: tuple[str, ...] = ()


def _message(entry: OutboxEntry, base_url: str, service_request: str, resources: Sequence[tuple[Key, str]]) -> Message:
    header: Resource = {
        "resourceType": "MessageHeader",
        "id": entry.id,
        "eventCoding": {"system": MESSAGE_EVENT_SYSTEM, "code": entry.event},
        "destination": [{"endpoint": entry.endpoint}],
        "source": {"name": "DAC Gateway", "endpoint": base_url},
        "focus": [{"reference": f"{base_url}/ServiceRequest/{service_request}"}],
    }
    if "hop" in entry.payload:
        header["extension"] = [{"url": HOP_COUNT_EXTENSION, "valueUnsignedInt": int(entry.payload["hop"])}]
    bundle = orjson.dumps(
        {
            "resourceType": "Bundle",
            "id": entry.id,
            "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{entry.id}"},
            "type": "message",
            "timestamp": fhir_instant(utc_now()),
        }
    )
    entries = [orjson.dumps({"fullUrl": f"urn:uuid:{entry.id}", "resource": header})]
    for (resource_type, resource_id), text in resources:
        full_url = orjson.dumps(f"{base_url}/{resource_type}/{resource_id}")
        entries.append(b'{"fullUrl":' + full_url + b',"resource":' + text.encode() + b"}")
    message = Message(bundle[:-1] + b',"entry":[' + b",".join(entries) + b"]}")
    message.shipped = tuple(f"{resource_type}/{resource_id}" for (resource_type, resource_id), _ in resources)
    return message


def _after_opposition(
    entry: OutboxEntry,
    service_request: Resource,
    tasks: list[tuple[str, str]],
    received: dict[str, tuple[str, str]],
) -> list[tuple[Key, str]] | NothingToSend:
    """What a message about a referral revoked for the patient's opposition carries: to a platform or peer
    (``kind`` in the payload) that received the referral, and to the sender's callback (it wrote the referral),
    the minimal ServiceRequest and Tasks; to a platform or peer that did not, nothing — later, while the
    referral's own delivery to it is still under way (it may yet arrive). ``received``: platform-intake Task id →
    (destination, status) of the referral's delivery."""
    if "kind" in entry.payload:
        deliveries = [
            received[task_id][1] for task_id, _ in tasks if received.get(task_id, ("",))[0] == entry.destination
        ]
        if DELIVERED not in deliveries:
            if PENDING in deliveries:
                return NothingToSend("its referral's own delivery is still under way", later=True)
            return NothingToSend("not sent: the patient objected, and this party never received the referral")
    resources = [(("ServiceRequest", str(service_request["id"])), _json(minimal_service_request(service_request)))]
    if entry.payload.get("kind") != "peer-gateway":
        resources += [(("Task", task_id), _json(minimal_task(orjson.loads(text)))) for task_id, text in tasks]
    return resources


def _json(resource: Resource) -> str:
    return orjson.dumps(resource).decode()


async def build_messages(
    uow: UnitOfWork,
    entries: Sequence[OutboxEntry],
    base_url: str,
    platforms: frozenset[tuple[str, str]] = frozenset(),
) -> dict[str, bytes | NothingToSend]:
    """The Bundle to POST (serialised) for each outbox entry, by entry id — or why there is nothing to send.
    ``platforms``: the identifiers of the routing file's platform Organizations (shared with every party).

    After an opposition (DESIGN §11) nothing more about the patient leaves: a platform or peer that never
    received the referral is sent nothing, one that did — and the sender's callback — a minimal update."""
    focus: dict[str, str] = {}
    for entry in entries:
        focus_type, focus_id = split_reference(str(entry.payload.get("focus", "")))
        if focus_type == "ServiceRequest":
            focus[entry.id] = focus_id
    stored = await uow.outbox.resource_texts(("ServiceRequest", sr) for sr in focus.values())
    service_requests = {sr: text for (_, sr), text in stored.items()}
    parsed: dict[Key, Resource] = {key: orjson.loads(text) for key, text in stored.items()}
    opposed_ids = {sr for sr in service_requests if opposed(parsed["ServiceRequest", sr])}
    full = {sr: text for sr, text in service_requests.items() if sr not in opposed_ids}
    parties = _Parties(await uow.visibility.members_of(full), await uow.visibility.senders_of(full), platforms)
    gathered = await _gather(uow, full, parsed, base_url, parties)
    # A peer gateway runs its own workflow: it gets the referral, not our Tasks.
    with_tasks = {focus[e.id] for e in entries if e.id in focus and e.payload.get("kind") != "peer-gateway"}
    tasks = await uow.outbox.task_texts(sr for sr in with_tasks | opposed_ids if sr in service_requests)
    received = await uow.outbox.referral_deliveries(task_id for sr in opposed_ids for task_id, _ in tasks.get(sr, []))
    messages: dict[str, bytes | NothingToSend] = {}
    for entry in entries:
        sr = focus.get(entry.id)
        if sr is None or sr not in service_requests:
            messages[entry.id] = NothingToSend("the ServiceRequest of this delivery no longer exists")
            continue
        status = parsed["ServiceRequest", sr].get("status")
        if entry.event in _CARRYING_THE_REFERRAL and status in ("revoked", "entered-in-error"):
            # An opposition (or a rejection) came first: the referral, and the patient's data, stay here.
            messages[entry.id] = NothingToSend(f"not sent: the referral was {status} before delivery")
            continue
        resources: list[tuple[Key, str]] | NothingToSend
        if sr in opposed_ids:
            resources = _after_opposition(entry, parsed["ServiceRequest", sr], tasks.get(sr, []), received)
            if isinstance(resources, NothingToSend):
                messages[entry.id] = resources
                continue
        else:
            resources = list(gathered[sr].items())
            if entry.payload.get("kind") != "peer-gateway":
                resources += [(("Task", task_id), text) for task_id, text in tasks.get(sr, [])]
        messages[entry.id] = _message(entry, base_url, sr, resources)
    return messages

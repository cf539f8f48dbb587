"""A posted Bundle → one ``Referral``: its entries, what each asks for, and its idempotency keys.

Both inbound shapes — a ``transaction`` Bundle (``POST /fhir``) and a ``message`` Bundle whose MessageHeader event
is ``referral-request`` (``POST /fhir/$process-message``) — end as the same model. Every problem found is
reported at once, each with the FHIRPath of the element as posted.

Reading does not validate: the Bundle read here has passed the structure checks (R4 and our profiles), which
``gateway.validation.validate.referral_findings`` runs first and merges with these findings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.errors import InvalidRequest, Issue, IssueCode
from gateway.fhir.models import check_resource_types
from gateway.fhir.outcome import CANONICAL_BASE
from gateway.fhir.types import Resource

MESSAGE_EVENT_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/dac-message-event"
HOP_COUNT_EXTENSION = f"{CANONICAL_BASE}/StructureDefinition/dac-hop-count"
REFERRAL_REQUEST = "referral-request"
#: Where a message names its sender, and where that sender asks to be called back.
SOURCE_ENDPOINT = "Bundle.entry[0].resource.source.endpoint"

#: What a referral bundle may carry (DESIGN §4, §7).
REFERRAL_RESOURCE_TYPES = frozenset(
    {
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "ServiceRequest",
        "Consent",
        "CareTeam",
        "RelatedPerson",
        "DocumentReference",
    }
)
#: Types a transaction entry may update in place (PUT Type/id, optionally with ifMatch).
UPDATABLE_TYPES = frozenset({"Patient", "Practitioner", "PractitionerRole", "Organization", "RelatedPerson"})
SERVICE_REQUEST_INPUT_STATUSES = ("active", "draft")

Method = Literal["POST", "PUT"]


@dataclass(slots=True)
class ReferralEntry:
    index: int
    resource: Resource
    full_url: str | None
    method: Method = "POST"
    url: str = ""
    if_none_exist: str | None = None
    if_match: str | None = None

    @property
    def resource_type(self) -> str:
        return str(self.resource["resourceType"])

    @property
    def expression(self) -> str:
        return f"Bundle.entry[{self.index}]"

    @property
    def update_target(self) -> str | None:
        """The id a PUT entry updates (from ``url`` = ``Type/id``)."""
        if self.method != "PUT":
            return None
        return self.url.split("?", 1)[0].rstrip("/").split("/")[-1]


@dataclass(slots=True)
class Referral:
    kind: Literal["transaction", "message"]
    entries: list[ReferralEntry]
    service_request: ReferralEntry
    patient: ReferralEntry
    idempotency_keys: list[str]
    message_header: Resource | None = None
    notes: list[str] = field(default_factory=list)
    #: ``Type/id`` → fullUrl, for entries with an absolute fullUrl: a relative reference in a bundle resolves
    #: against the fullUrl's base (R4 bundle.html#references), as in a message forwarded by a peer gateway.
    aliases: dict[str, str] = field(default_factory=dict)

    def of_type(self, resource_type: str) -> list[ReferralEntry]:
        return [entry for entry in self.entries if entry.resource_type == resource_type]

    @property
    def hop_count(self) -> int:
        """How many gateways forwarded this message before us (extension dac-hop-count; 0 if absent)."""
        for extension in (self.message_header or {}).get("extension") or []:
            if isinstance(extension, dict) and extension.get("url") == HOP_COUNT_EXTENSION:
                value = extension.get("valueUnsignedInt")
                # Structure checks made it an unsignedInt; a string "9" never reaches here as 0.
                return int(value) if isinstance(value, (int, str)) and str(value).isdigit() else 0
        return 0

    @property
    def source_endpoint(self) -> object:
        """``MessageHeader.source.endpoint`` as posted (anything), None in a transaction."""
        source = (self.message_header or {}).get("source")
        return source.get("endpoint") if isinstance(source, dict) else None


def _identifiers(resource: Resource) -> Iterator[tuple[str, str]]:
    identifiers = resource.get("identifier")
    if isinstance(identifiers, dict):  # Bundle.identifier is 0..1
        identifiers = [identifiers]
    for identifier in identifiers or []:
        if isinstance(identifier, dict):
            system, value = identifier.get("system"), identifier.get("value")
            if isinstance(system, str) and isinstance(value, str) and system and value:
                yield system, value


def iter_references(node: Any, path: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Every Reference object (a dict with a string ``reference``) inside a resource, with its FHIRPath."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node, path
        for key, value in node.items():
            if key in ("contained", "resourceType") or not isinstance(value, (dict, list)):
                continue
            yield from iter_references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from iter_references(item, f"{path}[{index}]")


def _rule(code: IssueCode, diagnostics: str, expression: str | None) -> Issue:
    return Issue(code, diagnostics, expression, "business-rule")


def _read_entries(bundle: Resource, kind: str, issues: list[Issue]) -> tuple[list[ReferralEntry], Resource | None]:
    entries: list[ReferralEntry] = []
    header: Resource | None = None
    raw_entries: list[Any] = bundle["entry"] if isinstance(bundle.get("entry"), list) else []
    for index, raw in enumerate(raw_entries):
        where = f"Bundle.entry[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("resource"), dict):
            issues.append(Issue(IssueCode.ELEMENT_REQUIRED, f"{where} has no resource", where, "required"))
            continue
        resource = raw["resource"]
        resource_type = resource.get("resourceType")
        full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
        if kind == "message" and index == 0 and resource_type == "MessageHeader":
            header = resource
            continue
        if resource_type not in REFERRAL_RESOURCE_TYPES:
            issues.append(
                _rule(
                    IssueCode.RESOURCE_TYPE_NOT_ALLOWED,
                    f"a referral does not carry {resource_type}; allowed: {', '.join(sorted(REFERRAL_RESOURCE_TYPES))}",
                    f"{where}.resource",
                )
            )
            continue
        entry = ReferralEntry(index, resource, full_url)
        request = raw.get("request")
        if kind == "transaction":
            if not isinstance(request, dict) or request.get("method") not in ("POST", "PUT") or not request.get("url"):
                issues.append(
                    Issue(
                        IssueCode.ENTRY_REQUEST_INVALID,
                        f"{where}.request needs method POST (create) or PUT (update) and a url",
                        f"{where}.request",
                        "invalid",
                    )
                )
                entries.append(entry)  # still counted: the one ServiceRequest is this one, with a bad request
                continue
            entry.method = request["method"]
            entry.url = str(request["url"])
            entry.if_none_exist = request.get("ifNoneExist")
            entry.if_match = request.get("ifMatch")
            _check_request(entry, issues)
        entries.append(entry)
    return entries, header


def _check_request(entry: ReferralEntry, issues: list[Issue]) -> None:
    where = f"{entry.expression}.request"
    path = entry.url.split("?", 1)[0].strip("/").split("/")
    if path[0] != entry.resource_type:
        issues.append(
            Issue(
                IssueCode.ENTRY_REQUEST_INVALID,
                f"request.url {entry.url!r} does not name the entry's resource type {entry.resource_type}",
                f"{where}.url",
            )
        )
        return
    if entry.method == "POST":
        if entry.if_none_exist and entry.resource_type == "ServiceRequest":
            issues.append(
                Issue(
                    IssueCode.ENTRY_REQUEST_INVALID,
                    "a referral's ServiceRequest is always new: resubmissions are recognised by its identifier "
                    "(idempotent intake), so ifNoneExist is not taken on it",
                    f"{where}.ifNoneExist",
                )
            )
        if len(path) != 1:
            issues.append(
                Issue(IssueCode.ENTRY_REQUEST_INVALID, "a POST entry's url is the resource type", f"{where}.url")
            )
        if entry.if_match:
            issues.append(Issue(IssueCode.ENTRY_REQUEST_INVALID, "ifMatch goes with PUT, not POST", f"{where}.ifMatch"))
    else:
        if entry.resource_type not in UPDATABLE_TYPES:
            issues.append(
                Issue(
                    IssueCode.ENTRY_REQUEST_INVALID,
                    f"{entry.resource_type} is created by a referral, never updated in one (use POST)",
                    f"{where}.method",
                )
            )
        elif len(path) != 2 or "?" in entry.url:
            issues.append(
                Issue(
                    IssueCode.ENTRY_REQUEST_INVALID,
                    "a PUT entry's url is Type/id (conditional update is not supported)",
                    f"{where}.url",
                )
            )
        elif entry.resource.get("id") not in (None, path[1]):
            issues.append(
                Issue(
                    IssueCode.ENTRY_REQUEST_INVALID,
                    f"resource.id {entry.resource.get('id')!r} differs from the id in request.url",
                    f"{entry.expression}.resource.id",
                )
            )
        if entry.if_none_exist:
            issues.append(Issue(IssueCode.ENTRY_REQUEST_INVALID, "ifNoneExist goes with POST", f"{where}.ifNoneExist"))


def _exactly_one(
    entries: list[ReferralEntry],
    resource_type: str,
    missing: IssueCode,
    multiple: IssueCode,
    issues: list[Issue],
) -> ReferralEntry | None:
    found = [entry for entry in entries if entry.resource_type == resource_type]
    if not found:
        issues.append(_rule(missing, f"the referral has no {resource_type}", "Bundle.entry"))
        return None
    if len(found) > 1:
        for extra in found[1:]:
            issues.append(
                _rule(
                    multiple,
                    f"the referral carries {len(found)} {resource_type}s; one is expected",
                    extra.expression,
                )
            )
        return None
    return found[0]


def _check_message_header(header: Resource | None, issues: list[Issue]) -> None:
    if header is None:
        issues.append(
            _rule(
                IssueCode.MESSAGE_HEADER_MISSING,
                "a message Bundle starts with a MessageHeader",
                "Bundle.entry[0]",
            )
        )
        return
    event: dict[str, Any] = header["eventCoding"] if isinstance(header.get("eventCoding"), dict) else {}
    if event.get("system") != MESSAGE_EVENT_SYSTEM or event.get("code") != REFERRAL_REQUEST:
        issues.append(
            _rule(
                IssueCode.MESSAGE_EVENT_UNSUPPORTED,
                f"this endpoint processes the event {MESSAGE_EVENT_SYSTEM}#{REFERRAL_REQUEST}",
                "Bundle.entry[0].resource.eventCoding",
            )
        )


_ABSOLUTE_FULL_URL = re.compile(r"^https?://.+/([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")


def relative_aliases(entries: list[ReferralEntry]) -> dict[str, str]:
    aliases = {}
    for entry in entries:
        match = _ABSOLUTE_FULL_URL.match(entry.full_url or "")
        if match and match.group(1) == entry.resource_type:
            aliases[f"{match.group(1)}/{match.group(2)}"] = entry.full_url or ""
    return aliases


def _check_service_request(
    entry: ReferralEntry, patient: ReferralEntry | None, aliases: dict[str, str], issues: list[Issue]
) -> None:
    resource = entry.resource
    where = f"{entry.expression}.resource"
    if not list(_identifiers(resource)):
        issues.append(
            _rule(
                IssueCode.SERVICEREQUEST_IDENTIFIER_MISSING,
                "ServiceRequest.identifier (system and value: the sender's own id for this request) is required; "
                "it is what makes a resubmission idempotent",
                f"{where}.identifier",
            )
        )
    if resource.get("status") not in SERVICE_REQUEST_INPUT_STATUSES:
        issues.append(
            _rule(
                IssueCode.SERVICEREQUEST_STATUS_INVALID,
                f"ServiceRequest.status is {resource.get('status')!r}; a referral is posted active or draft",
                f"{where}.status",
            )
        )
    if patient is not None:
        subject: dict[str, Any] = resource["subject"] if isinstance(resource.get("subject"), dict) else {}
        targets: set[str] = {patient.full_url} if patient.full_url else set()
        if patient.update_target:
            targets.add(f"Patient/{patient.update_target}")
        reference = subject.get("reference")
        if reference not in targets and aliases.get(str(reference)) not in targets:
            issues.append(
                _rule(
                    IssueCode.SERVICEREQUEST_SUBJECT_MISMATCH,
                    "ServiceRequest.subject must reference the bundle's Patient entry (its fullUrl)",
                    f"{where}.subject",
                )
            )


#: Resources of a referral that are about its patient, and the element that says so.
_ABOUT_THE_PATIENT = {
    "Consent": "patient",
    "CareTeam": "subject",
    "RelatedPerson": "patient",
    "DocumentReference": "subject",
}


def _check_about_the_patient(
    entries: list[ReferralEntry], patient: ReferralEntry, aliases: dict[str, str], issues: list[Issue]
) -> None:
    """A referral is about one patient: its Consent, CareTeam, caregivers and documents are theirs."""
    targets = {patient.full_url} if patient.full_url else set()
    if patient.update_target:
        targets.add(f"Patient/{patient.update_target}")
    for entry in entries:
        element = _ABOUT_THE_PATIENT.get(entry.resource_type)
        if element is None:
            continue
        reference = (entry.resource.get(element) or {}).get("reference")
        if reference is None:
            continue  # a missing element is the structure's or the profile's to report
        if reference not in targets and aliases.get(str(reference)) not in targets:
            issues.append(
                _rule(
                    IssueCode.REFERRAL_PATIENT_MISMATCH,
                    f"{entry.resource_type}.{element} must reference the referral's Patient entry: a referral "
                    "speaks of one patient",
                    f"{entry.expression}.resource.{element}.reference",
                )
            )


def idempotency_keys(bundle: Resource, service_request: Resource, header: Resource | None) -> list[str]:
    keys = [f"servicerequest:{system}|{value}" for system, value in _identifiers(service_request)]
    keys += [f"bundle:{system}|{value}" for system, value in _identifiers(bundle)]
    if header is not None and isinstance(header.get("id"), str):
        keys.append(f"message:{header['id']}")
    return keys


def foreign_identifier_issues(bundle: Resource, referral: Referral, foreign: frozenset[str]) -> list[Issue]:
    """The referral's keys (ServiceRequest identifiers, Bundle.identifier) in an identifier system another client
    registered as its own (``foreign``): one issue each, at the system."""
    service_request = referral.service_request
    places: list[tuple[Any, str]] = [(bundle.get("identifier"), "Bundle.identifier")]
    identifiers = service_request.resource.get("identifier")
    for index, identifier in enumerate(identifiers if isinstance(identifiers, list) else []):
        places.append((identifier, f"{service_request.expression}.resource.identifier[{index}]"))
    return [
        _rule(
            IssueCode.IDENTIFIER_SYSTEM_NOT_OWNED,
            f"{identifier['system']} is another client's identifier system: identify your referrals in your own",
            f"{where}.system",
        )
        for identifier, where in places
        if isinstance(identifier, dict) and identifier.get("system") in foreign
    ]


def check_bundle(bundle: Resource, expected: Literal["transaction", "message"]) -> None:
    """A 400 for a Bundle of another type than ``expected``, or a resourceType that is no R4 type."""
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != expected:
        raise InvalidRequest.single(
            IssueCode.BUNDLE_TYPE_UNSUPPORTED,
            f"this endpoint takes a Bundle of type {expected}, not "
            f"{bundle.get('resourceType')} {bundle.get('type') or ''}".rstrip(),
            "Bundle.type",
        )
    check_resource_types(bundle)  # as for any body


def read_bundle(bundle: Resource, expected: Literal["transaction", "message"]) -> tuple[Referral | None, list[Issue]]:
    """The referral (None when any error was found) and the referral's own findings (DESIGN §7), on a Bundle whose
    structure was checked (``check_bundle``, then R4 and our profiles)."""
    check_bundle(bundle, expected)
    issues: list[Issue] = []
    entries, header = _read_entries(bundle, expected, issues)
    full_urls: dict[str, int] = {}
    for entry in entries:
        if entry.full_url is None:
            continue
        if entry.full_url in full_urls:
            issues.append(
                Issue(
                    IssueCode.ENTRY_FULLURL_DUPLICATE,
                    f"fullUrl {entry.full_url!r} is also entry[{full_urls[entry.full_url]}]'s",
                    f"{entry.expression}.fullUrl",
                )
            )
        full_urls[entry.full_url] = entry.index
    if expected == "message":
        _check_message_header(header, issues)
    patient = _exactly_one(
        entries, "Patient", IssueCode.REFERRAL_PATIENT_MISSING, IssueCode.REFERRAL_PATIENT_MULTIPLE, issues
    )
    service_request = _exactly_one(
        entries,
        "ServiceRequest",
        IssueCode.REFERRAL_SERVICEREQUEST_MISSING,
        IssueCode.REFERRAL_SERVICEREQUEST_MULTIPLE,
        issues,
    )
    aliases = relative_aliases(entries)
    if service_request is not None:
        _check_service_request(service_request, patient, aliases, issues)
    if patient is not None:
        _check_about_the_patient(entries, patient, aliases, issues)
    known = set(full_urls)
    for entry in entries:
        for reference, path in iter_references(entry.resource, f"{entry.expression}.resource"):
            target = reference["reference"]
            if target.startswith(("urn:uuid:", "urn:oid:")) and target not in known:
                issues.append(
                    _rule(
                        IssueCode.REFERENCE_UNRESOLVED,
                        f"{target} is no entry's fullUrl in this bundle",
                        f"{path}.reference",
                    )
                )
    if any(issue.severity in ("error", "fatal") for issue in issues):
        return None, issues
    assert patient is not None and service_request is not None
    referral = Referral(
        kind=expected,
        entries=entries,
        service_request=service_request,
        patient=patient,
        idempotency_keys=idempotency_keys(bundle, service_request.resource, header),
        message_header=header,
        aliases=aliases,
    )
    return referral, issues

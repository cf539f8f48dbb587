"""HL7 v2 and CDA referrals in: the document mapped to the referral Bundle a FHIR sender would post, which then goes
through the same intake as ``POST /fhir`` (``gateway.intake.handlers.process_transaction``: validation, workflow,
idempotency, routing), and the answer in the document's own terms — an ACK, or an OperationOutcome whose issues
also name the CDA's XPath.

HTTP (``gateway.api.routes.inbound``) and MLLP (``gateway.inbound.mllp``) both call ``take_in_hl7v2``; the CDA
route calls ``take_in_cda``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import structlog

from gateway.auth.clients import AuthConfigError, Role
from gateway.auth.scopes import Permission
from gateway.auth.token_endpoint import Authority
from gateway.config import Settings
from gateway.conformance.files import mappings_dir
from gateway.errors import BusinessRuleViolation, GatewayError, InvalidRequest, Issue, IssueCode, Overloaded
from gateway.fhir.types import Resource
from gateway.inbound.cda import CdaSource, read_cda
from gateway.inbound.er7 import APPLICATION_ERROR, CHARSETS, AckError, V2Message, ack, erl, read_message
from gateway.inbound.hl7v2 import V2Source
from gateway.inbound.mapping import Builder, Mapped, Mapping, MappingError, load_mapping
from gateway.intake.handlers import process_transaction
from gateway.routing.config import RoutingTable
from gateway.store.database import Database
from gateway.store.visibility import EVERYTHING, Viewer

log = structlog.get_logger("gateway.inbound")

#: The CDA mapping applied to a document posted alone (POST /cda).
LETTRE_DE_LIAISON = "lettre-de-liaison"
#: Between a CDA location inside a v2 field and its XPath, in a mapped element's origin.
_INSIDE = "#"


@dataclass(frozen=True, slots=True)
class IntakeContext:
    """Who sends, and where their referral goes: what the FHIR transaction route takes from its request."""

    database: Database
    routing: RoutingTable
    base_url: str
    sender: str | None = None
    viewer: Viewer = EVERYTHING
    foreign_systems: frozenset[str] = frozenset()
    parse_time_budget: float = 10.0
    processing_id: str = "P"  # MSH-11 taken (``GATEWAY_HL7V2_PROCESSING_ID``); another is an AR


@functools.cache
def v2_mappings() -> dict[str, Mapping]:
    """``mappings/hl7v2/*.toml`` by the message types each takes (``[message] types``)."""
    by_type = {}
    for path in sorted((mappings_dir() / "hl7v2").glob("*.toml")):
        mapping = load_mapping(path)
        for message_type in (mapping.header.get("message") or {}).get("types") or []:
            by_type[str(message_type)] = mapping
    return by_type


@functools.cache
def cda_mappings() -> dict[str, Mapping]:
    return {path.stem: load_mapping(path) for path in sorted((mappings_dir() / "cda").glob("*.toml"))}


def warm_up() -> None:
    """The mapping files read at start-up: a broken or missing one stops it (``MappingError``), rather than the
    first message (an installation without its package data would otherwise refuse every v2 message as AR)."""
    if "REF^I12" not in v2_mappings() or LETTRE_DE_LIAISON not in cda_mappings():
        raise MappingError(f"the HL7 v2 and CDA mapping rules are missing from {mappings_dir()}")


# ---------------------------------------------------------------------------------------------------------------
# HL7 v2


Acknowledgment = Literal["AA", "AE", "AR"]


@dataclass(frozen=True, slots=True)
class V2Answer:
    ack: bytes
    code: Acknowledgment
    status: int  # over HTTP: 200 for AA and AE, 400 for AR (a store that failed: its 503)
    charset: str  # the codec the ACK is written in

    @property
    def content_type(self) -> str:
        names = {"utf-8": "utf-8", "latin-1": "iso-8859-1", "iso8859-15": "iso-8859-15", "ascii": "us-ascii"}
        return f"x-application/hl7-v2+er7; charset={names.get(self.charset, 'us-ascii')}"


def _condition(issue: Issue) -> str:
    """HL7 table 0357 for a refusal: what MSH field it names says which."""
    if issue.code is IssueCode.HL7V2_MESSAGE_UNSUPPORTED:
        return {"MSH^1^9^1^1": "200", "MSH^1^9^1^2": "201", "MSH^1^11": "202", "MSH^1^12": "203"}.get(
            issue.location or "", "200"
        )
    if issue.code in (IssueCode.HL7V2_UNREADABLE, IssueCode.HL7V2_ENCODING_INVALID):
        return "102"
    return APPLICATION_ERROR


def _ack_errors(issues: tuple[Issue, ...] | list[Issue], mapped: Mapped | None = None) -> list[AckError]:
    errors = []
    for issue in issues:
        where = (mapped.locate(issue.expression) if mapped is not None else None) or issue.location or ""
        location, _, xpath = where.partition(_INSIDE)
        message = issue.diagnostics + (f" (CDA {xpath})" if xpath else "")
        errors.append(AckError(location, _condition(issue), str(issue.code), message))
    return errors


def _answer(
    message: V2Message | None,
    code: Acknowledgment,
    errors: list[AckError],
    status: int,
    text: str = "",
    at: datetime | None = None,
) -> V2Answer:
    charset = message.charset if message is not None else ""
    return V2Answer(ack(message, code, errors, text, at), code, status, CHARSETS.get(charset.upper(), "ascii"))


def _rejected(message: V2Message | None, exc: GatewayError) -> V2Answer:
    return _answer(message, "AR", _ack_errors(exc.issues), 400)


def _unsupported(message: V2Message, processing_id: str) -> InvalidRequest | None:
    """AR: a message type, event, version or processing id (MSH-11, HL7 table 0103) that is not ours — a training
    (T) or debugging (D) message taken by a production gateway would reach a platform as a real referral."""
    types = v2_mappings()
    problems = []
    if message.message_type not in types:
        known = sorted({t.split("^")[0] for t in types})
        position = "MSH^1^9^1^1" if message.value("MSH", 9, 1, 1) not in known else "MSH^1^9^1^2"
        problems.append(
            (f"message type {message.message_type[:20]!r} is not taken: {', '.join(sorted(types))}", position)
        )
    version = message.value("MSH", 12)
    if not version.startswith("2.5"):
        problems.append((f"version {version[:10]!r} is not taken: HL7 v2.5", "MSH^1^12"))
    processing = message.value("MSH", 11)
    if processing != processing_id:
        problems.append(
            (f"processing id {processing[:10]!r} is not taken: this gateway takes {processing_id} only", "MSH^1^11")
        )
    if not problems:
        return None
    return InvalidRequest(
        *(
            Issue(IssueCode.HL7V2_MESSAGE_UNSUPPORTED, text, None, "not-supported", location=where)
            for text, where in problems
        )
    )


def _carried_document(message: V2Message, mapping: Mapping) -> tuple[bytes, str] | None:
    """The CDA a message carries (``[document]`` of its mapping: which OBX, which component), and its ERL."""
    spec = mapping.header.get("document")
    if not spec:
        return None
    source = V2Source(message)
    when = {
        str(k): [str(v)] if not isinstance(v, list) else [str(x) for x in v]
        for k, v in (spec.get("when") or {}).items()
    }
    for match in source.each(str(spec["each"])):
        if all(match.value(selector) in expected for selector, expected in when.items()):
            selector = str(spec["value"])
            content = match.value(selector) or ""
            where = match.location(selector)
            encoding = (match.value(str(spec.get("encoding", ""))) or "") if spec.get("encoding") else ""
            if encoding.lower() == "base64":
                try:  # line breaks (escaped in the field: \X0D\\X0A\, \.br\) wrap Base64, and are no data
                    return base64.b64decode("".join(content.split()), validate=True), where
                except (binascii.Error, ValueError) as exc:
                    raise InvalidRequest(
                        Issue(IssueCode.CDA_INVALID, "the document is not valid Base64", None, location=where)
                    ) from exc
            return content.encode("utf-8"), where
    raise InvalidRequest(
        Issue(
            IssueCode.ELEMENT_REQUIRED,
            f"a {message.message_type} carries its CDA document in an OBX segment ({spec.get('each')} with "
            f"{', '.join(f'{k}={v}' for k, v in when.items())})",
            None,
            "required",
            location=erl("OBX", 1, 5),
        )
    )


async def _read_cda(document: bytes, budget: float) -> CdaSource:
    try:
        return await asyncio.wait_for(asyncio.to_thread(read_cda, document), budget)
    except TimeoutError as exc:
        raise Overloaded.single(
            IssueCode.BODY_TIME_BUDGET_EXCEEDED, f"the CDA was not read within {budget:g} s; nothing was stored"
        ) from exc


def _service_request_answer(response: Resource) -> tuple[str, datetime | None]:
    for entry in response.get("entry") or []:
        full_url = str(entry.get("fullUrl") or "")
        if "/ServiceRequest/" in full_url:
            reference = "ServiceRequest/" + full_url.rsplit("/", 1)[-1]
            modified = (entry.get("response") or {}).get("lastModified")
            try:
                return reference, datetime.fromisoformat(str(modified).replace("Z", "+00:00")) if modified else None
            except ValueError:
                return reference, None
    return "", None


async def take_in_hl7v2(raw: bytes, context: IntakeContext) -> V2Answer:
    """One HL7 v2 message in, its ACK out; never raises. AA: stored (or a replay: its first ACK); AE: refused, one
    ERR per issue, nothing stored; AR: not read (unreadable, or not a type, version or processing id of ours), or
    not taken for reasons unrelated to its content (the store unreachable, the gateway overloaded or failing: HL7
    v2.5 §2.9.2.2 c), which senders resend later) — nothing stored either."""
    message: V2Message | None = None
    try:
        message = read_message(raw)
        unsupported = _unsupported(message, context.processing_id)
        if unsupported is not None:
            return _rejected(message, unsupported)
    except GatewayError as exc:
        if message is None:
            with contextlib.suppress(Exception):  # what can be read of its MSH, for the ACK to echo (MSH-10)
                message = read_message(raw, lenient=True)
        return _rejected(message, exc)
    except Exception:  # a reader's bug must not drop the sender: an AR, logged
        log.exception("hl7v2_unreadable")
        return _answer(message, "AR", [AckError("MSH^1", "207", str(IssueCode.INTERNAL_ERROR), "unreadable")], 400)
    mapped: Mapped | None = None
    try:
        mapping = v2_mappings()[message.message_type]
        builder = Builder(message.digest)
        carried = _carried_document(message, mapping)
        document = b""
        if carried is not None:
            document, where = carried
            try:
                source = await _read_cda(document, context.parse_time_budget)
            except GatewayError as exc:
                raise type(exc)(
                    *(Issue(i.code, i.diagnostics, None, i.issue_type, i.severity, location=where) for i in exc.issues)
                ) from exc
            builder.apply(
                cda_mappings()[str(mapping.header["document"].get("mapping", LETTRE_DE_LIAISON))],
                source,
                where + _INSIDE,
            )
        builder.apply(mapping, V2Source(message, document))
        mapped = builder.finish()
        if mapped.issues:
            return _answer(message, "AE", _ack_errors(mapped.issues), 200)
        response = await process_transaction(
            context.database,
            context.routing,
            mapped.bundle,
            context.base_url,
            context.sender,
            context.viewer,
            context.foreign_systems,
        )
    except GatewayError as exc:
        if exc.status_code >= 500:  # the store or the gateway failed, not the message: AR, as v2.5 §2.9.2.2 c)
            return _answer(message, "AR", _ack_errors(exc.issues, mapped), exc.status_code)
        return _answer(message, "AE", _ack_errors(exc.issues, mapped), 200)
    except Exception:
        log.exception("hl7v2_failed")
        return _answer(
            message, "AR", [AckError("", APPLICATION_ERROR, str(IssueCode.INTERNAL_ERROR), "nothing was stored")], 200
        )
    reference, stored_at = _service_request_answer(response)
    return _answer(message, "AA", [], 200, text=reference, at=stored_at)


# ---------------------------------------------------------------------------------------------------------------
# CDA


async def take_in_cda(body: bytes, context: IntakeContext) -> Resource:
    """A lettre de liaison in; the transaction-response out, as for ``POST /fhir``. A refusal raises the
    ``GatewayError`` the intake raised, each issue with its FHIRPath in the mapped Bundle (``expression``) and the
    CDA's XPath (``location``)."""
    source = await _read_cda(body, context.parse_time_budget)
    builder = Builder(hashlib.sha256(body).hexdigest())
    builder.apply(cda_mappings()[LETTRE_DE_LIAISON], source)
    mapped = builder.finish()
    if mapped.issues:
        raise BusinessRuleViolation(*mapped.issues)
    try:
        return await process_transaction(
            context.database,
            context.routing,
            mapped.bundle,
            context.base_url,
            context.sender,
            context.viewer,
            context.foreign_systems,
        )
    except GatewayError as exc:
        located = [
            Issue(
                i.code,
                i.diagnostics,
                i.expression,
                i.issue_type,
                i.severity,
                location=mapped.locate(i.expression) or i.location,
            )
            for i in exc.issues
        ]
        raise type(exc)(*located) from exc  # the intake raises no error class with other arguments


# ---------------------------------------------------------------------------------------------------------------
# MLLP: who sends


def unregistered_sender_ack(raw: bytes) -> bytes:
    """The AR for a message MLLP cannot take in as anyone (its sender client gone from the clients file): nothing
    of it is read but its MSH, which the ACK echoes (MSH-10 in MSA-2) so that the sender can tell which it was."""
    message = None
    with contextlib.suppress(Exception):
        message = read_message(raw, lenient=True)
    return ack(
        message,
        "AR",
        [
            AckError(
                "MSH^1", APPLICATION_ERROR, str(IssueCode.ACCESS_TOKEN_INVALID), "the MLLP sender is not registered"
            )
        ],
    )


def mllp_context(
    settings: Settings, database: Database, routing: RoutingTable, authority: Authority | None
) -> IntakeContext:
    """Whom MLLP messages are taken in as. MLLP carries no token: with authentication on, the listener acts as the
    registered ``sender`` client ``GATEWAY_MLLP_CLIENT_ID`` names, which must hold ``ServiceRequest`` create (its
    scopes); without one it does not start (``AuthConfigError``). With authentication off, as anyone (development)."""
    base = settings.message_base_url or f"http://{settings.mllp_host}/fhir"
    if authority is None:
        return IntakeContext(
            database,
            routing,
            base,
            parse_time_budget=settings.parse_time_budget,
            processing_id=settings.hl7v2_processing_id,
        )
    client_id = settings.mllp_client_id
    if not client_id:
        raise AuthConfigError(
            "MLLP carries no access token: with authentication on, GATEWAY_MLLP_CLIENT_ID must name the registered "
            "sender client MLLP messages are taken in as"
        )
    registered = authority.registry.get(client_id)
    if registered is None or registered.role is not Role.SENDER:
        raise AuthConfigError(f"GATEWAY_MLLP_CLIENT_ID {client_id!r} is not a registered client of role sender")
    if not registered.scopes.allows("ServiceRequest", Permission.CREATE):
        raise AuthConfigError(f"GATEWAY_MLLP_CLIENT_ID {client_id!r} has no scope to create a ServiceRequest")
    return IntakeContext(
        database,
        routing,
        base,
        client_id,
        Viewer(sender=client_id),
        authority.registry.identifier_systems_of_others(client_id),
        settings.parse_time_budget,
        settings.hl7v2_processing_id,
    )

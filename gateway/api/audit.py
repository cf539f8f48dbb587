"""ASGI middleware that audits every FHIR interaction (``gateway.audit``).

It opens the request's ``AuditContext``; the access-token dependency names the client and the interaction; a
change commits its AuditEvent in its own transaction. What is left — reads, searches, and every refused or
failed request (401, 403, 404, 422…, whose transaction, if any, was rolled back) — is queued, once the status is
known, to the buffer that writes them in bulk.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.audit.buffer import AuditBuffer
from gateway.audit.context import AuditContext, close_audit, open_audit
from gateway.audit.events import AuditedInteraction, audit_event, outcome_of
from gateway.fhir.primitives import utc_now

#: (method, route) → FHIR interaction; routes not listed (metadata, health, token…) are not audited.
INTERACTIONS = {
    ("GET", "/fhir/{resource_type}/{resource_id}"): "read",
    ("GET", "/fhir/{resource_type}/{resource_id}/_history/{version_id}"): "vread",
    ("GET", "/fhir/{resource_type}/{resource_id}/_history"): "history-instance",
    ("GET", "/fhir/{resource_type}/_history"): "history-type",
    ("GET", "/fhir/_history"): "history-system",
    ("GET", "/fhir/{resource_type}"): "search-type",
    ("POST", "/fhir/{resource_type}/_search"): "search-type",
    ("POST", "/fhir"): "transaction",
    ("POST", "/fhir/Consent"): "create",
    ("PUT", "/fhir/Consent/{consent_id}"): "update",
    ("PUT", "/fhir/Task/{task_id}"): "update",
    ("PATCH", "/fhir/Task/{task_id}"): "patch",
    ("POST", "/fhir/$process-message"): "operation",
    ("POST", "/fhir/$validate"): "operation",
    ("POST", "/fhir/{resource_type}/$validate"): "operation",
    # Referrals in HL7 v2 and CDA (DESIGN §13): the same intake as a transaction. Over MLLP there is no request
    # to audit (gateway.inbound.mllp): only what its intake commits is.
    ("POST", "/hl7v2"): "transaction",
    ("POST", "/cda"): "transaction",
}
#: The paths audited: the FHIR API, and the non-FHIR referral endpoints.
AUDITED_PATHS = ("/fhir", "/hl7v2", "/cda")


#: The routes of one type name its id so: path parameter → resource type.
_NAMED_IDS = {"task_id": "Task", "consent_id": "Consent"}


def interaction_of(method: str, route: str | None) -> str | None:
    return INTERACTIONS.get((method, route or ""))


def _target(subtype: str, params: dict[str, str]) -> tuple[str, ...]:
    """The resource named by the URL, for reads and for changes that did not happen."""
    resource_type = params.get("resource_type") or next(
        (named for key, named in _NAMED_IDS.items() if key in params), None
    )
    resource_id = params.get("resource_id") or next((params[key] for key in _NAMED_IDS if key in params), None)
    if resource_type is None or resource_id is None:
        return ()
    if subtype == "vread":
        return (f"{resource_type}/{resource_id}/_history/{params.get('version_id')}",)
    return (f"{resource_type}/{resource_id}",)


class AuditMiddleware:
    def __init__(self, app: ASGIApp, buffer: AuditBuffer) -> None:
        self.app = app
        self.buffer = buffer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(AUDITED_PATHS):
            await self.app(scope, receive, send)
            return
        context = AuditContext(subtype="")
        token = open_audit(context)
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            close_audit(token)
            self._record(scope, context, status)

    def _record(self, scope: Scope, context: AuditContext, status: int) -> None:
        route = getattr(scope.get("route"), "path", None)
        subtype = context.subtype or interaction_of(scope["method"], route)
        if subtype is None or (context.recorded_in_transaction and status < 400):
            return
        params = {key: str(value) for key, value in (scope.get("path_params") or {}).items()}
        searched = subtype == "search-type"
        interaction = AuditedInteraction(
            subtype,
            context.client_id,
            utc_now(),
            outcome_of(status),
            () if searched else _target(subtype, params),
            context.query if searched else None,
            params.get("resource_type") if searched else None,
            f"HTTP {status}" if status >= 400 else None,
        )
        self.buffer.add(audit_event(interaction))

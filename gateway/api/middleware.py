"""ASGI middleware: request ids and access logs, and the body size limit.

Access logs name the route template (``/fhir/{resource_type}/{resource_id}``), never the query string nor the
body: search parameters and bundles carry patient identifiers and names.
"""

from __future__ import annotations

import re
import time
import uuid

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics
from gateway.errors import Issue, IssueCode, PayloadTooLarge
from gateway.fhir.outcome import operation_outcome

log = structlog.get_logger("gateway.access")
INTERNAL_ERROR = Issue(IssueCode.INTERNAL_ERROR, "unexpected error; nothing was stored", None, "exception", "fatal")
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        started = time.perf_counter()
        status = 500  # until a response starts
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Answered here, so the request id goes with it and no server traceback (with its SQL parameters,
            # maybe a patient's name) reaches the logs; the type is enough to find it in the code.
            log.error("unhandled_error", error_type=type(exc).__name__, route=getattr(scope.get("route"), "path", None))
            if status == 500:
                body = orjson.dumps(operation_outcome([INTERNAL_ERROR]))
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/fhir+json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            route = getattr(scope.get("route"), "path", None) or "(unmatched)"
            elapsed = time.perf_counter() - started
            metrics.http_requests.labels(scope["method"], route, str(status)).inc()
            metrics.http_latency.labels(scope["method"], route).observe(elapsed)
            log.info(
                "request", method=scope["method"], route=route, status=status, duration_ms=round(elapsed * 1000, 2)
            )
            structlog.contextvars.unbind_contextvars("request_id")


class BodyLimitMiddleware:
    """413 as soon as a body is known to exceed the limit: from Content-Length, or while it streams in."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge.single(
            IssueCode.BODY_TOO_LARGE, f"the request body exceeds the limit of {self.max_body_bytes} bytes"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        limit = self.max_body_bytes
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise self._too_large()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise self._too_large()
            return message

        await self.app(scope, limited_receive, send)

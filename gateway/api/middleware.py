"""ASGI middleware: request ids and access logs, and the body size and time limits.

Access logs name the route template (``/fhir/{resource_type}/{resource_id}``), never the query string nor the
body: search parameters and bundles carry patient identifiers and names.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics
from gateway.errors import Issue, IssueCode, PayloadTooLarge, RequestTimeout
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
    """413 as soon as a body is known to exceed the limit: from Content-Length, or while it streams in; 408 when
    it has not all arrived ``body_timeout`` seconds after the application first asked for it.

    uvicorn waits for a body as long as the client keeps the connection open, so a client trickling one byte at
    a time would hold its request (and whatever the route holds) forever; the deadline is for the whole body,
    not for each chunk, since each chunk of a trickle arrives quickly."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, body_timeout: float = 30.0) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge.single(
            IssueCode.BODY_TOO_LARGE, f"the request body exceeds the limit of {self.max_body_bytes} bytes"
        )

    def _too_slow(self) -> RequestTimeout:
        return RequestTimeout.single(
            IssueCode.BODY_TIMEOUT, f"the request body did not arrive within {self.body_timeout:g} seconds"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        limit = self.max_body_bytes
        received = 0
        deadline: float | None = None
        complete = False

        async def limited_receive() -> Message:
            nonlocal received, deadline, complete
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise self._too_large()
            if complete:  # after the body, receive() waits for the disconnect: no deadline on that
                return await receive()
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + self.body_timeout
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise self._too_slow() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise self._too_large()
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)

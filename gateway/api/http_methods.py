"""HTTP's generic methods on every route: ``HEAD`` (a GET without its body), ``OPTIONS`` (which methods a path
takes, in ``Allow``), and the same answer with or without a trailing slash (``POST /fhir/`` is ``POST /fhir``:
clients join a base and a path both ways, and a 307 makes some of them post twice or not at all).

Outermost but for CORS, so that the request id, the access log, the limits and the audit see the request as
routed (a HEAD as the GET it is)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The order ``Allow`` lists methods in.
_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(routes: list[BaseRoute], path: str) -> list[str]:
    """Every method some route takes at ``path`` (HEAD with GET, OPTIONS always); empty when no route has it.
    Asked of the routes themselves (``matches``), as routing does: included routers hold theirs inside."""
    methods: set[str] = set()
    for method in _ORDER:
        scope = {"type": "http", "path": path, "method": method, "root_path": ""}
        if any(route.matches(scope)[0] is Match.FULL for route in routes):
            methods.add(method)
    if not methods:
        return []
    methods |= {"HEAD", "OPTIONS"} if "GET" in methods else {"OPTIONS"}
    return [method for method in _ORDER if method in methods]


class HttpMethodsMiddleware:
    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            stripped = path.rstrip("/") or "/"
            raw: bytes = scope.get("raw_path") or path.encode()
            scope = dict(scope, path=stripped, raw_path=raw.rstrip(b"/") or b"/")
        method = scope["method"]
        if method == "OPTIONS":
            allowed = allowed_methods(self.routes, scope["path"])
            if allowed:
                headers = [(b"allow", ", ".join(allowed).encode()), (b"content-length", b"0")]
                await send({"type": "http.response.start", "status": 204, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                return
        if method != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            # The GET's headers (Content-Length included: RFC 9110 §9.3.2), none of its body.
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        await self.app(dict(scope, method="GET"), receive, without_body)

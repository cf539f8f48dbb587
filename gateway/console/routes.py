"""The console's HTTP side: its pages (Jinja2, server-rendered), its static files, and the few JSON answers of
its thin layer (outbox, a referral's deliveries, replay, Subscriptions' owners, where an issue points in a document).

The pages hold no patient data: what they show comes from the gateway's own FHIR API, called by the page's
script with the operator's token (kept in the tab's sessionStorage, sent as ``Authorization``, never in a URL),
and from the ``/console/data/…`` answers below, which need the same token — an operator's — when
authentication is on. Every answer of the console forbids framing and any script, style or connection that is
not the gateway's own (Content-Security-Policy).
"""

from __future__ import annotations

import asyncio
import json
import re
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from gateway.auth.clients import Role
from gateway.auth.token_endpoint import Authority
from gateway.auth.tokens import bearer_token
from gateway.conformance.files import examples_dir
from gateway.console import data
from gateway.console.locate import Document
from gateway.errors import Forbidden, IssueCode, ResourceNotFound
from gateway.fhir.primitives import utc_now
from gateway.kit import Example, discover
from gateway.store.database import Database

HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PAGES = (("examples", "Examples"), ("validate", "Validate"), ("referral", "Referral"), ("outbox", "Outbox"),
         ("subscriptions", "Subscriptions"), ("api", "API"))  # fmt: skip
#: A README table row: the file in backquotes, then what it shows (a cell may hold `…|…` in backquotes).
_README_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*((?:`[^`]*`|[^|`])+?)\s*\|")

router = APIRouter(prefix="/console", include_in_schema=False)


async def _operator(request: Request) -> None:
    """With authentication on, the console's data is an operator's: 401 without a token, 403 for another role."""
    authority: Authority | None = request.app.state.authority
    if authority is None:
        return
    client = authority.tokens.verify(bearer_token(request.headers.get("authorization")))
    if client.role is not Role.OPERATOR:
        raise Forbidden.single(IssueCode.SCOPE_INSUFFICIENT, "the console's data is for operators' tokens only")


OperatorDep = Annotated[None, Depends(_operator)]


def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


@cache
def _examples() -> tuple[dict[str, Example], dict[str, Any], dict[str, str]]:
    """The examples by name, their expectations (examples/expected.json) and what each shows (its README)."""
    folder = examples_dir()
    found = {example.name: example for example in discover(folder)}
    expected_file = folder / "expected.json"
    expected = json.loads(expected_file.read_text(encoding="utf-8")) if expected_file.is_file() else {}
    shows: dict[str, str] = {}
    for readme in (folder / "README.md", folder / "invalid" / "README.md"):
        if readme.is_file():
            for line in readme.read_text(encoding="utf-8").splitlines():
                if match := _README_ROW.match(line):
                    shows[match.group(1)] = re.sub(r"`([^`]*)`", r"\1", match.group(2))
    invalid_file = folder / "invalid" / "expected.json"
    if invalid_file.is_file():  # the invalid examples: made from a valid one with one mistake (invalid/_build.py)
        for name, made in json.loads(invalid_file.read_text(encoding="utf-8")).items():
            shows.setdefault(f"invalid/{name}", f"{made.get('from')} with one mistake: refused with the issues shown.")
    return found, expected, shows


def _page(request: Request, name: str, **context: Any) -> Response:
    settings = request.app.state.settings
    return TEMPLATES.TemplateResponse(
        request,
        f"{name}.html",
        {"page": name, "pages": PAGES, "auth_on": settings.auth_enabled, **context},
        headers=SECURITY_HEADERS,
    )


@router.get("")
async def console_home() -> Response:
    return RedirectResponse("/console/examples", status_code=303)


@router.get("/examples")
async def examples_page(request: Request) -> Response:
    found, expected, shows = _examples()
    order = [name for name in expected if name in found] + [name for name in found if name not in expected]
    rows = [
        {
            "name": name,
            "shows": shows.get(name, ""),
            "expected": expected.get(name, {}),
            "endpoint": ("/fhir" if found[name].kind.under_fhir_base else "") + found[name].url_path(),
            "content_type": found[name].kind.content_type,
            "invalid": name.startswith("invalid/"),
        }
        for name in order
    ]
    return _page(request, "examples", examples=rows)


@router.get("/examples/file/{name:path}")
async def example_file(name: str) -> Response:
    found, _, _ = _examples()
    example = found.get(name)
    if example is None:
        raise ResourceNotFound.single(IssueCode.RESOURCE_NOT_FOUND, f"no example {name}")
    return Response(example.content, media_type=example.kind.content_type, headers=SECURITY_HEADERS)


@router.get("/validate")
async def validate_page(request: Request) -> Response:
    return _page(request, "validate")


@router.get("/referral")
async def referral_page(request: Request) -> Response:
    return _page(request, "referral")


@router.get("/outbox")
async def outbox_page(request: Request) -> Response:
    return _page(request, "outbox")


@router.get("/subscriptions")
async def subscriptions_page(request: Request) -> Response:
    return _page(request, "subscriptions")


@router.get("/api")
async def api_page(request: Request) -> Response:
    """The HTTP API, from the OpenAPI description the application serves (/openapi.json): /docs without a CDN."""
    schema = request.app.openapi()
    operations = [
        {
            "method": method.upper(),
            "path": path,
            "summary": operation.get("summary") or "",
            "description": operation.get("description") or "",
            "parameters": [p.get("name") for p in operation.get("parameters") or []],
            "responses": sorted((operation.get("responses") or {}).keys()),
        }
        for path, item in sorted(schema.get("paths", {}).items())
        for method, operation in item.items()
        if isinstance(operation, dict)
    ]
    return _page(request, "api", operations=operations, version=schema.get("info", {}).get("version", ""))


def _json(content: Any) -> JSONResponse:
    return JSONResponse(content, headers=SECURITY_HEADERS)


@router.get("/data/outbox")
async def outbox_data(request: Request, _: OperatorDep) -> JSONResponse:
    return _json(await data.outbox_overview(_database(request), utc_now()))


@router.post("/data/outbox/{delivery_id}/replay")
async def replay_data(request: Request, delivery_id: str, _: OperatorDep) -> JSONResponse:
    if not await data.replay(_database(request), delivery_id, utc_now()):
        raise ResourceNotFound.single(IssueCode.RESOURCE_NOT_FOUND, f"no dead letter {delivery_id}")
    return _json({"replayed": delivery_id})


@router.get("/data/subscriptions")
async def subscriptions_data(request: Request, _: OperatorDep) -> JSONResponse:
    return _json({"subscriptions": await data.subscriptions_overview(_database(request))})


@router.get("/data/deliveries")
async def deliveries_data(request: Request, service_request: str, _: OperatorDep, task: str = "") -> JSONResponse:
    task_ids = [part for part in task.split(",") if part]
    return _json({"deliveries": await data.referral_deliveries(_database(request), service_request, task_ids)})


@router.post("/data/locate")
async def locate_data(
    _: OperatorDep,
    document: Annotated[str, Body()],
    issues: Annotated[list[dict[str, str | None]], Body()],
) -> JSONResponse:
    """For each issue ({expression, location}), the line of ``document`` it names (or null)."""

    def lines() -> list[int | None]:
        read = Document(document)
        return [read.line(issue.get("expression"), issue.get("location")) for issue in issues[:1000]]

    # Reading a large document is CPU work: off the event loop, as the API reads XML bodies.
    return _json({"lines": await asyncio.to_thread(lines)})


def install_console(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")

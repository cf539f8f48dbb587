"""Decisions on Tasks: ``PUT`` (the whole Task) or ``PATCH`` (JSON Patch), always with ``If-Match``."""

from __future__ import annotations

import re
from typing import Annotated, Any

import jsonpatch
import orjson
from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from gateway.api.deps import (
    ActorDep,
    AnswerDep,
    BaseUrlDep,
    ClientDep,
    DatabaseDep,
    PreferReturnDep,
    RoutingDep,
    TaskBodyDep,
    ViewerDep,
)
from gateway.api.responses import written
from gateway.api.routes.resources import resource_headers
from gateway.auth.scopes import Permission
from gateway.errors import (
    InvalidRequest,
    IssueCode,
    PreconditionRequired,
    UnprocessableEntity,
    UnsupportedMediaType,
)
from gateway.fhir.limits import check_limits
from gateway.fhir.media import bare_media_type
from gateway.fhir.types import Resource
from gateway.store import queries
from gateway.store.repository import StoredResource
from gateway.workflow.decisions import decide
from gateway.workflow.permissions import acting_roles, check_decision_right
from gateway.workflow.provenance import Agent, Identifier

router = APIRouter(prefix="/fhir/Task", tags=["workflow"])
_ETAG = re.compile(r'^(?:W/)?"(\d+)"$')


def expected_version(if_match: str | None, change: str = "a decision", resource_type: str = "Task") -> int:
    """The version ``If-Match`` names (``W/"<versionId>"``); ``change``: what the update is, for the answers."""
    if not if_match:
        raise PreconditionRequired.single(
            IssueCode.IF_MATCH_REQUIRED,
            f'{change} must name the version it changes: If-Match: W/"<versionId>" (read the {resource_type} first)',
        )
    if if_match.strip() == "*":
        # RFC 9110 §13.1.1: "*" holds for any current version, which would make the decision unconditional; a
        # versioned update names the version it changes (428, as without If-Match).
        raise PreconditionRequired.single(
            IssueCode.IF_MATCH_REQUIRED,
            f'If-Match: * holds for any version; {change} must name the version it changes: If-Match: W/"<versionId>"',
        )
    match = _ETAG.match(if_match.strip())
    if match is None:
        raise InvalidRequest.single(IssueCode.VERSION_MISMATCH, f'If-Match {if_match!r} is not W/"<versionId>"')
    return int(match.group(1))


def _who(who: Any) -> str | Identifier:
    """``who`` as a reference, or as an identifier (a sender names itself by client id)."""
    if isinstance(who.get("reference"), str):
        return str(who["reference"])
    identifier = who["identifier"]
    if not isinstance(identifier.get("system"), str) or not isinstance(identifier.get("value"), str):
        raise TypeError("who.identifier needs a system and a value")
    return Identifier(identifier["system"], identifier["value"])


def _agents(x_provenance: str | None) -> list[Agent]:
    """FHIR's X-Provenance header: who made the decision, possibly on whose behalf (the platform for the GP).
    With authentication on, ``decide`` checks the agents against the client (403 when they are someone else)."""
    if not x_provenance:
        return []
    try:
        header: Any = orjson.loads(x_provenance)
        agents = []
        for agent in header["agent"]:
            who = _who(agent["who"])
            on_behalf_of = (agent.get("onBehalfOf") or {}).get("reference")
            if not isinstance(on_behalf_of, (str, type(None))):
                raise TypeError("references are strings")
            code = ((agent.get("type") or {}).get("coding") or [{}])[0].get("code") or "author"
            agents.append(Agent(str(code), who, on_behalf_of))
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise InvalidRequest.single(
            IssueCode.PROVENANCE_HEADER_INVALID,
            "X-Provenance must be a Provenance resource in JSON whose agents have who.reference or who.identifier",
        ) from exc
    if header.get("resourceType") != "Provenance" or not agents:
        raise InvalidRequest.single(
            IssueCode.PROVENANCE_HEADER_INVALID, "X-Provenance must be a Provenance with agents"
        )
    return agents


def _version(stored: StoredResource) -> str:
    return f"{stored.reference}/_history/{stored.version_id}"


IfMatch = Annotated[str | None, Header(alias="If-Match")]
XProvenance = Annotated[str | None, Header(alias="X-Provenance")]


@router.put("/{task_id}", summary="Decide on a Task (whole resource)")
async def put_task(
    task_id: str, client: ClientDep, viewer: ViewerDep, actor: ActorDep, task: TaskBodyDep,
    database: DatabaseDep, routing: RoutingDep, answer: AnswerDep, preference: PreferReturnDep, base_url: BaseUrlDep,
    if_match: IfMatch = None, x_provenance: XProvenance = None,
) -> Response:  # fmt: skip
    client.require("Task", Permission.UPDATE)
    current = await queries.read(database, "Task", task_id, viewer)  # 404 for a Task the caller may not see
    roles = await acting_roles(database, client.role, viewer, task_id)  # as the platform, or as its sender
    agents = _agents(x_provenance)
    # 403 for a decision not the caller's to make (a sender's relay of the GP's answer: on the GP's behalf)
    check_decision_right(roles, current.content, task, [agent.on_behalf_of for agent in agents])
    stored = await decide(
        database, routing, task_id, task, expected_version(if_match), agents, actor, viewer, own_base=base_url
    )
    return written(stored.content, answer, 200, resource_headers(stored, base_url), preference, _version(stored))


@router.patch("/{task_id}", summary="Decide on a Task (JSON Patch)")
async def patch_task(
    task_id: str, request: Request, client: ClientDep, viewer: ViewerDep, actor: ActorDep, database: DatabaseDep,
    routing: RoutingDep, answer: AnswerDep, preference: PreferReturnDep, base_url: BaseUrlDep, if_match: IfMatch = None,
    x_provenance: XProvenance = None,
) -> Response:  # fmt: skip
    client.require("Task", Permission.UPDATE)
    content_type = bare_media_type(request.headers.get("content-type"))
    if content_type != "application/json-patch+json":
        raise UnsupportedMediaType.single(
            IssueCode.MEDIA_TYPE_UNSUPPORTED, "PATCH takes a JSON Patch (Content-Type: application/json-patch+json)"
        )
    expected = expected_version(if_match)
    current = await queries.read(database, "Task", task_id, viewer)
    try:
        patch = jsonpatch.JsonPatch(orjson.loads(await request.body()))
    except (orjson.JSONDecodeError, jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
        raise InvalidRequest.single(IssueCode.PATCH_INVALID, f"the JSON Patch is not valid: {exc}") from exc
    try:
        patched: Resource = patch.apply(current.content)
    except jsonpatch.InvalidJsonPatch as exc:  # an operation without its value or from: found only when applied
        raise InvalidRequest.single(IssueCode.PATCH_INVALID, f"the JSON Patch is not valid: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
        # A valid patch that this Task's content refuses — a failing test op, a path it does not have: 422 (R4
        # http.html#patch; R5 names the failing test), as for an update that the resource's state refuses.
        raise UnprocessableEntity.single(
            IssueCode.PATCH_INVALID, f"the JSON Patch cannot be applied to this Task: {exc}", None, "processing"
        ) from exc
    if not isinstance(patched, dict):
        raise InvalidRequest.single(IssueCode.PATCH_INVALID, "the JSON Patch must leave a Task, not replace it")
    check_limits(patched)  # a patch may add a deep or huge value: bounded like a posted body
    agents = _agents(x_provenance)
    roles = await acting_roles(database, client.role, viewer, task_id)
    check_decision_right(roles, current.content, patched, [agent.on_behalf_of for agent in agents])
    stored = await decide(
        database, routing, task_id, patched, expected, agents, actor, viewer, method="PATCH", own_base=base_url
    )
    return written(stored.content, answer, 200, resource_headers(stored, base_url), preference, _version(stored))

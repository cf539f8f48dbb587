"""What the gateway publishes for other FHIR tools (DESIGN §15), read-only and without a token (definitions, no
patient data): the conformance resources of profiles/ by id and by search, ``ValueSet/$expand`` for ours, and the
FHIR package ``dac.gateway`` at ``GET /package.tgz``. Any write to these types is a 405."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.api.bundles import conformance_searchset
from gateway.api.deps import AnswerDep, BaseUrlDep
from gateway.api.responses import FhirResponse
from gateway.conformance import catalog
from gateway.conformance.package import served_package
from gateway.errors import IssueCode, MethodNotAllowed

router = APIRouter(tags=["conformance"])
#: The methods of a write, each refused (405) on the conformance types.
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


@router.get("/package.tgz", summary="The FHIR package dac.gateway (profiles, terminology, examples)")
async def package() -> Response:
    name, content = served_package()
    return Response(
        content, media_type="application/gzip", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@router.get("/fhir/ValueSet/$expand", summary="Expand one of our ValueSets (by url)")
async def expand_by_url(url: str, answer: AnswerDep) -> FhirResponse:
    return FhirResponse(catalog.valueset_by_url(url), answer)


@router.get("/fhir/ValueSet/{resource_id}/$expand", summary="Expand one of our ValueSets")
async def expand(resource_id: str, answer: AnswerDep) -> FhirResponse:
    return FhirResponse(catalog.read("ValueSet", resource_id), answer)


async def refuse_write(request: Request) -> Response:
    raise MethodNotAllowed.single(
        IssueCode.METHOD_NOT_ALLOWED,
        f"{request.url.path.removeprefix('/fhir/').split('/', 1)[0]} resources are published by the gateway and "
        "read-only; they change with a new release of its profiles",
    )


def _searcher(resource_type: str) -> Callable[[Request, AnswerDep, BaseUrlDep], Awaitable[FhirResponse]]:
    async def search(request: Request, answer: AnswerDep, base_url: BaseUrlDep) -> FhirResponse:
        params = list(request.query_params.multi_items())
        found = catalog.search(resource_type, params)
        return FhirResponse(conformance_searchset(base_url, resource_type, params, found), answer)

    return search


def _reader(resource_type: str) -> Callable[[str, AnswerDep], Awaitable[FhirResponse]]:
    async def read(resource_id: str, answer: AnswerDep) -> FhirResponse:
        return FhirResponse(catalog.read(resource_type, resource_id), answer)

    return read


for _type in catalog.CONFORMANCE_TYPES:
    router.add_api_route(f"/fhir/{_type}", _searcher(_type), methods=["GET"], summary=f"Search {_type}")
    router.add_api_route(f"/fhir/{_type}/{{resource_id}}", _reader(_type), methods=["GET"], summary=f"Read {_type}")
    for _path in (f"/fhir/{_type}", f"/fhir/{_type}/{{resource_id}}"):
        # Hidden from the OpenAPI document, hence from the CapabilityStatement: no interaction, a 405.
        router.add_api_route(_path, refuse_write, methods=list(WRITE_METHODS), include_in_schema=False)

"""The OpenAPI description (``/openapi.json``) of the FHIR API, as integrators and schemathesis read it.

FastAPI derives it from the routes, but the routes read FHIR bodies and search parameters themselves, so the
derived one says "any JSON in, any JSON out". This completes it in one place, without touching the routes:
FHIR media types on answers, every error as an OperationOutcome (with its status), and the search parameters.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway.fhir.search import COMMON_PARAMETERS, RESULT_PARAMETERS, SEARCH_PARAMETERS

_RESOURCE: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}},
    "description": "A FHIR R4 resource (https://hl7.org/fhir/R4/)",
}
_OUTCOME: dict[str, Any] = {"$ref": "#/components/schemas/OperationOutcome"}
_ERRORS = {
    "400": "Unparsable body (JSON, XML, too deep), unknown or invalid search parameter",
    "404": "Unknown resource type, id or version",
    "408": "The body did not arrive within GATEWAY_BODY_TIMEOUT",
    "413": "Body over GATEWAY_MAX_BODY_BYTES, or a Bundle of more than 1,000 entries",
    "415": "Content-Type is not a FHIR JSON or XML media type",
    "422": "Structure, profile or referral rule failure",
    "503": "The database cannot be reached; nothing was stored, retry later",
}


def _fhir_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/fhir+json": {"schema": schema}, "application/fhir+xml": {"schema": {"type": "string"}}}


def _search_parameters() -> list[dict[str, Any]]:
    names = sorted(
        {name for parameters in SEARCH_PARAMETERS.values() for name in parameters}
        | set(COMMON_PARAMETERS)
        | set(RESULT_PARAMETERS)
    )
    return [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": "FHIR search"}
        for name in names
    ]


def describe(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["OperationOutcome"] = {
        "type": "object",
        "required": ["resourceType", "issue"],
        "properties": {"resourceType": {"const": "OperationOutcome"}, "issue": {"type": "array", "minItems": 1}},
        "description": "Each issue carries a dac-issue code in details.coding and a FHIRPath in expression",
    }
    for path, operations in schema["paths"].items():
        if not path.startswith("/fhir"):
            continue
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status, answer in list(responses.items()):
                if status.startswith("2"):
                    answer["content"] = _fhir_content(_RESOURCE)
            for status, description in _ERRORS.items():
                responses[status] = {"description": description, "content": _fhir_content(_OUTCOME)}
            if method in ("post", "put") and "requestBody" not in operation and not path.endswith("_search"):
                operation["requestBody"] = {"required": True, "content": _fhir_content(_RESOURCE)}
            elif method == "patch" and "requestBody" not in operation:
                patch = {"type": "array", "items": {"type": "object", "required": ["op", "path"]}}
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json-patch+json": {"schema": patch}},
                }
            if method == "get" and path == "/fhir/{resource_type}":
                operation["parameters"] = [*operation.get("parameters", []), *_search_parameters()]
    return schema


def install_openapi(app: FastAPI) -> None:
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if "schema" not in cache:
            cache["schema"] = describe(app)
        return cache["schema"]  # type: ignore[no-any-return]

    app.openapi = openapi  # type: ignore[method-assign]

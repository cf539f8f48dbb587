"""The one place where exceptions become answers: an OperationOutcome, in the format the client asked for."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from gateway.api.http_methods import allowed_methods
from gateway.api.responses import FhirResponse
from gateway.errors import (
    Forbidden,
    GatewayError,
    InvalidRequest,
    Issue,
    IssueCode,
    MethodNotAllowed,
    ResourceNotFound,
    TokenRequestRejected,
    Unauthenticated,
)
from gateway.fhir.media import DEFAULT_RESPONSE, response_format
from gateway.fhir.outcome import operation_outcome


def _render(request: Request, error: GatewayError) -> Response:
    try:
        answer = response_format(
            request.headers.get("accept"), request.query_params.get("_format"), request.query_params.get("_pretty")
        )
    except GatewayError:
        answer = DEFAULT_RESPONSE
    return FhirResponse(operation_outcome(error.issues), answer, error.status_code)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    if isinstance(exc, TokenRequestRejected):
        # The token endpoint speaks OAuth (RFC 6749 §5.2), not FHIR.
        return JSONResponse(
            {"error": exc.oauth_error, "error_description": exc.issues[0].diagnostics},
            exc.status_code,
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )
    response = _render(request, exc)
    # RFC 6750 §3: the Bearer challenge, with the error when a token was sent.
    if isinstance(exc, Unauthenticated):
        error = "invalid_token" if exc.issues[0].code is IssueCode.ACCESS_TOKEN_INVALID else None
        response.headers["WWW-Authenticate"] = 'Bearer realm="dac-gateway"' + (f', error="{error}"' if error else "")
    elif isinstance(exc, Forbidden):
        response.headers["WWW-Authenticate"] = 'Bearer realm="dac-gateway", error="insufficient_scope"'
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: GatewayError
    if exc.status_code == 404:
        error = ResourceNotFound.single(IssueCode.RESOURCE_NOT_FOUND, f"no such endpoint: {request.url.path}")
    elif exc.status_code == 405:
        error = MethodNotAllowed.single(
            IssueCode.METHOD_NOT_ALLOWED, f"{request.method} is not allowed on {request.url.path}"
        )
    else:
        error = InvalidRequest.single(IssueCode.BODY_UNPARSABLE, str(exc.detail))
    response = _render(request, error)
    if exc.headers:
        response.headers.update(exc.headers)
    if exc.status_code == 405:  # every method of the path, not only those of the first route that matched it
        response.headers["Allow"] = ", ".join(allowed_methods(request.app.router.routes, request.url.path))
    return response


async def _request_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    issues = [
        Issue(
            IssueCode.SEARCH_PARAMETER_INVALID,
            f"{'.'.join(str(step) for step in error.get('loc', ()))}: {error.get('msg')}",
            str(error.get("loc", ("",))[-1]),
        )
        for error in exc.errors()
    ]
    return _render(request, InvalidRequest(*issues))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)

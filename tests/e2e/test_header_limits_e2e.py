"""Header limits that hold on a real ``gateway serve`` (issue 23: a 10 MB header was accepted — httptools, the
parser uvicorn picks, has no limit — though README said 16 KB applied)."""

from __future__ import annotations

import contextlib
import socket
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.conftest import ApiGateway

pytestmark = pytest.mark.e2e
FHIR_JSON = {"content-type": "application/fhir+json"}


def _exchange(base: str, header_bytes: int, headers: int = 1) -> bytes:
    """Send GET /health with ``headers`` headers of ``header_bytes`` in all, on a raw socket; what the server
    answered before it closed (b"" when the connection was reset before an answer could be read)."""
    parts = urlsplit(base)
    padding = "".join(f"X-Padding-{i}: {'a' * (header_bytes // headers)}\r\n" for i in range(headers))
    head = f"GET /health HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n{padding}Connection: close\r\n\r\n"
    received = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(head.encode())  # refused while still sending: what it answered is read below
        with contextlib.suppress(ConnectionResetError):
            while chunk := connection.recv(65536):
                received += chunk
    return received


@pytest.mark.parametrize(
    ("size", "headers"), [(64 * 1024, 1), (64 * 1024, 2_000), (10 * 1024 * 1024, 1)], ids=["64KB", "2000x32B", "10MB"]
)
def test_an_oversized_head_is_431_and_the_connection_closed(api_gateway: ApiGateway, size: int, headers: int) -> None:
    answer = _exchange(api_gateway.base, size, headers)
    assert b'"status":"ok"' not in answer
    if answer or size < 1024 * 1024:  # 10 MB: the reset may come before the answer is read; never a 200
        assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
        assert b"connection: close" in answer.lower()
        assert b'"headers-too-large"' in answer
    # The gateway still serves everyone else.
    assert httpx.get(f"{api_gateway.base.removesuffix('/fhir')}/health", timeout=10).json() == {"status": "ok"}


@pytest.mark.parametrize("headers", [1, 100])
def test_headers_under_the_limit_are_served(api_gateway: ApiGateway, headers: int) -> None:
    answer = _exchange(api_gateway.base, 12 * 1024, headers)
    assert answer.startswith(b"HTTP/1.1 200")
    assert b'"status":"ok"' in answer


def test_a_large_body_is_no_head_and_a_kept_alive_connection_is_bounded_again(api_gateway: ApiGateway) -> None:
    """The bound is on the head alone: a body of any size (here over the body limit, 413) is no head, and the next
    request on the same connection is bounded from its own first byte."""
    with httpx.Client(base_url=api_gateway.base.removesuffix("/fhir"), timeout=30) as http:
        big = http.post("/fhir/$validate", content=b" " * (api_gateway.max_body_bytes + 1), headers=FHIR_JSON)
        assert big.status_code == 413, big.text[:300]
        small = http.post("/fhir/$validate", content=b'{"resourceType": "Patient"}', headers=FHIR_JSON)
        assert small.status_code == 200, small.text[:300]
        assert http.get("/health", headers={"x-padding": "a" * 12 * 1024}).status_code == 200
        refused = http.get("/health", headers={"x-padding": "a" * 20 * 1024})
        assert refused.status_code == 431

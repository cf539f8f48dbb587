"""uvicorn's httptools protocol, with a bound on a request's head (request line and headers).

httptools — the parser uvicorn picks, and the fastest it has — reads headers of any size: a 10 MB header was
accepted, and an unfinished one held ~21 MB (issue 23). h11, the other, checks its limit only on a head that
arrives in pieces, not one that comes in a single read. So the gateway keeps httptools and bounds the head here,
at ``h11_max_incomplete_event_size`` (uvicorn's own setting for it, from ``GATEWAY_MAX_HEADER_BYTES``): the head's
size is counted as the parser hands it over, and the bytes of a head not yet complete as they arrive (httptools
buffers a header until it ends). Beyond the bound: 431 Request Header Fields Too Large with an OperationOutcome,
and the connection closed, before the application sees the request.
"""

from __future__ import annotations

from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import Issue, IssueCode
from gateway.fhir.outcome import operation_outcome

DEFAULT_MAX_HEADER_BYTES = 16 * 1024


class _HeadTooLarge(Exception):
    """Raised in a parser callback: httptools stops reading, uvicorn calls ``send_400_response``."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limit: int = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_HEADER_BYTES
        self._head = 0  # the current head's size, as the parser handed it over
        self._pending = 0  # bytes received while the current head was not complete
        self._in_head = True  # from a request's first byte to the end of its headers; a connection opens in one
        self._too_large = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            # The head is still not complete: all of these bytes are head, buffered by httptools.
            self._pending += len(data)
            if self._pending > self._limit:
                self._refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head, self._pending, self._in_head = 0, 0, True

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # "name: value\r\n"
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._refuse()
        else:
            super().send_400_response(msg)

    def _count(self, size: int) -> None:
        self._head += size
        if self._head > self._limit:
            self._too_large = True
            raise _HeadTooLarge

    def _refuse(self) -> None:
        issue = Issue(
            IssueCode.HEADERS_TOO_LARGE,
            f"the request line and headers exceed the limit of {self._limit} bytes",
            None,
            "too-long",
        )
        body = orjson.dumps(operation_outcome([issue]))
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/fhir+json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head + body)
        self.transport.close()

"""The interaction being served, carried from the HTTP layer down to the unit of work.

The request middleware opens an ``AuditContext`` for every audited route; the access-token dependency names the
client; a unit of work that commits resource changes asks the context for the AuditEvent of those changes and
writes it in the same transaction (so it is rolled back with them); at the end of the request, anything not yet
audited in a transaction — a read, a search, a refusal — goes to the buffer.

The worker has no request: ``system_audit`` opens a context with the gateway itself as the agent around each of
its jobs, so a deadline escalation (or any change a job commits) is audited in its transaction too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from gateway.audit.events import GATEWAY_CLIENT_ID, AuditedInteraction, audit_event
from gateway.fhir.primitives import utc_now
from gateway.fhir.types import Resource


@dataclass
class AuditContext:
    subtype: str
    client_id: str = "anonymous"  # until the access token names the client
    recorded_in_transaction: bool = False
    query: str | None = None  # a search's parameters, as a query string

    def change_event(self, touched: Iterable[str]) -> Resource | None:
        """The AuditEvent for a transaction that writes the resources ``touched`` (references with version)."""
        entities = tuple(touched)
        if not entities:
            return None
        return audit_event(AuditedInteraction(self.subtype, self.client_id, utc_now(), "0", entities))


_current: ContextVar[AuditContext | None] = ContextVar("gateway_audit", default=None)


def current_audit() -> AuditContext | None:
    return _current.get()


def open_audit(context: AuditContext | None) -> object:
    """Make ``context`` the current one; returns the token ``close_audit`` takes."""
    return _current.set(context)


def close_audit(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


@contextmanager
def system_audit(subtype: str) -> Iterator[AuditContext]:
    """The gateway acting on its own (a worker job): what it commits is audited with the gateway as agent."""
    context = AuditContext(subtype, client_id=GATEWAY_CLIENT_ID)
    token = open_audit(context)
    try:
        yield context
    finally:
        close_audit(token)

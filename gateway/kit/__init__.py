"""The conformance kit (DESIGN §14): every example posted to a server, its answer checked against
``examples/expected.json``.

It speaks only the wire contract — HTTP through httpx, FHIR JSON and XML read with the standard library — so it runs
against any server implementing DESIGN §4 with the example routing, not only this one. It imports nothing of the
gateway's rooms (no store, no api, no fhir); the one exception is ``gateway.auth.client_tokens``, the client side of
SMART Backend Services that ``--client-id``/``--key`` use, itself only httpx and a signed JWT. An import-linter
contract for it would read: ``gateway.kit`` may import ``gateway.auth.client_tokens`` and nothing else of
``gateway``.
"""

from gateway.kit._examples import Example, discover
from gateway.kit._run import Outcome, check, junit_xml, observe, run_kit

__all__ = ["Example", "Outcome", "check", "discover", "junit_xml", "observe", "run_kit"]

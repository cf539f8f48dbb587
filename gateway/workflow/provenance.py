"""Provenance of what the workflow records: who decided, possibly on whose behalf."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.fhir.primitives import fhir_instant, new_id
from gateway.fhir.types import Resource

PROVENANCE_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


@dataclass(frozen=True, slots=True)
class Agent:
    type: str  # provenance-participant-type: author, informant, verifier, …
    who: str
    on_behalf_of: str | None = None


def provenance(targets: Sequence[str], now: datetime, agents: Sequence[Agent], activity: str | None = None) -> Resource:
    rendered: Resource = {
        "resourceType": "Provenance",
        "id": new_id(),
        "target": [{"reference": target} for target in targets],
        "recorded": fhir_instant(now),
        "agent": [],
    }
    for agent in agents:
        item: Resource = {
            "type": {"coding": [{"system": PROVENANCE_PARTICIPANT, "code": agent.type}]},
            "who": {"reference": agent.who},
        }
        if agent.on_behalf_of:
            item["onBehalfOf"] = {"reference": agent.on_behalf_of}
        rendered["agent"].append(item)
    if activity:
        rendered["activity"] = {"text": activity}
    return rendered

"""What "nothing half-stored" means, checked on a gateway's database after a fault.

A referral is stored in one transaction (DESIGN §3.1, §3.5), so after any crash the database holds, for every
ServiceRequest, everything that transaction writes — and nothing written by a transaction that did not commit:

1. its subject Patient, and the CareTeam named in its supportingInfo, exist;
2. at least one Task has it as focus, and its idempotency key (the answer replayed to a resubmission) names it;
3. when it was routed (``active``): exactly one ``platform-intake`` Task and exactly one ``referral-request``
   outbox row for that Task — delivery cannot be lost nor doubled;
4. no orphans: every Task's focus, every idempotency key's ServiceRequest (or, for a conditional create,
   Consent) and every outbox row's Task exists,
   and every Patient and CareTeam belongs to some ServiceRequest.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import sqlalchemy as sa

from gateway.store import Database
from gateway.store.tables import idempotency_keys, outbox, resources


def _ref_id(reference: Any, resource_type: str) -> str | None:
    value = reference.get("reference") if isinstance(reference, dict) else None
    prefix = f"{resource_type}/"
    return value[len(prefix) :] if isinstance(value, str) and value.startswith(prefix) else None


def half_stored(database_url: str) -> list[str]:
    """Every breach of the invariants above (empty: the store is whole)."""
    return asyncio.run(_half_stored(database_url))


async def _half_stored(database_url: str) -> list[str]:
    database = Database(database_url)
    try:
        async with database.engine.connect() as connection:
            rows = (
                await connection.execute(sa.select(resources.c.resource_type, resources.c.id, resources.c.content))
            ).all()
            keys = (await connection.execute(sa.select(idempotency_keys.c.service_request_id))).all()
            deliveries = (await connection.execute(sa.select(outbox.c.id, outbox.c.task_id, outbox.c.event))).all()
    finally:
        await database.dispose()
    by_type: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_type.setdefault(row.resource_type, {})[row.id] = json.loads(row.content)
    requests = by_type.get("ServiceRequest", {})
    tasks = by_type.get("Task", {})
    problems: list[str] = []
    focus_of = {task_id: _ref_id(task.get("focus"), "ServiceRequest") for task_id, task in tasks.items()}
    # A conditional create of a Consent (If-None-Exist) keys its Consent ("Consent/<id>"); the others a referral.
    keyed = {row.service_request_id for row in keys if "/" not in row.service_request_id}
    consents_keyed = {row.service_request_id.split("/", 1)[1] for row in keys if "/" in row.service_request_id}
    requests_by_delivery_task = Counter(row.task_id for row in deliveries if row.event == "referral-request")
    patients_used: set[str] = set()
    care_teams_used: set[str] = set()
    for request_id, request in requests.items():
        patient = _ref_id(request.get("subject"), "Patient")
        patients_used.add(patient or "")
        care_teams = [_ref_id(item, "CareTeam") for item in request.get("supportingInfo", [])]
        care_teams_used.update(c for c in care_teams if c)
        if patient not in by_type.get("Patient", {}):
            problems.append(f"ServiceRequest/{request_id}: subject Patient/{patient} missing")
        if not any(c in by_type.get("CareTeam", {}) for c in care_teams):
            problems.append(f"ServiceRequest/{request_id}: no CareTeam")
        own_tasks = [task_id for task_id, focus in focus_of.items() if focus == request_id]
        if not own_tasks:
            problems.append(f"ServiceRequest/{request_id}: no Task")
        if request_id not in keyed:
            problems.append(f"ServiceRequest/{request_id}: no idempotency key")
        if request.get("status") == "active":
            intake = [
                t for t in own_tasks if tasks[t].get("code", {}).get("coding", [{}])[0].get("code") == "platform-intake"
            ]
            if len(intake) != 1:
                problems.append(f"ServiceRequest/{request_id}: {len(intake)} platform-intake Tasks")
            elif requests_by_delivery_task[intake[0]] != 1:
                problems.append(f"ServiceRequest/{request_id}: {requests_by_delivery_task[intake[0]]} outbox rows")
    problems += [f"Task/{t}: focus ServiceRequest/{f} missing" for t, f in focus_of.items() if f not in requests]
    problems += [f"idempotency key for missing ServiceRequest/{k}" for k in keyed - requests.keys()]
    problems += [f"idempotency key for missing Consent/{k}" for k in consents_keyed - by_type.get("Consent", {}).keys()]
    problems += [
        f"outbox {row.id}: Task/{row.task_id} missing" for row in deliveries if row.task_id and row.task_id not in tasks
    ]
    problems += [f"orphan Patient/{p}" for p in by_type.get("Patient", {}).keys() - patients_used]
    problems += [f"orphan CareTeam/{c}" for c in by_type.get("CareTeam", {}).keys() - care_teams_used]
    return problems


def count(database_url: str, resource_type: str) -> int:
    return asyncio.run(_count(database_url, resource_type))


async def _count(database_url: str, resource_type: str) -> int:
    database = Database(database_url)
    try:
        async with database.engine.connect() as connection:
            query = sa.select(sa.func.count()).select_from(resources).where(resources.c.resource_type == resource_type)
            return int((await connection.execute(query)).scalar_one())
    finally:
        await database.dispose()


def undelivered(database_url: str) -> int:
    """Outbox rows not (yet) delivered."""

    async def run() -> int:
        database = Database(database_url)
        try:
            async with database.engine.connect() as connection:
                query = sa.select(sa.func.count()).select_from(outbox).where(outbox.c.status != "delivered")
                return int((await connection.execute(query)).scalar_one())
        finally:
            await database.dispose()

    return asyncio.run(run())

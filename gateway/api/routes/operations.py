"""For operators: liveness, readiness (database reachable, schema current) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from gateway import metrics
from gateway.api.deps import DatabaseDep
from gateway.fhir.primitives import utc_now
from gateway.routing.destinations import destination_label
from gateway.store.migrate import current_revision, head_revision
from gateway.store.unit_of_work import UnitOfWork

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/ready", summary="Readiness: the database answers and its schema is current")
async def ready(database: DatabaseDep) -> JSONResponse:
    try:
        revision = await current_revision(database)
    except Exception as exc:  # any failure to reach the database means "not ready", never a 500
        return JSONResponse({"status": "unavailable", "database": type(exc).__name__}, status_code=503)
    if revision != head_revision():
        return JSONResponse({"status": "unavailable", "schema": revision, "expected": head_revision()}, status_code=503)
    return JSONResponse({"status": "ready", "schema": revision})


@router.get("/metrics", summary="Prometheus metrics")
async def prometheus(database: DatabaseDep) -> Response:
    async with UnitOfWork(database, write=False) as uow:
        stats = await uow.outbox.stats(utc_now())
    metrics.outbox_depth.clear()
    metrics.outbox_oldest.clear()
    # Senders' callbacks share one label (never their URLs): their counts add up, the oldest is the oldest.
    depth: dict[tuple[str, str], int] = {}
    oldest: dict[str, float] = {}
    for row in stats:
        label = destination_label(row["destination"])
        depth[label, row["status"]] = depth.get((label, row["status"]), 0) + row["count"]
        if row["oldest_age_seconds"] is not None:
            oldest[label] = max(oldest.get(label, 0.0), row["oldest_age_seconds"])
    for (label, status), count in depth.items():
        metrics.outbox_depth.labels(label, status).set(count)
    for label, age in oldest.items():
        metrics.outbox_oldest.labels(label).set(age)
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

"""Prometheus metrics (prometheus-client): HTTP requests, referral intake, and per destination the outbox's
depth, the age of its oldest waiting delivery, delivery latency and outcomes (DESIGN §10: queue health).

``gateway serve --workers N`` runs N API processes behind one port; whichever answers a scrape must report all
of them, so they keep their values in prometheus-client's multi-process files (``PROMETHEUS_MULTIPROC_DIR``,
set by ``serve`` before the processes start) and the scrape reads them all.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

REGISTRY = CollectorRegistry(auto_describe=True)

http_requests = Counter(
    "gateway_http_requests_total", "HTTP requests by route template and status", ["method", "route", "status"],
    registry=REGISTRY,
)  # fmt: skip
http_latency = Histogram(
    "gateway_http_request_seconds", "HTTP request duration by route template", ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY,
)  # fmt: skip
referrals = Counter(
    "gateway_referrals_total", "Referrals taken in, by outcome (stored, replayed)", ["outcome"], registry=REGISTRY
)
deliveries = Counter(
    "gateway_deliveries_total", "Delivery attempts by destination and verdict", ["destination", "verdict"],
    registry=REGISTRY,
)  # fmt: skip
delivery_latency = Histogram(
    "gateway_delivery_seconds", "Time to send one message and get the answer, by destination", ["destination"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY,
)  # fmt: skip
# Read from the database by the process answering the scrape: with several processes, the latest reading counts.
outbox_depth = Gauge(
    "gateway_outbox_entries", "Outbox entries by destination and status (read when scraped)", ["destination", "status"],
    registry=REGISTRY, multiprocess_mode="mostrecent",
)  # fmt: skip
outbox_oldest = Gauge(
    "gateway_outbox_oldest_pending_seconds", "Age of the oldest delivery still waiting, by destination",
    ["destination"], registry=REGISTRY, multiprocess_mode="mostrecent",
)  # fmt: skip


def render() -> bytes:
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)

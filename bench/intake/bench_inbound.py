#!/usr/bin/env python3
"""HL7 v2 intake against FHIR intake of the same referral, in one process and one run (DESIGN §13).

The referral is ``examples/hl7v2/ref-i12-discharge.hl7``; the FHIR side posts the very Bundle the mapping makes of
it (``gateway.inbound``), so both take in the same resources and differ only by what v2 adds: reading ER7,
mapping, writing the ACK. Each request is a new referral (new MSH-10 and RF1-6) for the same patient. Both go
through ``httpx.ASGITransport`` to the application (no sockets, no delivery worker), ``--clients`` at a time, on a
fresh SQLite file (or ``--database-url``); the v2 side alternates with the FHIR side in rounds so that neither
gets a warmer database. Prints referrals per second of each, and the v2 mapping's own cost per message.

    .venv/bin/python bench/intake/bench_inbound.py --referrals 300
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.api.app import create_app
from gateway.config import Settings
from gateway.inbound.er7 import read_message
from gateway.inbound.hl7v2 import V2Source
from gateway.inbound.mapping import Builder
from gateway.inbound.service import v2_mappings
from gateway.logging import configure_logging
from gateway.store import migrate

MESSAGE = (Path(__file__).resolve().parents[2] / "examples" / "hl7v2" / "ref-i12-discharge.hl7").read_bytes()


def v2_message(index: int) -> bytes:
    return MESSAGE.replace(b"CH3R-MSG-000451", f"BENCH-{index}".encode()).replace(
        b"CH3R-SORTIE-2025-004518", f"BENCH-SORTIE-{index}".encode()
    )


def mapped(raw: bytes) -> bytes:
    message = read_message(raw)
    builder = Builder(message.digest)
    builder.apply(v2_mappings()[message.message_type], V2Source(message))
    return orjson.dumps(builder.finish().bundle)


async def run(settings: Settings, count: int, clients: int, rounds: int) -> None:
    app = create_app(settings)
    indexes = itertools.count()
    elapsed = {"hl7v2": 0.0, "fhir": 0.0}
    done = {"hl7v2": 0, "fhir": 0}
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://b") as http:

        async def post(kind: str, times: int) -> None:
            for _ in range(times):
                index = next(indexes)
                if kind == "hl7v2":
                    answer = await http.post(
                        "/hl7v2", content=v2_message(index), headers={"Content-Type": "x-application/hl7-v2+er7"}
                    )
                    ok = b"MSA|AA|" in answer.content
                else:
                    answer = await http.post(
                        "/fhir",
                        content=mapped(v2_message(index)),
                        headers={"Content-Type": "application/fhir+json"},
                    )
                    ok = answer.status_code == 200
                if not ok:
                    raise SystemExit(f"{kind}: {answer.status_code} {answer.text[:1000]}")

        for kind in ("hl7v2", "fhir"):
            await post(kind, 5)  # warm-up
        per_round = max(count // rounds // clients, 1)
        for _ in range(rounds):
            for kind in ("hl7v2", "fhir"):
                started = time.perf_counter()
                await asyncio.gather(*(post(kind, per_round) for _ in range(clients)))
                elapsed[kind] += time.perf_counter() - started
                done[kind] += per_round * clients
    # The FHIR side's timing included making its Bundle (mapping, outside the gateway): measured alone, taken off.
    started = time.perf_counter()
    for index in range(200):
        mapped(v2_message(index))
    mapping_ms = (time.perf_counter() - started) / 200 * 1000
    elapsed["fhir"] -= done["fhir"] * mapping_ms / 1000
    for kind in ("hl7v2", "fhir"):
        print(f"{kind:6} {done[kind]:5} referrals  {done[kind] / elapsed[kind]:7.1f} referrals/s")
    print(f"mapping alone (read ER7, apply the rules, make the Bundle): {mapping_ms:.2f} ms a message")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--referrals", type=int, default=300, help="referrals of each kind (default 300)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--rounds", type=int, default=5, help="alternations of the two kinds (default 5)")
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    args = parser.parse_args()
    configure_logging("WARNING", True)
    with tempfile.TemporaryDirectory() as directory:
        url = args.database_url or f"sqlite:///{directory}/bench.db"
        if url.startswith("sqlite"):
            migrate.upgrade(url)
        settings = Settings(database_url=url, auth="off", log_level="WARNING")
        asyncio.run(run(settings, args.referrals, args.clients, args.rounds))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""HL7 v2 and CDA mapping cost against the shape of one document: repeats under one parent (CDA) and separators
(v2). Not a test: prints, for each shape and count, the outcome and the seconds reading and mapping took, on the
event loop of the process that takes the document in, with the seconds per repeat so that a linear cost shows as
a flat last column.

    .venv/bin/python bench/intake/bench_inbound_shapes.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.errors import GatewayError  # noqa: E402
from gateway.inbound.cda import read_cda  # noqa: E402
from gateway.inbound.er7 import read_message  # noqa: E402
from gateway.inbound.hl7v2 import V2Source  # noqa: E402
from gateway.inbound.mapping import Builder  # noqa: E402
from gateway.inbound.service import LETTRE_DE_LIAISON, cda_mappings, v2_mappings  # noqa: E402

CDA = (ROOT / "examples" / "cda" / "lettre-de-liaison-gp.xml").read_bytes()
V2 = (ROOT / "examples" / "hl7v2" / "ref-i12-discharge.hl7").read_bytes()


def cda_repeats(count: int) -> bytes:
    """``count`` INS ids, telecoms and names in the patient: siblings the mapping locates one by one."""
    ids = b"".join(b'<id root="1.2.250.1.213.1.4.8" extension="14106290190878%d"/>' % (i % 10) for i in range(count))
    telecoms = b"".join(b'<telecom value="tel:0%d" use="H"/>' % i for i in range(count))
    names = b"".join(
        b'<name><given qualifier="BR">A</given><family qualifier="BR">B%d</family></name>' % i for i in range(count)
    )
    body = CDA.replace(b'<addr use="H">', ids + telecoms + b'<addr use="H">', 1)
    return body.replace(b"<patient>", b"<patient>" + names, 1)


def v2_repetitions(count: int) -> bytes:
    return V2.replace(b"^PI||DUBOIS", b"^PI" + b"~L^^^H&1.2.3&ISO^PI" * count + b"||DUBOIS")


def time_cda(body: bytes) -> str:
    source = read_cda(body)
    builder = Builder("bench")
    builder.apply(cda_mappings()[LETTRE_DE_LIAISON], source)
    builder.finish()
    return "mapped"


def time_v2(body: bytes) -> str:
    try:
        message = read_message(body)
    except GatewayError as exc:
        return f"refused ({exc.issues[0].code})"
    builder = Builder(message.digest)
    builder.apply(v2_mappings()["REF^I12"], V2Source(message))
    builder.finish()
    return "mapped"


def main() -> None:
    print(f"{'shape':<16} {'count':>7} {'bytes':>9} {'outcome':<32} {'seconds':>8} {'µs/repeat':>10}")
    for shape, make, run, counts in (
        ("cda repeats", cda_repeats, time_cda, (100, 300, 990)),
        ("v2 repetitions", v2_repetitions, time_v2, (100, 1400, 80_000)),
    ):
        for count in counts:
            body = make(count)
            start = time.perf_counter()
            outcome = run(body)
            took = time.perf_counter() - start
            print(f"{shape:<16} {count:>7} {len(body):>9} {outcome:<32} {took:>8.3f} {took / count * 1e6:>10.0f}")


if __name__ == "__main__":
    main()

"""XML reading cost against attribute, element and repeat counts (issue 23: 60,000 attributes on one element held
the event loop 8.9 s, quadratic in fhir.resources' XML reading).

Not a test: ``python -m bench.xml.bench_xml_attributes`` prints, for each shape and count, the outcome (read, or
the refusal's status and dac-issue code) and the time ``gateway.fhir.xml.xml_to_resource`` took (best of
``--repeat``), with the time per element or attribute, so that a linear cost shows as a flat last column.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from gateway.errors import GatewayError
from gateway.fhir.xml import xml_to_resource

NS = 'xmlns="http://hl7.org/fhir"'


def unknown_attributes(count: int) -> bytes:
    """``<Bundle a0="1" … >``: attributes FHIR does not define, on one element (refused)."""
    attributes = " ".join(f'a{i}="1"' for i in range(count))
    return f'<Bundle {NS} {attributes}><type value="collection"/></Bundle>'.encode()


def fhir_attributes(count: int) -> bytes:
    """``count`` attributes FHIR defines (``id`` and ``value``), two on each of count/2 ``given`` elements, ten to
    an entry (read while under the bounds)."""
    per_entry = 10
    entries = max(1, count // (2 * per_entry))
    names = "".join(f'<given id="g{i}" value="G{i}"/>' for i in range(per_entry))
    entry = f"<entry><resource><Patient><name>{names}</name></Patient></resource></entry>"
    return f'<Bundle {NS}><type value="collection"/>{entry * entries}</Bundle>'.encode()


def elements(count: int) -> bytes:
    """A collection Bundle of Patients, about ``count`` elements in all (read while under the bound)."""
    entry = (
        '<entry><resource><Patient><identifier><system value="urn:oid:1.2.250.1.213.1.4.8"/>'
        '<value value="1234567890123"/></identifier><name><family value="Martin"/>'
        + '<given value="Anne"/>' * 11
        + '</name><gender value="female"/><birthDate value="1941-06-14"/></Patient></resource></entry>'
    )  # 21 elements: a thousand entries (the most a Bundle has) hold more than MAX_XML_ELEMENTS
    return f'<Bundle {NS}><type value="collection"/>{entry * max(1, count // 21)}</Bundle>'.encode()


def repeats(count: int) -> bytes:
    """``count`` same-named siblings (``<identifier>``) in one Patient (read while under the bound)."""
    identifiers = "".join(f'<identifier><value value="{i}"/></identifier>' for i in range(count))
    return f"<Patient {NS}>{identifiers}</Patient>".encode()


SHAPES: dict[str, tuple[Callable[[int], bytes], list[int]]] = {
    "unknown attributes on one element": (unknown_attributes, [10, 1_000, 10_000, 60_000, 100_000]),
    "FHIR attributes (id, value)": (fhir_attributes, [100, 1_000, 4_000, 8_000, 40_000]),
    "elements (Bundle of Patients)": (elements, [1_050, 5_250, 10_500, 19_950, 21_000, 200_000]),
    "same-named siblings": (repeats, [100, 250, 500, 1_000, 2_000, 60_000]),
}


def measure(body: bytes, repeat: int) -> tuple[str, float]:
    best, outcome = float("inf"), "read"
    for _ in range(repeat):
        started = time.perf_counter()
        try:
            xml_to_resource(body)
            outcome = "read"
        except GatewayError as error:
            outcome = f"{error.status_code} {error.issues[0].code}"
        best = min(best, time.perf_counter() - started)
    return outcome, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs per point (the best is kept)")
    args = parser.parse_args()
    xml_to_resource(elements(11))  # warm-up: fhir.resources' first read imports its models
    print(f"{'shape':<36} {'count':>8} {'bytes':>10} {'outcome':<32} {'ms':>9} {'µs/unit':>8}")
    for name, (make, counts) in SHAPES.items():
        for count in counts:
            body = make(count)
            outcome, seconds = measure(body, args.repeat)
            print(
                f"{name:<36} {count:>8} {len(body):>10} {outcome:<32} {seconds * 1000:>9.1f} "
                f"{seconds * 1e6 / count:>8.2f}"
            )


if __name__ == "__main__":
    main()

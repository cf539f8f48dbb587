"""Reading HL7 v2 (ER7): character sets from MSH-18, escapes, segment ends; the ACK written back; and, by
hypothesis, that whatever the bytes a message is read and mapped or refused with a client error naming a place —
never another exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.inbound.er7 import AckError, ack, read_message
from gateway.inbound.hl7v2 import V2Source
from gateway.inbound.mapping import Builder
from gateway.inbound.service import v2_mappings
from tests.support.fuzz import fuzz_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "hl7v2"
DISCHARGE = (EXAMPLES / "ref-i12-discharge.hl7").read_bytes()
FUZZ = fuzz_settings(150)


def test_segment_ends_cr_lf_crlf_read_alike() -> None:
    lf = read_message(DISCHARGE)
    for end in (b"\r", b"\r\n"):
        other = read_message(DISCHARGE.replace(b"\n", end))
        assert [s.fields for s in other.segments] == [s.fields for s in lf.segments]
    assert [s.name for s in lf.segments] == ["MSH", "RF1", "PRD", "PRD", "PID", "DG1", "NTE"]


@pytest.mark.parametrize(
    ("charset", "codec"), [("UNICODE UTF-8", "utf-8"), ("8859/1", "latin-1"), ("8859/15", "iso8859-15"), ("", "ascii")]
)
def test_character_sets(charset: str, codec: str) -> None:
    name = "Thérèse" if codec != "ascii" else "Therese"
    text = f"MSH|^~\\&|A|B|C|D|20250101||REF^I12|1|P|2.5||||||{charset}\rPID|1||||DUBOIS^{name}\r"
    message = read_message(text.encode(codec))
    assert message.value("PID", 5, 1, 2) == name
    # The ACK goes back in the message's character set.
    answer = ack(message, "AE", [AckError("PID^1^5", "207", "x", f"about {name}")])
    assert f"about {name}".encode(codec) in answer


def test_escapes_decoded() -> None:
    text = "MSH|^~\\&|A|B|C|D|20250101||REF^I12|1|P|2.5\rNTE|1||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\r"
    assert read_message(text.encode()).value("NTE", 3) == "a|b^c&d~e\\f"


def test_the_ack_escapes_what_it_echoes() -> None:
    message = read_message(DISCHARGE)
    answer = ack(message, "AE", [AckError("PID^1^3^1^1", "207", "ins-key-invalid", "a|b^c")]).decode()
    msh, msa, err = answer.rstrip("\r").split("\r")
    assert msh.split("|")[8] == "ACK^I12^ACK" and msh.split("|")[2] == "DAC-GATEWAY"
    assert msa == "MSA|AE|CH3R-MSG-000451"
    assert err.split("|")[1:6] == [
        "",
        "PID^1^3^1^1",
        "207^Application internal error^HL70357",
        "E",
        "ins-key-invalid^^dac-issue",
    ]
    assert err.split("|")[8] == "a\\F\\b\\S\\c"


@pytest.mark.parametrize(
    ("raw", "location"),
    [
        (b"", "MSH^1"),
        (b"PID|1\r", "MSH^1"),
        (b"MSH|^~\\", "MSH^1"),
        (b"MSH|^^^^|A\r", "MSH^1^2"),
        (b"MSH|^~\\&|A|B|C|D|1||REF^I12|1|P|2.5||||||KOI8-R\r", "MSH^1^18"),
        (b"MSH|^~\\&|A|B|C|D|1||REF^I12|1|P|2.5\r\x00\x01\x02\r", "MSH^1"),
        (b"MSH|^~\\&|A|B|C|D|1||REF^I12|1|P|2.5\rPID|1||\xff\r", "PID^1^3"),
    ],
)
def test_unreadable_messages_name_the_place(raw: bytes, location: str) -> None:
    with pytest.raises(GatewayError) as caught:
        read_message(raw)
    assert caught.value.status_code == 400
    assert caught.value.issues[0].location == location


def _read_and_map(raw: bytes) -> None:
    try:
        message = read_message(raw)
    except GatewayError as error:
        assert error.status_code in (400, 413), error
        assert error.issues[0].location, error
        return
    mapping = v2_mappings().get(message.message_type) or v2_mappings()["REF^I12"]
    builder = Builder(message.digest)
    builder.apply(mapping, V2Source(message))
    mapped = builder.finish()
    assert mapped.bundle["type"] == "transaction"
    for issue in mapped.issues:
        assert issue.location


pytestmark = pytest.mark.fuzz


@FUZZ
@given(st.binary(max_size=1500))
@example(b"MSH|")
@example(b"MSH\r")
@example(b"MSH|^~\\&|" + b"|" * 5000)
def test_any_bytes(raw: bytes) -> None:
    _read_and_map(b"MSH|^~\\&|" + raw)
    _read_and_map(raw)


SEPARATORS = st.sampled_from(["|", "^", "~", "\\", "&", "\r", "\n", "\\X00\\", "\\F", "\x00", "é", "\udc80"[:0]])


@FUZZ
@given(st.integers(min_value=0, max_value=len(DISCHARGE)), st.lists(SEPARATORS | st.text(max_size=5), max_size=6))
def test_mutated_discharges_are_mapped_or_refused(position: int, inserted: list[str]) -> None:
    """The valid discharge with separators and odd text put somewhere: mapped (the intake then judges it) or refused
    with a client error and a place."""
    _read_and_map(DISCHARGE[:position] + "".join(inserted).encode("utf-8", "replace") + DISCHARGE[position:])


@pytest.mark.parametrize(
    "inflated",
    [
        DISCHARGE.replace(b"^PI||DUBOIS", b"^PI" + b"~L^^^H&1.2.3&ISO^PI" * 3000 + b"||DUBOIS"),  # repetitions
        DISCHARGE.replace(b"Sortie pr", b"^" * 200_000 + b"Sortie pr"),  # empty components
    ],
)
def test_a_message_split_into_too_many_values_is_refused_before_it_is_split(inflated: bytes) -> None:
    """Under the 2 MB bound, 2 MB of separators made python-hl7 and the mapping hold the event loop for tens of
    seconds (every other request and MLLP connection waiting): more separators than a referral has (50 times the
    examples') are refused before the message is split."""
    with pytest.raises(GatewayError) as refused:
        read_message(inflated)
    (issue,) = refused.value.issues
    assert (str(issue.code), issue.location) == ("body-too-large", "MSH^1")
    assert "separators" in issue.diagnostics

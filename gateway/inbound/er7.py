"""HL7 v2 messages in their ER7 encoding: bytes in, values read by position; and the ACK written back.

Reading (``read_message``), in this order, each step refusing with an ``InvalidRequest`` whose issue names the place
(``Issue.location``: an HL7 v2.5 ERL, ``SEG^sequence^field^repetition^component``):

1. the bytes: at most ``MAX_MESSAGE_BYTES``, starting with ``MSH`` and its five separators;
2. the character set, from MSH-18 read in the raw bytes (MSH is ASCII whatever follows): ``UNICODE UTF-8``,
   ``8859/1``, ``8859/15``, ASCII when empty (DESIGN §13); bytes that are not of it name the segment and field
   they sit in;
3. segment ends: CR, LF or CRLF alike;
4. the separators and segments, by python-hl7 (``hl7``), each value then unescaped (``\\F\\``, ``\\S\\``, ``\\T\\``,
   ``\\R\\``, ``\\E\\``, ``\\Xhh\\``) by our own decoder. Why python-hl7 and not hl7apy: README, "Why python-hl7".

Values are then read by position (``leaf(segment.field(n), repetition, component, subcomponent)``, or
``V2Message.value`` for a segment's first occurrence), absent parts reading as ``""`` — never an IndexError.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import hl7

from gateway.errors import InvalidRequest, Issue, IssueCode

#: A message larger than this is refused before it is read (a referral is a few KB; a CDA inside, tens to hundreds).
MAX_MESSAGE_BYTES = 2 * 1024 * 1024
#: Segments in one message: a referral has tens.
MAX_SEGMENTS = 2000
#: Field, component, repetition and subcomponent separators in one message: a referral has a few hundred (the
#: examples under 200; a Base64 CDA has none). Each is an object python-hl7 makes and the mapping walks: 2 MB of
#: them held the event loop for tens of seconds.
MAX_SEPARATORS = 10_000

#: MSH-18 → Python codec. DESIGN §13: what French hospital systems send.
CHARSETS: dict[str, str] = {
    "": "ascii",
    "ASCII": "ascii",
    "UNICODE UTF-8": "utf-8",
    "8859/1": "latin-1",
    "8859/15": "iso8859-15",
}
_SEGMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]{2}$")

#: One field: its repetitions, each a list of components, each a list of subcomponents.
Field = list[list[list[str]]]


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    occurrence: int  # 1 for the first segment of this name in the message
    fields: list[Field]  # fields[n] is field n (MSH-1 is the field separator, as HL7 numbers them)

    def field(self, number: int) -> Field:
        return self.fields[number] if 0 < number < len(self.fields) else []


@dataclass(frozen=True, slots=True)
class V2Message:
    segments: list[Segment]
    charset: str  # MSH-18 as sent ("" for ASCII)
    raw: bytes

    def all(self, name: str) -> list[Segment]:
        return [segment for segment in self.segments if segment.name == name]

    def first(self, name: str) -> Segment | None:
        return next((segment for segment in self.segments if segment.name == name), None)

    def value(self, name: str, field: int, repetition: int = 1, component: int = 1, subcomponent: int = 1) -> str:
        segment = self.first(name)
        return "" if segment is None else leaf(segment.field(field), repetition, component, subcomponent)

    @property
    def control_id(self) -> str:
        return self.value("MSH", 10)

    @property
    def message_type(self) -> str:
        return f"{self.value('MSH', 9, 1, 1)}^{self.value('MSH', 9, 1, 2)}"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


def leaf(field: Field, repetition: int = 1, component: int = 1, subcomponent: int = 1) -> str:
    """One value of a field, 1-based; ``""`` where the message has nothing."""
    try:
        return (
            field[repetition - 1][component - 1][subcomponent - 1]
            if min(repetition, component, subcomponent) > 0
            else ""
        )
    except IndexError:
        return ""


def erl(segment: str, occurrence: int = 1, *positions: int) -> str:
    """An HL7 v2.5 ERL (error location): ``PID^1^3^1^1``."""
    return "^".join([segment, str(occurrence), *(str(p) for p in positions)])


def _refused(code: IssueCode, message: str, location: str) -> InvalidRequest:
    return InvalidRequest(Issue(code, message, None, "structure", location=location))


def _msh_fields(raw: bytes) -> list[bytes]:
    end = min((i for i in (raw.find(b"\r"), raw.find(b"\n")) if i >= 0), default=len(raw))
    return raw[:end].split(raw[3:4])


def decode(raw: bytes, *, lenient: bool = False) -> tuple[str, str]:
    """The message as text, and MSH-18 as sent. ``lenient``: bytes not of the character set replaced (what the
    ACK of a refused message can still echo of its MSH), an unknown one read as ASCII."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidRequest(
            Issue(
                IssueCode.BODY_TOO_LARGE,
                f"the message has {len(raw)} bytes; the gateway reads at most {MAX_MESSAGE_BYTES}",
                None,
                "too-long",
                location=erl("MSH"),
            )
        )
    raw = raw.lstrip(b"\r\n\t ")
    if len(raw) < 8 or raw[:3] != b"MSH" or raw[3:4].isalnum() or raw[3:4] in b"\r\n":
        raise _refused(IssueCode.HL7V2_UNREADABLE, "an HL7 v2 message starts with an MSH segment", erl("MSH"))
    fields = _msh_fields(raw)
    # MSH-18 is fields[17]: fields[0] is "MSH", and MSH-1 (the separator itself) splits nothing.
    declared = fields[17].split(fields[1][:1] or b"^")[0].decode("ascii", "replace").strip() if len(fields) > 17 else ""
    codec = CHARSETS.get(declared.upper())
    if lenient:
        return raw.decode(codec or "ascii", "replace"), declared if codec else ""
    if codec is None:
        raise _refused(
            IssueCode.HL7V2_ENCODING_INVALID,
            f"MSH-18 names a character set the gateway does not read ({declared[:40]!r}); it reads "
            "UNICODE UTF-8, 8859/1, 8859/15 and ASCII",
            erl("MSH", 1, 18),
        )
    try:
        return raw.decode(codec), declared
    except UnicodeDecodeError as exc:
        raise _refused(
            IssueCode.HL7V2_ENCODING_INVALID,
            f"byte 0x{raw[exc.start]:02X} at offset {exc.start} is not {declared or 'ASCII'} (MSH-18)",
            _place_of(raw, exc.start),
        ) from exc


def _place_of(raw: bytes, offset: int) -> str:
    """The ERL of the segment and field holding byte ``offset`` (separators are ASCII in every charset we read)."""
    before = raw[:offset].replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    lines = before.split(b"\r")
    names = [line[:3] for line in lines]
    current = lines[-1]
    name = current[:3].decode("ascii", "replace")
    occurrence = sum(1 for n in names if n == current[:3])
    field = current.count(raw[3:4]) + (1 if name == "MSH" else 0)
    return erl(name if _SEGMENT_NAME.match(name) else "MSH", occurrence, field)


def read_message(raw: bytes, *, lenient: bool = False) -> V2Message:
    text, charset = decode(raw, lenient=lenient)
    text = text.lstrip("\r\n\t ").replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    encoding = text[4:8]
    separator = text[3]
    if len(set(separator + encoding)) != 5 or any(c.isalnum() or c in " \r" for c in separator + encoding):
        raise _refused(
            IssueCode.HL7V2_UNREADABLE,
            "MSH-1 and MSH-2 must give five distinct separators (field, component, repetition, escape, "
            "subcomponent), as |^~\\&",
            erl("MSH", 1, 2),
        )
    separators_in_text = sum(text.count(c) for c in (separator, encoding[0], encoding[1], encoding[3]))
    if separators_in_text > MAX_SEPARATORS:
        raise InvalidRequest(
            Issue(
                IssueCode.BODY_TOO_LARGE,
                f"the message has {separators_in_text} field, component, repetition and subcomponent separators; "
                f"the gateway reads at most {MAX_SEPARATORS}",
                None,
                "too-long",
                location=erl("MSH"),
            )
        )
    lines = [line for line in text.split("\r") if line.strip()]
    if len(lines) > MAX_SEGMENTS:
        raise InvalidRequest(
            Issue(
                IssueCode.BODY_TOO_LARGE,
                f"the message has more than {MAX_SEGMENTS} segments",
                None,
                "too-long",
                location=erl("MSH"),
            )
        )
    for number, line in enumerate(lines, 1):
        if not _SEGMENT_NAME.match(line[:3]) or (len(line) > 3 and line[3] != separator):
            raise _refused(
                IssueCode.HL7V2_UNREADABLE,
                f"segment {number} does not start with a segment name and the field separator ({line[:3]!r})",
                erl(line[:3] if _SEGMENT_NAME.match(line[:3]) else "MSH", 1),
            )
    try:
        parsed = hl7.parse("\r".join(lines))
    except Exception as exc:  # python-hl7 raises IndexError, ParseException… on what it cannot split
        raise _refused(
            IssueCode.HL7V2_UNREADABLE, f"the message cannot be split into segments ({exc})", erl("MSH")
        ) from exc
    separators = _Separators(
        separator, encoding[0], encoding[1], encoding[2], encoding[3], CHARSETS.get(charset.upper(), "ascii")
    )
    counts: dict[str, int] = {}
    segments = []
    for parsed_segment in parsed:
        name = str(parsed_segment[0])
        counts[name] = counts.get(name, 0) + 1
        fields: list[Field] = [[[[name]]]]
        for position, item in enumerate(list(parsed_segment)[1:], 1):
            if name == "MSH" and position <= 2:  # the separators themselves: never unescaped
                fields.append([[[str(item[0]) if len(item) else ""]]])
            else:
                fields.append(_field(separators, item))
        segments.append(Segment(name, counts[name], fields))
    return V2Message(segments, charset, raw)


@dataclass(frozen=True, slots=True)
class _Separators:
    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str
    codec: str

    def unescape(self, value: str) -> str:
        """HL7 escapes decoded (v2.5 §2.7): ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``, ``\\Xhh…\\`` (bytes in the
        message's character set), ``\\.br\\`` a line break; highlighting (``\\H\\``, ``\\N\\``) and other
        formatting dropped; an unknown or unclosed sequence kept as written. Ours, not python-hl7's, which logs the
        value (patient data) on a sequence it cannot read."""
        out: list[str] = []
        position = 0
        while position < len(value):
            start = value.find(self.escape, position)
            end = value.find(self.escape, start + 1) if start >= 0 else -1
            if start < 0 or end < 0:
                out.append(value[position:])
                break
            out.append(value[position:start])
            sequence = value[start + 1 : end]
            simple = {
                "F": self.field, "S": self.component, "T": self.subcomponent, "R": self.repetition, "E": self.escape,
                ".br": "\n", "H": "", "N": "",
            }  # fmt: skip
            if sequence in simple:
                out.append(simple[sequence])
            elif sequence[:1] == "X" and len(sequence) % 2 == 1 and re.fullmatch(r"[0-9A-Fa-f]*", sequence[1:]):
                out.append(bytes.fromhex(sequence[1:]).decode(self.codec, "replace"))
            elif sequence[:1] == ".":
                pass  # formatting commands (.sp, .in, .ti, .sk, .ce, .fi, .nf)
            else:
                out.append(value[start : end + 1])
            position = end + 1
        return "".join(out)


def _field(separators: _Separators, item: Any) -> Field:
    def text(value: Any) -> str:
        value = str(value)
        return separators.unescape(value) if separators.escape in value else value

    field: Field = []
    for repetition in item:
        if isinstance(repetition, str):
            field.append([[text(repetition)]])
        else:
            field.append(
                [
                    [text(component)] if isinstance(component, str) else [text(s) for s in component]
                    for component in repetition
                ]
            )
    return field


# ---------------------------------------------------------------------------------------------------------------
# The answer


def escape(text: str) -> str:
    """A value made safe for a field: the separators escaped, segment ends folded to spaces."""
    return (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
        .replace("\r", " ")
        .replace("\n", " ")
    )


#: HL7 table 0357 (message error condition codes) for what the gateway reports.
APPLICATION_ERROR = "207"
_CONDITION_NAMES = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "207": "Application internal error",
}


@dataclass(frozen=True, slots=True)
class AckError:
    location: str  # ERL, or "" when the issue has no place in the message
    condition: str  # HL7 table 0357
    code: str  # dac-issue
    message: str


def ack(
    message: V2Message | None,
    code: str,
    errors: Sequence[AckError] = (),
    text: str = "",
    at: datetime | None = None,
) -> bytes:
    """The ACK (original mode) for ``message`` (None: unreadable, an ACK with what could be read of nothing),
    in the message's character set. Its control id derives from the message's and what it answers, so a replayed
    message's ACK is its first one."""
    msh = message.first("MSH") if message is not None else None

    def get(field: int, component: int = 1) -> str:
        return escape(leaf(msh.field(field), 1, component)) if msh is not None else ""

    def whole(field: int) -> str:
        if msh is None:
            return ""
        return "^".join("&".join(escape(s) for s in c) for c in (msh.field(field) or [[[""]]])[0])

    stamp = (at or datetime.now(UTC)).strftime("%Y%m%d%H%M%S+0000")
    control = hashlib.sha256(f"{get(10)}|{code}|{text}".encode()).hexdigest()[:20].upper()
    charset = message.charset if message is not None else ""
    event = get(9, 2)
    segments = [
        "|".join(
            [
                "MSH",
                "^~\\&",
                whole(5),
                whole(6),
                whole(3),
                whole(4),
                stamp,
                "",
                f"ACK^{event}^ACK" if event else "ACK",
                control,
                get(11) or "P",
                "2.5",
                "",
                "",
                "",
                "",
                "",
                escape(charset),
            ]
        ),
        "|".join(["MSA", code, get(10), escape(text)[:200]] if text else ["MSA", code, get(10)]),
    ]
    for error in errors:
        name = _CONDITION_NAMES.get(error.condition, "")
        segments.append(
            "|".join(
                [
                    "ERR",
                    "",
                    error.location,
                    f"{error.condition}^{name}^HL70357",
                    "E",
                    f"{escape(error.code)}^^dac-issue",
                    "",
                    "",
                    escape(error.message),
                ]
            )
        )
    codec = CHARSETS.get(charset.upper(), "ascii")
    return ("\r".join(segments) + "\r").encode(codec, "replace")

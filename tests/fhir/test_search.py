from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import InvalidRequest
from gateway.fhir.search import (
    LOCAL_TIME_ZONE,
    MAX_SEARCH_PARAMETERS,
    Cursor,
    DateValue,
    Include,
    IndexEntry,
    Summary,
    TokenValue,
    date_period,
    fold,
    index_entries,
    paging_instant,
    parse_search,
    split_reference,
)


def _parse(resource_type: str, *params: tuple[str, str]):  # type: ignore[no-untyped-def]
    return parse_search(resource_type, list(params), default_count=20, max_count=100)


def test_index_entries_of_a_service_request() -> None:
    service_request = {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": "urn:sys", "value": "A-1"}],
        "status": "active",
        "intent": "order",
        "code": {
            "coding": [{"system": "https://fhir.dac-gateway.org/CodeSystem/dac-mission", "code": "pathway-support"}]
        },
        "subject": {"reference": "Patient/p1"},
        "requester": {"reference": "PractitionerRole/r1"},
    }
    entries = set(index_entries(service_request))
    assert IndexEntry("identifier", "urn:sys", "A-1") in entries
    assert IndexEntry("status", None, "active") in entries
    assert IndexEntry("code", "https://fhir.dac-gateway.org/CodeSystem/dac-mission", "pathway-support") in entries
    assert IndexEntry("subject", "Patient", "p1") in entries
    assert IndexEntry("patient", "Patient", "p1") in entries
    assert IndexEntry("requester", "PractitionerRole", "r1") in entries


def test_patient_reference_parameter_only_indexes_patients() -> None:
    task = {"resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": "Group/g1"}}
    params = {entry.param for entry in index_entries(task)}
    assert "subject" in params and "patient" not in params


def test_names_are_indexed_as_written_and_folded() -> None:
    """A string's row keeps its text (what :exact compares) and its folded form: case, accents and runs of spaces
    gone (what a search without modifier and :contains compare; R4 search.html#string)."""
    patient = {"resourceType": "Patient", "name": [{"family": "LE  Goff", "given": ["Anne-Marie", "Hélène"]}]}
    entries = set(index_entries(patient))
    assert IndexEntry("family", None, "LE  Goff", "le goff") in entries
    assert IndexEntry("given", None, "Anne-Marie", "anne-marie") in entries
    assert IndexEntry("given", None, "Hélène", "helene") in entries


def test_a_name_is_indexed_once_under_family_and_given() -> None:
    """``name`` searches the ``family`` and ``given`` rows too: its own rows hold only what they do not, the
    name's text — each part of a name is one row, not two (issue 21)."""
    patient = {
        "resourceType": "Patient",
        "name": [{"family": "Martin", "given": ["Anne"], "text": "Anne Martin"}, {"family": "Durand"}],
    }
    assert sorted((entry.param, entry.value) for entry in index_entries(patient)) == [
        ("family", "Durand"),
        ("family", "Martin"),
        ("given", "Anne"),
        ("name", "Anne Martin"),
    ]


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Hélène", "helene"),
        ("LÉROY", "leroy"),
        ("Çédille  Œuvre", "cedille œuvre"),  # œ is a letter of its own, not o + e
        ("Straße", "strasse"),  # case folding, not lower-casing
        ("ﬁlle", "fille"),  # NFKD: the ligature is two letters
        ("E\u0301lodie", "elodie"),  # already decomposed
        ("İlknur", "ilknur"),  # a capital with a dot folds to i + a combining dot, which goes
    ],
)
def test_fold(text: str, folded: str) -> None:
    assert fold(text) == folded


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("Patient/123", ("Patient", "123")),
        ("https://other.example/fhir/Patient/123/_history/2", ("Patient", "123")),
        ("123", (None, "123")),
    ],
)
def test_split_reference(reference: str, expected: tuple[str | None, str]) -> None:
    assert split_reference(reference) == expected


def test_token_forms() -> None:
    query = _parse("Patient", ("identifier", "urn:oid:1.2.250.1.213.1.4.8|141062901908789,|local,plain,sys|"))
    assert query.criteria[0].tokens == (
        TokenValue("urn:oid:1.2.250.1.213.1.4.8", "141062901908789"),
        TokenValue("", "local"),
        TokenValue(None, "plain"),
        TokenValue("sys", None),
    )


def test_result_parameters() -> None:
    query = _parse(
        "ServiceRequest", ("_count", "5"), ("_offset", "10"), ("_sort", "-_lastUpdated"), ("status", "active")
    )
    assert (query.count, query.offset, query.descending) == (5, 10, True)
    assert query.echo == (("_sort", "-_lastUpdated"), ("status", "active"))


def _paris(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=LOCAL_TIME_ZONE).astimezone(UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-23", DateValue("eq", _paris(2026, 11, 23), _paris(2026, 11, 24))),
        ("ge2026-11", DateValue("ge", _paris(2026, 11, 1), _paris(2026, 12, 1))),
        ("lt2026", DateValue("lt", _paris(2026, 1, 1), _paris(2027, 1, 1))),
        ("ne2026-12", DateValue("ne", _paris(2026, 12, 1), _paris(2027, 1, 1))),
        ("2026-03-29", DateValue("eq", _paris(2026, 3, 29), _paris(2026, 3, 30))),  # 23 hours: clocks go forward
        (
            "2026-11-23T10:00:00Z",
            DateValue("eq", datetime(2026, 11, 23, 10, tzinfo=UTC), datetime(2026, 11, 23, 10, 0, 1, tzinfo=UTC)),
        ),
        (
            "le2026-11-23T10:00:00+01:00",
            DateValue("le", datetime(2026, 11, 23, 9, tzinfo=UTC), datetime(2026, 11, 23, 9, 0, 1, tzinfo=UTC)),
        ),
    ],
)
def test_last_updated_dates(value: str, expected: DateValue) -> None:
    (criterion,) = _parse("Task", ("_lastUpdated", value)).criteria
    assert criterion.dates == (expected,)


def test_a_fraction_of_a_second_is_searched_to_the_millisecond() -> None:
    (criterion,) = _parse("Task", ("deadline", "gt2026-12-04T10:14:25.9Z")).criteria
    start = datetime(2026, 12, 4, 10, 14, 25, 900_000, tzinfo=UTC)
    assert criterion.dates == (DateValue("gt", start, start + timedelta(milliseconds=1)),)


def test_a_date_without_offset_is_indexed_in_paris() -> None:
    """Regression: it was read in UTC, the search's values too, so a deadline 2026-12-05T00:30:00+01:00 was not
    found by deadline=2026-12-05. R4: without a time zone, the server's local time."""
    (winter,) = index_entries({"resourceType": "Patient", "birthDate": "2000-01-15"})
    (summer,) = index_entries({"resourceType": "Patient", "birthDate": "1941-06-14"})
    assert winter == IndexEntry("birthdate", "2000-01-15T23:00:00.000Z", "2000-01-14T23:00:00.000Z")
    assert summer == IndexEntry("birthdate", "1941-06-14T22:00:00.000Z", "1941-06-13T22:00:00.000Z")
    assert _paris(2026, 3, 29) == datetime(2026, 3, 28, 23, tzinfo=UTC)


def test_approximately_is_refused_as_not_supported() -> None:
    """Regression: ap was answered 'is not a FHIR date', as if the date were malformed."""
    with pytest.raises(InvalidRequest) as caught:
        _parse("Patient", ("birthdate", "ap1941-06-14"))
    assert "prefix 'ap' is not supported" in str(caught.value.issues[0].diagnostics)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ([("colour", "blue")], "search-parameter-unknown"),
        ([("owner", "Organization/1")], "search-parameter-unknown"),  # owner is a Task parameter
        ([("_count", "many")], "search-parameter-invalid"),
        ([("_count", "-1")], "search-parameter-invalid"),
        ([("_lastUpdated", "yesterday")], "search-parameter-invalid"),
        ([("_lastUpdated", "ap2026-01-01")], "search-parameter-invalid"),
        ([("_sort", "status")], "search-parameter-invalid"),
        ([("status:contains", "act")], "search-parameter-invalid"),  # :contains is for strings
        ([("status:missing", "maybe")], "search-parameter-invalid"),
        ([("_id:missing", "true")], "search-parameter-invalid"),  # every resource has one
        ([("_lastUpdated:missing", "true")], "search-parameter-invalid"),
        ([("_summary", "short")], "search-parameter-invalid"),
        ([("_total", "exact")], "search-parameter-invalid"),
        ([("_elements", "Status")], "search-parameter-invalid"),
        ([("_elements", "status"), ("_summary", "true")], "search-parameter-invalid"),
        ([("_include", "Patient:general-practitioner")], "search-parameter-invalid"),  # not from ServiceRequest
        ([("_include", "ServiceRequest:status")], "search-parameter-invalid"),  # not a reference
        ([("_include", "ServiceRequest:patient:Group")], "search-parameter-invalid"),
        ([("_include:recurse", "ServiceRequest:patient")], "search-parameter-invalid"),
        ([("_revinclude", "Task:status")], "search-parameter-invalid"),  # not a reference
        ([("_revinclude", "CareTeam:patient")], "search-parameter-invalid"),  # only ever a Patient
        ([("_cursor", "yesterday,abc")], "search-parameter-invalid"),
        ([("_snapshot", "2026-12-07T10:00:00")], "search-parameter-invalid"),  # no offset: not one we wrote
        ([("_snapshot", "0001-01-01T00:00:00+01:00")], "search-parameter-invalid"),  # before datetime.min in UTC
        ([("patient", "Group/1")], "search-parameter-invalid"),
        ([("status", "")], "search-parameter-invalid"),
    ],
)
def test_bad_search_parameters_are_400(params: list[tuple[str, str]], code: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_search("ServiceRequest", params, default_count=20, max_count=100)
    assert caught.value.issues[0].code == code
    assert caught.value.issues[0].expression == params[0][0]


def test_too_many_parameters_are_refused_before_any_sql() -> None:
    # Regression: 1,500 criteria made SQLite's expression tree too large — a 500.
    _parse("ServiceRequest", *[("status", "active")] * MAX_SEARCH_PARAMETERS)
    with pytest.raises(InvalidRequest) as error:
        _parse("ServiceRequest", *[("status", "active")] * (MAX_SEARCH_PARAMETERS + 1))
    assert error.value.issues[0].code == "search-parameter-invalid"


def _utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "start", "end"),
    [
        # Spring forward, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:xx does not exist on the wall clock. It is
        # read with the offset before the change (zoneinfo, fold=0): 02:59 is 03:59 CEST.
        ("2026-03-29T01:59", _utc(2026, 3, 29, 0, 59), _utc(2026, 3, 29, 1, 0)),
        ("2026-03-29T02:00", _utc(2026, 3, 29, 1, 0), _utc(2026, 3, 29, 1, 1)),
        ("2026-03-29T02:59", _utc(2026, 3, 29, 1, 59), _utc(2026, 3, 29, 2, 0)),
        ("2026-03-29T02:59:59", _utc(2026, 3, 29, 1, 59, 59), _utc(2026, 3, 29, 2, 0)),
        ("2026-03-29T02:59:59.999", _utc(2026, 3, 29, 1, 59, 59, 999_000), _utc(2026, 3, 29, 2, 0)),
        ("2026-03-29T03:00", _utc(2026, 3, 29, 1, 0), _utc(2026, 3, 29, 1, 1)),
        ("2026-03-29", _utc(2026, 3, 28, 23), _utc(2026, 3, 29, 22)),  # a 23-hour day
        # Fall back, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:xx happens twice. The first (summer time) is meant.
        ("2026-10-25T01:59:59", _utc(2026, 10, 24, 23, 59, 59), _utc(2026, 10, 25, 0, 0)),
        ("2026-10-25T02:00", _utc(2026, 10, 25, 0, 0), _utc(2026, 10, 25, 0, 1)),
        ("2026-10-25T02:59", _utc(2026, 10, 25, 0, 59), _utc(2026, 10, 25, 1, 0)),
        ("2026-10-25T02:59:59", _utc(2026, 10, 25, 0, 59, 59), _utc(2026, 10, 25, 1, 0)),
        ("2026-10-25T02:59:59.5", _utc(2026, 10, 25, 0, 59, 59, 500_000), _utc(2026, 10, 25, 0, 59, 59, 501_000)),
        ("2026-10-25T03:00", _utc(2026, 10, 25, 2, 0), _utc(2026, 10, 25, 2, 1)),
        ("2026-10-25", _utc(2026, 10, 24, 22), _utc(2026, 10, 25, 23)),  # a 25-hour day
        ("2026-10", _utc(2026, 9, 30, 22), _utc(2026, 10, 31, 23)),
    ],
)
def test_periods_across_the_clock_changes(value: str, start: datetime, end: datetime) -> None:
    """Regression: a minute or second was added on the wall clock, so 2026-03-29T02:59 (skipped by the clocks) was
    the inverted period [01:59Z, 01:00Z) and 2026-10-25T02:59:59 (shown twice) a second an hour long. Below a day
    the length is added in UTC; a day, month, year is still reckoned on the local calendar."""
    assert date_period(value) == (start, end)
    (criterion,) = _parse("Task", ("deadline", value)).criteria
    assert criterion.dates == (DateValue("eq", start, end),)


def test_a_date_of_the_year_1_is_indexed_and_searched() -> None:
    """Regression: Paris kept local mean time (+00:09:21) until 1911, so 0001-01-01 there starts before
    datetime.min in UTC; it overflowed, the value was not indexed and birthdate=0001-01-01 was a 400. The start is
    clamped to datetime.min UTC."""
    earliest = datetime.min.replace(tzinfo=UTC)
    day_end = _utc(1, 1, 1, 23, 50, 39)
    assert date_period("0001-01-01") == (earliest, day_end)
    assert date_period("0001") == (earliest, _utc(1, 12, 31, 23, 50, 39))
    assert date_period("0001-01-01T00:00") == (earliest, _utc(1, 1, 1, 0, 1))  # still after its start
    assert index_entries({"resourceType": "Patient", "birthDate": "0001-01-01"}) == [
        IndexEntry("birthdate", "0001-01-01T23:50:39.000Z", "0001-01-01T00:00:00.000Z")
    ]
    (criterion,) = _parse("Patient", ("birthdate", "0001-01-01")).criteria
    assert criterion.dates == (DateValue("eq", earliest, day_end),)
    assert date_period("0001-01-01T00:00:00Z") == (earliest, _utc(1, 1, 1, 0, 0, 1))  # in UTC it always fitted
    assert date_period("0001-01-01T00:00:00+01:00") == (earliest, _utc(1, 1, 1, 0, 0, 1))  # an offset alike
    assert date_period("9999-12-31T23:00:00-01:00") is None  # past year 9999: still none


def test_the_last_day_of_9999_is_indexed_and_searched() -> None:
    """A common "no end" placeholder: its end, the next local midnight, is past year 9999 and overflowed — not
    indexed, and a 400 when searched. Its period now ends at its local midnight, reckoned in UTC."""
    latest = datetime.max.replace(tzinfo=UTC)
    paris_new_year_10000 = _utc(9999, 12, 31, 23)  # midnight in Paris, UTC+1 in winter
    assert date_period("9999-12-31") == (_utc(9999, 12, 30, 23), paris_new_year_10000)
    assert date_period("9999-12") == (_utc(9999, 11, 30, 23), paris_new_year_10000)
    assert date_period("9999") == (_utc(9998, 12, 31, 23), paris_new_year_10000)
    assert date_period("9999-12-31T23:59:59Z") == (_utc(9999, 12, 31, 23, 59, 59), latest)
    assert index_entries({"resourceType": "Patient", "birthDate": "9999-12-31"}) == [
        IndexEntry("birthdate", "9999-12-31T23:00:00.000Z", "9999-12-30T23:00:00.000Z")
    ]
    (criterion,) = _parse("Patient", ("birthdate", "ge9999-12-31")).criteria
    assert criterion.dates == (DateValue("ge", _utc(9999, 12, 30, 23), paris_new_year_10000),)


def test_result_parameters_of_the_rest_features() -> None:
    query = _parse(
        "ServiceRequest",
        ("_count", "100000"),
        ("_include", "ServiceRequest:patient"),
        ("_revinclude:iterate", "Consent:patient:Patient"),
        ("_summary", "data"),
        ("_totalMethod", "count"),
        ("_snapshot", "2026-12-07T10:00:00.123456Z"),
        ("_cursor", "2026-12-07T09:00:00.000001+01:00,abc-1"),
    )
    assert query.count == 100  # capped, not refused
    assert query.includes == (
        Include("ServiceRequest", "patient", None, reverse=False),
        Include("Consent", "patient", "Patient", reverse=True, iterate=True),
    )
    assert (query.summary, query.summary_count, query.total) == (Summary.DATA, False, True)
    assert query.snapshot == datetime(2026, 12, 7, 10, 0, 0, 123456, tzinfo=UTC)
    assert query.cursor == Cursor(datetime(2026, 12, 7, 8, 0, 0, 1, tzinfo=UTC), "abc-1")
    assert ("_count", "100000") not in query.echo and ("_include", "ServiceRequest:patient") in query.echo
    assert not _parse("ServiceRequest", ("_total", "none")).total
    assert paging_instant(datetime(2026, 12, 7, 8, 0, 0, 1, tzinfo=UTC)) == "2026-12-07T08:00:00.000001Z"


def test_lenient_parsing_lists_what_it_ignored() -> None:
    params = [("colour", "blue"), ("status", "active"), ("_unknown", "1")]
    with pytest.raises(InvalidRequest):
        parse_search("ServiceRequest", params, default_count=20, max_count=100)
    query = parse_search("ServiceRequest", params, default_count=20, max_count=100, lenient=True)
    assert query.ignored == ("colour", "_unknown") and [c.parameter.name for c in query.criteria] == ["status"]
    with pytest.raises(InvalidRequest):  # lenient about names, not about values
        parse_search("ServiceRequest", [("status:contains", "a")], default_count=20, max_count=100, lenient=True)

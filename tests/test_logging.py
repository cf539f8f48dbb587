"""Logs never carry patient data, exceptions included: an exception is logged as its type and its frames, without
its message (pydantic, lxml and hl7 errors quote their input) and without the frames' locals (which hold the
resource being handled) — in JSON lines and in the development console alike."""

from __future__ import annotations

import json

import pytest
import structlog

from gateway.logging import configure_logging

PATIENT = {"family": "DUPONT-SECRET", "ins": "2800575123456"}


def _store(patient: dict[str, str]) -> None:
    resource = {"resourceType": "Patient", "name": [{"family": patient["family"]}]}  # a local holding the data
    try:
        raise ValueError(f"cannot store {resource}")
    except ValueError as exc:
        raise ExceptionGroup("storing failed", [KeyError(patient["ins"])]) from exc


@pytest.mark.parametrize("json_lines", [True, False])
def test_an_exception_is_logged_without_its_values(capsys: pytest.CaptureFixture[str], json_lines: bool) -> None:
    configure_logging("INFO", json=json_lines)
    try:
        try:
            _store(PATIENT)
        except ExceptionGroup:
            structlog.get_logger("gateway.test").exception("store_failed", referral="sr-1")
        output = capsys.readouterr().err
    finally:
        # Back to the stream the other tests log to: a logger first used now would keep capsys's, closed after this
        # test (cache_logger_on_first_use).
        with capsys.disabled():
            configure_logging()
    assert "store_failed" in output and "sr-1" in output
    assert "ExceptionGroup" in output and "ValueError" in output and "KeyError" in output  # what was raised
    assert "_store" in output  # and where
    for value in PATIENT.values():
        assert value not in output
    if json_lines:
        event = json.loads(output.strip().splitlines()[-1])
        assert event["exception"][0]["frames"]

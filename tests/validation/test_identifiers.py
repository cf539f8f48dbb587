from __future__ import annotations

import pytest

from gateway.fhir.france import ins_problem
from gateway.validation.identifiers import (
    finess_problem,
    idnps_problem,
    luhn_valid,
    rpps_problem,
    sirene_problem,
)


@pytest.mark.parametrize(
    "value",
    ["269054958815780", "141062901908789", "278052A00404539", "152099741111836", "238115951221459"],
)
def test_valid_nir(value: str) -> None:
    assert ins_problem(value) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("269054958815781", "key"),
        ("238115951221400", "key"),
        ("278052A00404540", "key"),  # Corsica: 2A counts as 19
        ("27805", "15 characters"),
        ("569054958815780", "15 characters"),  # first digit is the sex
        # Regression (issue 23, item 5): the forms that name no stored INS — a lower-case Corsican department,
        # full-width or Arabic-Indic digits (which \d and int() read as digits) — are refused, not folded.
        ("278052a00418989", "ASCII digits"),
        ("２６９０５４９５８８１５７８０", "ASCII digits"),
        ("٢٦٩٠٥٤٩٥٨٨١٥٧٨٠", "ASCII digits"),
        ("26905495881578٠", "ASCII digits"),
    ],
)
def test_invalid_nir(value: str, reason: str) -> None:
    problem = ins_problem(value)
    assert problem is not None and reason in problem


def test_luhn_keys() -> None:
    assert luhn_valid("10100123453") and not luhn_valid("10100123454")
    assert not luhn_valid("１０１００１２３４５３")  # full-width: not an RPPS as stored
    assert rpps_problem("10100123453") is None and "Luhn" in (rpps_problem("10100123454") or "")
    assert rpps_problem("1010012345") is not None
    assert idnps_problem("810100123453") is None and idnps_problem("810100123454") is not None
    assert finess_problem("750000010") is None and finess_problem("750000011") is not None
    assert finess_problem("2A0000081") is None  # Corsica: shape only
    assert sirene_problem("20000000000014") is None and sirene_problem("20000000000015") is not None
    assert sirene_problem("35600000000051") is None  # La Poste: digit sum divisible by 5

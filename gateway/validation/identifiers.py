"""French national identifiers (DESIGN §8): their shape and check keys, as a table of system → rule.

- INS-NIR / INS-NIA: ``gateway.fhir.france.ins_problem``, the one check of an INS's form.
- RPPS: 11 digits, the last a Luhn key over the first ten; IDNPS = "8" + RPPS, or "0" + ADELI.
- FINESS: 9 characters, the last a Luhn key (Corsican numbers, 2A / 2B, are checked for shape only).
- SIREN / SIRET: 9 / 14 digits, Luhn (La Poste's establishments, SIREN 356000000, use a digit-sum rule).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from gateway.fhir.france import INS_SYSTEMS as INS_SYSTEMS  # re-exported
from gateway.fhir.france import ins_problem
from gateway.referral.identity import (
    ADELI,
    FINESS,
    IDNPS,
    IDNST,
    INS_NIA,
    INS_NIA_TEST,
    INS_NIR,
    INS_NIR_TEST,
    RPPS,
    SIRENE,
)


def luhn_valid(digits: str) -> bool:
    if not (digits.isascii() and digits.isdigit()):  # int() reads full-width digits too
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def rpps_problem(value: str) -> str | None:
    if not (len(value) == 11 and value.isdigit()):
        return "an RPPS number is 11 digits"
    return None if luhn_valid(value) else "the RPPS check digit (Luhn) is wrong"


def adeli_problem(value: str) -> str | None:
    return None if re.fullmatch(r"\d{2}[0-9AB]\d{6}", value) else "an ADELI number is 9 characters"


def idnps_problem(value: str) -> str | None:
    if value.startswith("8"):
        return rpps_problem(value[1:])
    if value.startswith("0"):
        return adeli_problem(value[1:])
    return "an IDNPS is 8 + the RPPS number, or 0 + the ADELI number"


def finess_problem(value: str) -> str | None:
    if re.fullmatch(r"2[AB]\d{7}", value):
        return None
    if not (len(value) == 9 and value.isdigit()):
        return "a FINESS number is 9 characters"
    return None if luhn_valid(value) else "the FINESS check digit (Luhn) is wrong"


def sirene_problem(value: str) -> str | None:
    if not (value.isdigit() and len(value) in (9, 14)):
        return "a SIREN is 9 digits, a SIRET 14"
    if value.startswith("356000000") and len(value) == 14:
        return None if sum(int(c) for c in value) % 5 == 0 else "the SIRET check (La Poste rule) is wrong"
    return None if luhn_valid(value) else f"the {'SIREN' if len(value) == 9 else 'SIRET'} check digit (Luhn) is wrong"


def idnst_problem(value: str) -> str | None:
    """IDNST: a one-character type prefix (1 FINESS, 3 SIRET, …) then the identifier."""
    if value[:1] == "1":
        return finess_problem(value[1:])
    if value[:1] == "3":
        return sirene_problem(value[1:])
    return None if len(value) > 1 else "an IDNST is a type prefix and an identifier"


#: system → rule. Systems not listed are not ours to check.
IDENTIFIER_RULES: Mapping[str, Callable[[str], str | None]] = {
    INS_NIR: ins_problem,
    INS_NIA: ins_problem,
    INS_NIR_TEST: ins_problem,
    INS_NIA_TEST: ins_problem,
    RPPS: rpps_problem,
    ADELI: adeli_problem,
    IDNPS: idnps_problem,
    FINESS: finess_problem,
    SIRENE: sirene_problem,
    IDNST: idnst_problem,
}
TEST_INS_SYSTEMS = frozenset({INS_NIR_TEST, INS_NIA_TEST})

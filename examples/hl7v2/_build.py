#!/usr/bin/env python3
"""Generate the HL7 v2 and CDA examples (examples/hl7v2/, examples/cda/), deterministically.

Run from anywhere:  python examples/hl7v2/_build.py
The people and numbers are those of the FHIR examples (examples/*.json): the same INS with the same five traits,
the same RPPS and FINESS, so that a gateway holding both sees one patient, one professional. Segment ends vary on
purpose (LF, CR, CRLF: the gateway reads all three); character sets too (UTF-8, ISO 8859-15).
"""

from __future__ import annotations

import base64
from pathlib import Path

HERE = Path(__file__).resolve().parent
CDA = HERE.parent / "cda"

SENDER = "MSH|^~\\&|DPI-CH3R|CH3R^1.2.250.1.71.4.2.2.1590789012^ISO|DAC-GATEWAY|DAC|20250311164000+0100||"

DISCHARGE = [
    SENDER + "REF^I12^REF_I12|CH3R-MSG-000451|P|2.5|||AL|NE|FRA|UNICODE UTF-8",
    "RF1|P^En attente^HL70283|U^Urgent^HL70280|SORTIE^Sortie d'hospitalisation^L|||"
    "CH3R-SORTIE-2025-004518^CH3R^1.2.250.1.71.4.2.2.1590789012^ISO|20250311164000+0100|||"
    "^Polypathologie, isolement social, sortie d'hospitalisation^L",
    "PRD|RP^Infirmière de coordination de sortie^HL70286|LAMBERT^Sophie^^^Mme|2 avenue Oscar Lambret^^Lille^^59000^FRA"
    "|^^^Centre hospitalier des Trois Rivières|^WPN^PH^^^^^^^^^03 53 01 20 45||10200234564^RPPS~590789012^FINESS",
    "PRD|PP^Médecin traitant^HL70286|VASSEUR^Antoine^^^Dr||||||10100345676^RPPS",
    "PID|1||238115951221459^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS~CH3R-IPP-0045871^^^CH3R&1.2.250.1.71.4.2.2.1590789012&ISO^PI"
    "||DUBOIS^Jeanne^Marie Thérèse^^^^L~LEFEBVRE^Jeanne^^^^^D||19381103|F|||"
    "27 rue Royale^Appartement 31^Lille^^59000^FRA^H^^59350~^^Roubaix^^^FRA^BDL^^59512||^PRN^PH^^^^^^^^^03 53 01 22 17"
    "|||||||||||||||||||VALI",
    "DG1|1||Z74.2^Besoin d'assistance à domicile^I10",
    "NTE|1||Sortie prévue le 14/03/2025. Patiente vivant seule au 3e étage sans ascenseur ; sa fille habite Lyon.",
]

#: ISO 8859-15 (it has œ, which 8859-1 lacks): the social worker's patient, referred by his GP's practice nurse.
SOCIAL = [
    "MSH|^~\\&|DPI-CLINIQUE|CLINIQUE-PASTEUR^1.2.250.1.71.4.2.2.1310098769^ISO|DAC-GATEWAY|DAC|20250402101500+0200||"
    "REF^I12^REF_I12|CP-000778|P|2.5|||AL|NE|FRA|8859/15",
    "RF1|A^Acceptée^HL70283|R^Routine^HL70280|ORIENT^Orientation^L|||CP-DAC-2025-0778^CP^1.2.250.1.71.4.2.2.1310098769^ISO"
    "|20250402101500+0200|||^Maintien à domicile difficile, suivi cœur^L",
    "PRD|RP^Médecin^HL70286|ROUX^Hélène^^^Dr||||||10100456788^RPPS~310098769^FINESS",
    "PRD|PP^Médecin traitant^HL70286|ROUX^Hélène^^^Dr||||||10100456788^RPPS",
    "PID|1||150028100403144^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||FABRE^Gérard^Louis^^^^L||19500220|M|||"
    "14 rue des Lois^^Toulouse^^31000^FRA^H^^31555~^^Albi^^^FRA^BDL^^81004|||||||||||||||||||||QUAL",
    "NTE|1||Patient suivi pour insuffisance cardiaque ; l'épouse (Mme Œillet-Fabre) souhaite un appui.",
]

#: (file, segments, what changes) for the invalid ones: each one mistake.
INVALID = {
    "invalid-ins-key.hl7": ("238115951221459", "238115951221458"),
    "invalid-missing-trait.hl7": ("||19381103|F|", "|||F|"),
    "invalid-unknown-mission.hl7": ("SORTIE^Sortie d'hospitalisation^L", "HAD^Hospitalisation à domicile^L"),
    "invalid-wrong-type.hl7": ("REF^I12^REF_I12", "ADT^A01^ADT_A01"),
}


def _one_mistake(number: int, old: str, new: str) -> list[str]:
    """The discharge with one change, under its own MSH-10 and RF1-6 (never a replay of the valid one)."""
    return [
        s.replace(old, new).replace("CH3R-MSG-000451", f"CH3R-MSG-00045{number}").replace("004518", f"00451{number}")
        for s in DISCHARGE
    ]


def _write(name: str, segments: list[str], codec: str, end: str) -> None:
    (HERE / name).write_bytes((end.join(segments) + end).encode(codec))


def _mdm(cda: bytes) -> list[str]:
    data = base64.b64encode(cda).decode("ascii")
    return [
        "MSH|^~\\&|DPI-CDS|CDS-BASTIDE^1.2.250.1.71.4.2.2.1330054321^ISO|DAC-GATEWAY|DAC|20250520091000+0200||"
        "MDM^T02^MDM_T02|CDS-DOC-2025-0192|P|2.5|||AL|NE|FRA|UNICODE UTF-8",
        "EVN|T02|20250520091000+0200",
        "PID|1||235088708515648^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||GIRARD^Yvonne^^^^^L||19350809|F",
        "PV1|1|O",
        "TXA|1|11490-0^Lettre de liaison^LN|TX|20250520091000+0200|||||||CDS-DOC-2025-0192||||||AU",
        f"OBX|1|ED|11490-0^Lettre de liaison^LN||^TEXT^XML^Base64^{data}||||||F",
    ]


def main() -> None:
    _write("ref-i12-discharge.hl7", DISCHARGE, "utf-8", "\n")
    _write("ref-i12-8859-15.hl7", SOCIAL, "iso8859-15", "\r")
    _write("mdm-t02-cda.hl7", _mdm((CDA / "lettre-de-liaison-nurse.xml").read_bytes()), "utf-8", "\r\n")
    for number, (name, (old, new)) in enumerate(INVALID.items(), 2):
        _write(name, _one_mistake(number, old, new), "utf-8", "\n")
    # Declares UTF-8 but is written in ISO 8859-1: "Thérèse" is not UTF-8.
    _write("invalid-broken-encoding.hl7", DISCHARGE, "latin-1", "\n")


if __name__ == "__main__":
    main()

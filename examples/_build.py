#!/usr/bin/env python3
"""Generate the DAC Gateway integrator examples (FHIR R4 4.0.1 referral bundles).

Run from anywhere:  python examples/_build.py
It rewrites every example file beside this script, deterministically (fixed UUIDs, fixed dates),
then checks them: check keys (INS-NIR, RPPS, FINESS, SIREN/SIRET), NIR coherent with the identity traits,
references resolved inside each bundle, R4 invariants we rely on, and a parse with fhir.resources.

All people, identifiers and phone numbers are fictional (phone numbers in the ARCEP ranges reserved for
fiction). Identifier key rules: see DESIGN.md section 8.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

Json = dict[str, Any]

# ---------------------------------------------------------------------------------------------------------
# Systems and codes
# ---------------------------------------------------------------------------------------------------------
BASE = "https://fhir.dac-gateway.org"
CS_MISSION = f"{BASE}/CodeSystem/dac-mission"
CS_CARETEAM_ROLE = f"{BASE}/CodeSystem/dac-careteam-role"
CS_MESSAGE_EVENT = f"{BASE}/CodeSystem/dac-message-event"
EXT_GP_LINK = f"{BASE}/StructureDefinition/dac-gp-link"
# Complex extension: sub-extensions "date" (valueDateTime) and "validator" (valueReference to the GP).
EXT_GP_VALIDATION = f"{BASE}/StructureDefinition/dac-gp-validation"

SYS_INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
SYS_RPPS = "https://rpps.esante.gouv.fr"
SYS_IDNPS = "urn:oid:1.2.250.1.71.4.2.1"
SYS_FINESS = "https://finess.esante.gouv.fr"
SYS_SIRENE = "https://sirene.fr"
SYS_IDNST = "urn:oid:1.2.250.1.71.4.2.2"
CS_FR_ID_TYPE = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"

EXT_BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
EXT_INSEE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code"
CS_INSEE_COMMUNE = "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM"
# FR Core 2.1.0 identity reliability: complex extension, sub-extension "identityStatus" (valueCoding bound to
# fr-core-vs-identity-reliability, i.e. CodeSystem fr-core-cs-v2-0445).
EXT_IDENTITY_RELIABILITY = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
CS_IDENTITY_RELIABILITY = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445"

CS_PROFESSION = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
MEDECIN = ("10", "Médecin")
PHARMACIEN = ("21", "Pharmacien")
INFIRMIER = ("60", "Infirmier")

MISSIONS = {
    "information-orientation": "Information et orientation des professionnels",
    "pathway-support": "Appui à l'organisation des parcours complexes",
    "practice-support": "Soutien aux pratiques et initiatives professionnelles",
}
CARETEAM_ROLES = {
    "gp": "Médecin traitant",
    "requester": "Demandeur",
    "coordinator": "Coordinateur",
    "professional": "Professionnel",
    "caregiver": "Aidant",
}
POLICY_TEXT = (
    "Code de la santé publique, art. L1110-12 : information de la personne et droit d'opposition "
    "au partage d'informations au sein de l'équipe de soins"
)

# Deterministic UUIDs: uuid5 of a fixed namespace and "<example>/<key>".
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://fhir.dac-gateway.org/examples")


def fixed_uuid(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


# ---------------------------------------------------------------------------------------------------------
# Check keys (small and clear on purpose: the same rules the gateway enforces)
# ---------------------------------------------------------------------------------------------------------
def luhn_check_digit(payload: str) -> str:
    """Luhn check digit to append to the digit string `payload`."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:  # rightmost payload digit is doubled (it is second from the right once keyed)
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return number.isdigit() and luhn_check_digit(number[:-1]) == number[-1]


def rpps(first10: str) -> str:
    """RPPS: 11 digits, the last a Luhn key over the first 10."""
    assert len(first10) == 10 and first10.isdigit(), first10
    return first10 + luhn_check_digit(first10)


def idnps_from_rpps(rpps_number: str) -> str:
    """IDNPS (national health professional id) of an RPPS-registered professional: '8' + RPPS."""
    return "8" + rpps_number


def finess(first8: str) -> str:
    """FINESS: 9 characters, the last a Luhn key over the first 8 (numeric departments only here)."""
    assert len(first8) == 8 and first8.isdigit(), first8
    return first8 + luhn_check_digit(first8)


def siren(first8: str) -> str:
    """SIREN: 9 digits, Luhn-valid."""
    assert len(first8) == 8 and first8.isdigit(), first8
    return first8 + luhn_check_digit(first8)


def siret(siren_number: str, nic4: str) -> str:
    """SIRET: SIREN + 5-digit NIC whose last digit makes the 14 digits Luhn-valid."""
    assert luhn_valid(siren_number) and len(nic4) == 4 and nic4.isdigit()
    first13 = siren_number + nic4
    return first13 + luhn_check_digit(first13)


def nir_key(nir13: str) -> str:
    """INS-NIR key: 97 - (number mod 97); Corsica department 2A -> 19, 2B -> 18 before computing."""
    assert len(nir13) == 13, nir13
    dept = nir13[5:7].replace("2A", "19").replace("2B", "18")
    number = int(nir13[:5] + dept + nir13[7:])
    return f"{97 - number % 97:02d}"


def nir(gender: str, birth_date: str, birth_insee: str, order: str) -> str:
    """Build a 15-character INS-NIR coherent with the identity traits.

    sex (1 male, 2 female) + yy + mm + the 5 characters of the birth commune's INSEE code (department 2 chars
    + commune 3 digits; overseas: '97' + 3 digits, e.g. 97411; Corsica: 2A/2B + 3 digits, used for births from
    1976 on) + 3-digit birth order + 2-digit key.
    """
    assert gender in ("male", "female")
    assert len(birth_insee) == 5 and len(order) == 3 and order.isdigit()
    sex = "1" if gender == "male" else "2"
    nir13 = sex + birth_date[2:4] + birth_date[5:7] + birth_insee + order
    return nir13 + nir_key(nir13)


# ---------------------------------------------------------------------------------------------------------
# Resource builders (no id, no meta: the gateway assigns ids)
# ---------------------------------------------------------------------------------------------------------
def coding(system: str, code: str, display: str | None = None) -> Json:
    c: Json = {"system": system, "code": code}
    if display:
        c["display"] = display
    return c


def id_type(code: str) -> Json:
    """Identifier type from FR Core's v2-0203 CodeSystem (code only: displays vary between versions)."""
    return {"coding": [coding(CS_FR_ID_TYPE, code)]}


def insee_ext(insee: str) -> Json:
    return {"url": EXT_INSEE, "valueCoding": coding(CS_INSEE_COMMUNE, insee)}


def address(line: list[str], city: str, postal: str, insee: str, use: str | None = None) -> Json:
    a: Json = {"extension": [insee_ext(insee)]}
    if use:
        a["use"] = use
    a.update({"line": line, "city": city, "postalCode": postal})
    return a


def organization(
    name: str,
    addr: Json,
    *,
    finess_number: str | None = None,
    siret_number: str | None = None,
    phone: str | None = None,
) -> tuple[Json, str]:
    """Organization with its FINESS (or SIRET) and the matching IDNST; returns (resource, ifNoneExist)."""
    identifiers: list[Json] = []
    if finess_number:
        identifiers.append({"use": "official", "type": id_type("FINEG"), "system": SYS_FINESS, "value": finess_number})
        identifiers.append(
            {"use": "official", "type": id_type("IDNST"), "system": SYS_IDNST, "value": "1" + finess_number}
        )
        cond = f"identifier={SYS_FINESS}|{finess_number}"
    elif siret_number:
        identifiers.append({"use": "official", "type": id_type("SIRET"), "system": SYS_SIRENE, "value": siret_number})
        identifiers.append(
            {"use": "official", "type": id_type("IDNST"), "system": SYS_IDNST, "value": "3" + siret_number}
        )
        cond = f"identifier={SYS_SIRENE}|{siret_number}"
    else:
        raise ValueError("an organization needs a FINESS or a SIRET")
    org: Json = {"resourceType": "Organization", "identifier": identifiers, "active": True, "name": name}
    if phone:
        org["telecom"] = [{"system": "phone", "value": phone, "use": "work"}]
    org["address"] = [addr]
    return org, cond


def practitioner(
    family: str,
    given: list[str],
    *,
    rpps_number: str | None = None,
    doctor: bool = False,
    local_id: tuple[str, str] | None = None,
) -> tuple[Json, str | None]:
    identifiers: list[Json] = []
    cond = None
    if rpps_number:
        identifiers.append({"use": "official", "type": id_type("RPPS"), "system": SYS_RPPS, "value": rpps_number})
        identifiers.append(
            {
                "use": "official",
                "type": id_type("IDNPS"),
                "system": SYS_IDNPS,
                "value": idnps_from_rpps(rpps_number),
            }
        )
        cond = f"identifier={SYS_RPPS}|{rpps_number}"
    if local_id:
        identifiers.append({"use": "usual", "type": id_type("INTRN"), "system": local_id[0], "value": local_id[1]})
    name: Json = {"use": "official", "family": family, "given": given}
    if doctor:
        name["prefix"] = ["Dr"]
    prac: Json = {"resourceType": "Practitioner"}
    if identifiers:
        prac["identifier"] = identifiers
    prac.update({"active": True, "name": [name]})
    return prac, cond


def practitioner_role(
    practitioner_url: str,
    organization_url: str | None,
    *,
    profession: tuple[str, str] | None = None,
    profession_text: str | None = None,
    phone: str | None = None,
    email: str | None = None,
    local_id: tuple[str, str] | None = None,
) -> Json:
    role: Json = {"resourceType": "PractitionerRole"}
    if local_id:
        role["identifier"] = [{"use": "usual", "type": id_type("INTRN"), "system": local_id[0], "value": local_id[1]}]
    role["active"] = True
    role["practitioner"] = {"reference": practitioner_url}
    if organization_url:
        role["organization"] = {"reference": organization_url}
    if profession or profession_text:
        cc: Json = {}
        if profession:
            cc["coding"] = [coding(CS_PROFESSION, profession[0], profession[1])]
        if profession_text:
            cc["text"] = profession_text
        role["code"] = [cc]
    telecom = []
    if phone:
        telecom.append({"system": "phone", "value": phone, "use": "work"})
    if email:
        telecom.append({"system": "email", "value": email, "use": "work"})
    if telecom:
        role["telecom"] = telecom
    return role


def patient(
    *,
    ins: str,
    family: str,
    given: list[str],
    gender: str,
    birth_date: str,
    birth_insee: str,
    birth_city: str,
    addr: Json,
    usual_family: str | None = None,
    reliability: str | None = None,
    phone: str | None = None,
    gp_url: str | None = None,
) -> Json:
    extensions: list[Json] = []
    if reliability:
        extensions.append(
            {
                "url": EXT_IDENTITY_RELIABILITY,
                "extension": [
                    {
                        "url": "identityStatus",
                        "valueCoding": coding(CS_IDENTITY_RELIABILITY, *reliability.split("|")),
                    }
                ],
            }
        )
    extensions.append(
        {"url": EXT_BIRTH_PLACE, "valueAddress": {"extension": [insee_ext(birth_insee)], "city": birth_city}}
    )
    names: list[Json] = [{"use": "official", "family": family, "given": given}]
    if usual_family:
        names.append({"use": "usual", "family": usual_family, "given": given[:1]})
    pat: Json = {
        "resourceType": "Patient",
        "extension": extensions,
        "identifier": [{"use": "official", "type": id_type("INS-NIR"), "system": SYS_INS_NIR, "value": ins}],
        "name": names,
    }
    if phone:
        pat["telecom"] = [{"system": "phone", "value": phone, "use": "home"}]
    pat.update({"gender": gender, "birthDate": birth_date, "address": [addr]})
    if gp_url:
        pat["generalPractitioner"] = [{"reference": gp_url}]
    return pat


def service_request(
    *,
    system: str,
    value: str,
    mission: str,
    patient_url: str,
    requester_url: str,
    gp_link: str,
    reasons: list[str],
    authored_on: str,
    priority: str | None = None,
    notes: list[tuple[str, str]] | None = None,
    gp_validation: tuple[str, str] | None = None,
) -> Json:
    """`gp_validation` = (dateTime, validator reference): the requester declares the GP already validated."""
    extensions: list[Json] = [{"url": EXT_GP_LINK, "valueCode": gp_link}]
    if gp_validation:
        extensions.append(
            {
                "url": EXT_GP_VALIDATION,
                "extension": [
                    {"url": "date", "valueDateTime": gp_validation[0]},
                    {"url": "validator", "valueReference": {"reference": gp_validation[1]}},
                ],
            }
        )
    sr: Json = {
        "resourceType": "ServiceRequest",
        "extension": extensions,
        "identifier": [{"system": system, "value": value}],
        "status": "active",
        "intent": "order",
    }
    if priority:
        sr["priority"] = priority
    sr.update(
        {
            "code": {"coding": [coding(CS_MISSION, mission, MISSIONS[mission])]},
            "subject": {"reference": patient_url},
            "authoredOn": authored_on,
            "requester": {"reference": requester_url},
            "reasonCode": [{"text": r} for r in reasons],
        }
    )
    if notes:
        # The requester's notes: R4's Annotation.author takes no PractitionerRole, so no author is named here.
        sr["note"] = [{"time": t, "text": text} for t, text in notes]
    return sr


def ref(url: str) -> Json:
    """Literal reference (a fullUrl of the same bundle)."""
    return {"reference": url}


def logical_ref(system: str, value: str, display: str | None = None) -> Json:
    """Logical reference by a national identifier (no resource to point to: a Consent posted on its own)."""
    r: Json = {"identifier": {"system": system, "value": value}}
    if display:
        r["display"] = display
    return r


def consent(*, patient: Json, performer: Json | None, date_time: str, provision: str) -> Json:
    """Consent (L1110-12). `patient` and `performer` are Reference objects: `ref(...)` or `logical_ref(...)`."""
    assert provision in ("permit", "deny")
    res: Json = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                coding("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy", "Privacy Consent")
            ]
        },
        "category": [{"coding": [coding("http://loinc.org", "59284-0")]}],
        "patient": patient,
        "dateTime": date_time,
    }
    if performer:
        res["performer"] = [performer]
    res.update({"policyRule": {"text": POLICY_TEXT}, "provision": {"type": provision}})
    return res


def careteam_role(code: str) -> list[Json]:
    return [{"coding": [coding(CS_CARETEAM_ROLE, code, CARETEAM_ROLES[code])]}]


# ---------------------------------------------------------------------------------------------------------
# Bundle assembly
# ---------------------------------------------------------------------------------------------------------
class Example:
    """Collects the entries of one referral; fullUrls are urn:uuid derived from (example, key)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.entries: list[tuple[str, Json, str | None]] = []

    def url(self, key: str) -> str:
        return "urn:uuid:" + fixed_uuid(self.name, key)

    def add(self, key: str, resource: Json, if_none_exist: str | None = None) -> str:
        self.entries.append((key, resource, if_none_exist))
        return self.url(key)

    def transaction(self, timestamp: str) -> Json:
        entries = []
        for key, res, cond in self.entries:
            request: Json = {"method": "POST", "url": res["resourceType"]}
            if cond:
                request["ifNoneExist"] = cond
            entries.append({"fullUrl": self.url(key), "resource": res, "request": request})
        return {
            "resourceType": "Bundle",
            "identifier": {
                "system": "urn:ietf:rfc:3986",
                "value": "urn:uuid:" + fixed_uuid(self.name, "bundle"),
            },
            "type": "transaction",
            "timestamp": timestamp,
            "entry": entries,
        }

    def message(self, timestamp: str, header: Json, bundle_uuid: str) -> Json:
        header_id = header["id"]
        entries = [{"fullUrl": "urn:uuid:" + header_id, "resource": header}]
        entries += [{"fullUrl": self.url(key), "resource": res} for key, res, _ in self.entries]
        return {
            "resourceType": "Bundle",
            "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:" + bundle_uuid},
            "type": "message",
            "timestamp": timestamp,
            "entry": entries,
        }


def add_ins_patient(ex: Example, *, order: str, **traits: Any) -> str:
    ins = nir(traits["gender"], traits["birth_date"], traits["birth_insee"], order)
    res = patient(ins=ins, **traits)
    return ex.add("patient", res, f"identifier={SYS_INS_NIR}|{ins}")


def add_professional(
    ex: Example,
    key: str,
    *,
    family: str,
    given: list[str],
    rpps_number: str | None,
    doctor: bool = False,
    org: tuple[Json, str] | None = None,
    practitioner_local_id: tuple[str, str] | None = None,
    **role_kw: Any,
) -> str:
    """Adds Practitioner, its Organization (if any) and PractitionerRole; returns the role's fullUrl."""
    prac, prac_cond = practitioner(
        family, given, rpps_number=rpps_number, doctor=doctor, local_id=practitioner_local_id
    )
    role_url = ex.url(key + "-role")
    prac_url = ex.url(key + "-practitioner")
    org_url = None
    if org:
        org_url = ex.url(key + "-organization")
    ex.add(key + "-role", practitioner_role(prac_url, org_url, **role_kw))
    ex.add(key + "-practitioner", prac, prac_cond)
    if org:
        ex.add(key + "-organization", org[0], org[1])
    return role_url


# ---------------------------------------------------------------------------------------------------------
# The examples
# ---------------------------------------------------------------------------------------------------------
VALIDATED = "VALI|Identité validée"

# Patients and professionals that appear in more than one file (same INS / RPPS, same traits everywhere).
HOSPITAL_NURSE_PATIENT: dict[str, Any] = {
    "order": "214",
    "family": "DUBOIS",
    "given": ["Jeanne", "Marie", "Thérèse"],
    "gender": "female",
    "birth_date": "1938-11-03",
    "birth_insee": "59512",
    "birth_city": "Roubaix",
    "addr": address(["27 rue Royale", "Appartement 31"], "Lille", "59000", "59350", use="home"),
    "usual_family": "LEFEBVRE",
    "reliability": VALIDATED,
    "phone": "03 53 01 22 17",
}
HOSPITAL_NURSE = ("LAMBERT", "Sophie", rpps("1020023456"))  # family, given, RPPS
CORSICA_PATIENT: dict[str, Any] = {
    "order": "045",
    "family": "CASANOVA",
    "given": ["Marie-Paule", "Antonia"],
    "gender": "female",
    "birth_date": "1978-05-12",
    "birth_insee": "2A004",
    "birth_city": "Ajaccio",
    "addr": address(["15 cours Napoléon"], "Ajaccio", "20000", "2A004", use="home"),
    "reliability": VALIDATED,
    "phone": "04 65 71 20 04",
}
CORSICA_NEUROLOGIST = ("FERRI", "Julien", rpps("1010089012"))  # family, given, RPPS


def ins_of(traits: dict[str, Any]) -> str:
    return nir(traits["gender"], traits["birth_date"], traits["birth_insee"], traits["order"])


def gp_example(name: str = "referral-gp", sr_value: str = "MSP-BDL-2025-000142") -> Example:
    """The GP (médecin traitant) refers her own patient; Consent permit informed by the GP."""
    ex = Example(name)
    gp_url = ex.url("gp-role")
    patient_url = ex.url("patient")
    ex.add(
        "servicerequest",
        service_request(
            system="https://logiciel-medecin.example.org/fhir/referral-id",
            value=sr_value,
            mission="pathway-support",
            patient_url=patient_url,
            requester_url=gp_url,
            gp_link="self",
            reasons=[
                "Polypathologie (insuffisance cardiaque, diabète de type 2, insuffisance rénale)",
                "Isolement social depuis le décès de son épouse",
                "Chutes répétées à domicile",
            ],
            authored_on="2025-03-10T10:15:00+01:00",
            notes=[
                (
                    "2025-03-10T10:15:00+01:00",
                    "Patient de 83 ans vivant seul, refuse pour l'instant l'entrée en EHPAD. "
                    "Demande d'appui pour organiser le maintien à domicile (aides humaines, "
                    "portage de repas, téléassistance).",
                )
            ],
        ),
    )
    add_ins_patient(
        ex,
        order="087",
        family="LE GOFF",
        given=["Marcel", "Yves"],
        gender="male",
        birth_date="1941-06-14",
        birth_insee="29019",
        birth_city="Brest",
        addr=address(["12 rue des Olivettes"], "Nantes", "44000", "44109", use="home"),
        reliability=VALIDATED,
        phone="02 61 91 10 42",
        gp_url=gp_url,
    )
    ex.add(
        "consent",
        consent(
            patient=ref(patient_url),
            performer=ref(gp_url),
            date_time="2025-03-10T09:50:00+01:00",
            provision="permit",
        ),
    )
    add_professional(
        ex,
        "gp",
        family="MOREAU",
        given=["Claire"],
        rpps_number=rpps("1010012345"),
        doctor=True,
        org=organization(
            "Maison de santé pluriprofessionnelle des Bords de Loire",
            address(["4 quai de la Fosse"], "Nantes", "44000", "44109"),
            finess_number=finess("44001234"),
            phone="02 61 91 10 00",
        ),
        profession=MEDECIN,
        profession_text="Médecin généraliste",
        phone="02 61 91 10 01",
        email="claire.moreau@msp-bords-de-loire.example.org",
    )
    return ex


def hospital_nurse_example() -> Example:
    ex = Example("referral-hospital-nurse")
    patient_url = ex.url("patient")
    nurse_url = ex.url("nurse-role")
    gp_url = ex.url("gp-role")
    ex.add(
        "servicerequest",
        service_request(
            system="https://hopital-exemple.fr/fhir/referral-id",
            value="CH3R-SORTIE-2025-004518",
            mission="pathway-support",
            patient_url=patient_url,
            requester_url=nurse_url,
            gp_link="none",
            reasons=[
                "Polypathologie, isolement social, sortie d'hospitalisation",
                "Perte d'autonomie après fracture du col du fémur",
            ],
            authored_on="2025-03-11T16:40:00+01:00",
            priority="urgent",
            notes=[
                (
                    "2025-03-11T16:40:00+01:00",
                    "Sortie prévue le 14/03/2025. Patiente vivant seule au 3e étage sans ascenseur ; "
                    "sa fille habite Lyon. Besoin d'aide à domicile et de passage infirmier dès le retour. "
                    "Le médecin traitant (Dr Vasseur) a été prévenu par téléphone.",
                )
            ],
        ),
    )
    add_ins_patient(ex, **HOSPITAL_NURSE_PATIENT, gp_url=gp_url)
    ex.add(
        "consent",
        consent(
            patient=ref(patient_url),
            performer=ref(nurse_url),
            date_time="2025-03-11T15:30:00+01:00",
            provision="permit",
        ),
    )
    add_professional(
        ex,
        "nurse",
        family=HOSPITAL_NURSE[0],
        given=[HOSPITAL_NURSE[1]],
        rpps_number=HOSPITAL_NURSE[2],
        org=organization(
            "Centre hospitalier des Trois Rivières",
            address(["2 avenue Oscar Lambret"], "Lille", "59000", "59350"),
            finess_number=finess("59078901"),
            phone="03 53 01 20 00",
        ),
        profession=INFIRMIER,
        profession_text="Infirmière de l'équipe de coordination de sortie",
        phone="03 53 01 20 45",
    )
    add_professional(
        ex,
        "gp",
        family="VASSEUR",
        given=["Antoine"],
        rpps_number=rpps("1010034567"),
        doctor=True,
        org=organization(
            "Maison de santé du Vieux-Lille",
            address(["9 rue de la Monnaie"], "Lille", "59000", "59350"),
            finess_number=finess("59004567"),
        ),
        profession=MEDECIN,
        profession_text="Médecin généraliste",
        phone="03 53 01 21 10",
    )
    return ex


def social_worker_example() -> Example:
    ex = Example("referral-social-worker")
    patient_url = ex.url("patient")
    sw_url = ex.url("socialworker-role")
    gp_url = ex.url("gp-role")
    caregiver_url = ex.url("caregiver")
    ex.add(
        "servicerequest",
        service_request(
            system="https://ccas-toulouse.example.org/fhir/referral-id",
            value="CCAS-ASS-2025-0388",
            mission="information-orientation",
            patient_url=patient_url,
            requester_url=sw_url,
            gp_link="none",
            reasons=[
                "Difficultés de maintien à domicile, épuisement de l'aidante",
                "Méconnaissance des aides existantes (APA, accueil de jour)",
            ],
            authored_on="2025-03-12T11:05:00+01:00",
            notes=[
                (
                    "2025-03-12T11:05:00+01:00",
                    "Rencontré lors d'une visite à domicile. Sa fille, aidante principale, souhaite être "
                    "orientée vers les dispositifs de répit. Patient pas encore informé de la demande : "
                    "information à faire par la plateforme.",
                )
            ],
        ),
    )
    add_ins_patient(
        ex,
        order="031",
        family="FABRE",
        given=["Gérard", "Louis"],
        gender="male",
        birth_date="1950-02-20",
        birth_insee="81004",
        birth_city="Albi",
        addr=address(["5 impasse des Tanneurs"], "Toulouse", "31000", "31555", use="home"),
        phone="05 36 49 31 08",
        gp_url=gp_url,
    )
    ex.add(
        "careteam",
        {
            "resourceType": "CareTeam",
            "status": "active",
            "name": "Équipe de proximité de M. Gérard Fabre",
            "subject": {"reference": patient_url},
            "participant": [
                {"role": careteam_role("gp"), "member": {"reference": gp_url}},
                {"role": careteam_role("requester"), "member": {"reference": sw_url}},
                {"role": careteam_role("caregiver"), "member": {"reference": caregiver_url}},
            ],
        },
    )
    ex.add(
        "caregiver",
        {
            "resourceType": "RelatedPerson",
            "active": True,
            "patient": {"reference": patient_url},
            "relationship": [
                {
                    "coding": [coding("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "DAU", "natural daughter")],
                    "text": "Fille, aidante principale",
                }
            ],
            "name": [{"use": "official", "family": "FABRE", "given": ["Isabelle"]}],
            "telecom": [{"system": "phone", "value": "06 39 98 31 77", "use": "mobile"}],
            "gender": "female",
        },
    )
    # A social worker has no RPPS: her PractitionerRole is identified by her organization (CCAS, SIRET)
    # and the CCAS's local agent identifier.
    ccas_siret = siret(siren("26310999"), "0012")
    add_professional(
        ex,
        "socialworker",
        family="BENALI",
        given=["Nadia"],
        rpps_number=None,
        org=organization(
            "Centre communal d'action sociale de Toulouse",
            address(["3 place Alfonse Jourdain"], "Toulouse", "31000", "31555"),
            siret_number=ccas_siret,
            phone="05 36 49 30 00",
        ),
        profession_text="Assistante de service social",
        phone="05 36 49 30 21",
        email="nadia.benali@ccas-toulouse.example.org",
        local_id=("https://ccas-toulouse.example.org/fhir/agent-id", "ASS-0417"),
    )
    add_professional(
        ex,
        "gp",
        family="ROUX",
        given=["Hélène"],
        rpps_number=rpps("1010045678"),
        doctor=True,
        org=organization(
            "Maison de santé pluriprofessionnelle Saint-Cyprien",
            address(["40 allée Charles de Fitte"], "Toulouse", "31300", "31555"),
            finess_number=finess("31009876"),
        ),
        profession=MEDECIN,
        profession_text="Médecin généraliste",
        phone="05 36 49 31 50",
    )
    return ex


def no_gp_example() -> Example:
    ex = Example("referral-no-gp")
    patient_url = ex.url("patient")
    nurse_url = ex.url("nurse-role")
    ex.add(
        "servicerequest",
        service_request(
            system="https://logiciel-infirmier.example.org/fhir/referral-id",
            value="CSI-BB-2025-00077",
            mission="pathway-support",
            patient_url=patient_url,
            requester_url=nurse_url,
            gp_link="none",
            reasons=[
                "Sans médecin traitant depuis le départ en retraite de son médecin",
                "Plaies chroniques des membres inférieurs, perte d'autonomie",
            ],
            authored_on="2025-03-13T08:30:00+01:00",
            notes=[
                (
                    "2025-03-13T08:30:00+01:00",
                    "Patiente suivie à domicile pour pansements quotidiens. Aucun médecin ne la suit "
                    "actuellement ; renouvellements d'ordonnance en difficulté.",
                )
            ],
        ),
    )
    add_ins_patient(
        ex,
        order="156",
        family="GIRARD",
        given=["Yvonne"],
        gender="female",
        birth_date="1935-08-09",
        birth_insee="87085",
        birth_city="Limoges",
        addr=address(["18 rue de la Benauge"], "Bordeaux", "33100", "33063", use="home"),
    )
    ex.add(
        "consent",
        consent(
            patient=ref(patient_url),
            performer=ref(nurse_url),
            date_time="2025-03-12T18:10:00+01:00",
            provision="permit",
        ),
    )
    add_professional(
        ex,
        "nurse",
        family="NGUYEN",
        given=["Thomas"],
        rpps_number=rpps("1020056789"),
        org=organization(
            "Centre de soins infirmiers de La Bastide",
            address(["61 avenue Thiers"], "Bordeaux", "33100", "33063"),
            finess_number=finess("33005432"),
        ),
        profession=INFIRMIER,
        profession_text="Infirmier",
        phone="05 36 49 33 12",
    )
    return ex


def opposition_example() -> Example:
    ex = Example("referral-opposition")
    patient_url = ex.url("patient")
    requester_url = ex.url("geriatrician-role")
    gp_url = ex.url("gp-role")
    ex.add(
        "servicerequest",
        service_request(
            system="https://hopital-exemple.fr/fhir/referral-id",
            value="HRS-GER-2025-001203",
            mission="pathway-support",
            patient_url=patient_url,
            requester_url=requester_url,
            gp_link="linked-physician",
            reasons=[
                "Troubles cognitifs débutants, refus des aides à domicile",
                "Hospitalisations répétées pour décompensation cardiaque",
            ],
            authored_on="2025-03-14T14:20:00+01:00",
            notes=[
                (
                    "2025-03-14T14:20:00+01:00",
                    "Le patient, informé de la demande d'appui au DAC, s'y oppose. Demande transmise pour "
                    "enregistrement de l'opposition.",
                )
            ],
        ),
    )
    add_ins_patient(
        ex,
        order="302",
        family="BERNARD",
        given=["Lucien", "Joseph"],
        gender="male",
        birth_date="1945-04-27",
        birth_insee="67482",
        birth_city="Strasbourg",
        addr=address(["7 rue du Jeu-des-Enfants"], "Strasbourg", "67000", "67482", use="home"),
        gp_url=gp_url,
    )
    ex.add(
        "consent",
        consent(
            patient=ref(patient_url),
            performer=ref(requester_url),
            date_time="2025-03-14T11:00:00+01:00",
            provision="deny",
        ),
    )
    add_professional(
        ex,
        "geriatrician",
        family="KELLER",
        given=["Mathilde"],
        rpps_number=rpps("1010067890"),
        doctor=True,
        org=organization(
            "Hôpital Rhin-Sud, service de gériatrie",
            address(["1 place de l'Hôpital"], "Strasbourg", "67000", "67482"),
            finess_number=finess("67001122"),
        ),
        profession=MEDECIN,
        profession_text="Médecin gériatre",
        phone="03 53 01 67 40",
    )
    add_professional(
        ex,
        "gp",
        family="SCHMITT",
        given=["Paul"],
        rpps_number=rpps("1010078901"),
        doctor=True,
        profession=MEDECIN,
        profession_text="Médecin généraliste",
        phone="03 53 01 67 90",
    )
    return ex


def corsica_example() -> Example:
    ex = Example("referral-corsica")
    patient_url = ex.url("patient")
    requester_url = ex.url("neurologist-role")
    gp_url = ex.url("gp-role")
    ex.add(
        "servicerequest",
        service_request(
            system="https://hopital-exemple.fr/fhir/referral-id",
            value="CHC-NEURO-2025-000619",
            mission="pathway-support",
            patient_url=patient_url,
            requester_url=requester_url,
            gp_link="none",
            reasons=[
                "Sclérose en plaques d'évolution secondairement progressive",
                "Retour à domicile à Ajaccio après hospitalisation sur le continent",
            ],
            authored_on="2025-03-17T09:45:00+01:00",
            notes=[
                (
                    "2025-03-17T09:45:00+01:00",
                    "Coordination à organiser sur Ajaccio : kinésithérapie, aides humaines, aménagement du "
                    "logement. Médecin traitant : Dr Peretti.",
                )
            ],
        ),
    )
    add_ins_patient(ex, **CORSICA_PATIENT, gp_url=gp_url)
    ex.add(
        "consent",
        consent(
            patient=ref(patient_url),
            performer=ref(requester_url),
            date_time="2025-03-17T09:00:00+01:00",
            provision="permit",
        ),
    )
    add_professional(
        ex,
        "neurologist",
        family=CORSICA_NEUROLOGIST[0],
        given=[CORSICA_NEUROLOGIST[1]],
        rpps_number=CORSICA_NEUROLOGIST[2],
        doctor=True,
        org=organization(
            "Centre hospitalier des Calanques",
            address(["264 rue Saint-Pierre"], "Marseille", "13005", "13055"),
            finess_number=finess("13004455"),
        ),
        profession=MEDECIN,
        profession_text="Neurologue",
        phone="04 65 71 13 05",
    )
    add_professional(
        ex,
        "gp",
        family="PERETTI",
        given=["Antoine"],
        rpps_number=rpps("1010090123"),
        doctor=True,
        profession=MEDECIN,
        profession_text="Médecin généraliste",
        phone="04 65 71 20 99",
    )
    return ex


def overseas_example() -> Example:
    ex = Example("referral-overseas")
    patient_url = ex.url("patient")
    requester_url = ex.url("pharmacist-role")
    gp_url = ex.url("gp-role")
    ex.add(
        "servicerequest",
        service_request(
            system="https://logiciel-officine.example.org/fhir/referral-id",
            value="PHB-2025-0012",
            mission="practice-support",
            patient_url=patient_url,
            requester_url=requester_url,
            gp_link="none",
            reasons=[
                "Polymédication (12 lignes) et erreurs de prise répétées",
                "Diabète déséquilibré, isolement",
            ],
            authored_on="2025-03-18T10:00:00+04:00",
            notes=[
                (
                    "2025-03-18T10:00:00+04:00",
                    "Demande d'appui pour mettre en place une préparation des doses à administrer et un "
                    "passage infirmier, en lien avec le médecin traitant.",
                )
            ],
        ),
    )
    add_ins_patient(
        ex,
        order="118",
        family="PAYET",
        given=["Jean-Claude"],
        gender="male",
        birth_date="1952-09-30",
        birth_insee="97411",
        birth_city="Saint-Denis",
        addr=address(["42 rue de Paris"], "Saint-Denis", "97400", "97411", use="home"),
        reliability=VALIDATED,
        phone="06 39 98 74 11",
        gp_url=gp_url,
    )
    ex.add(
        "consent",
        consent(
            patient=ref(patient_url),
            performer=ref(requester_url),
            date_time="2025-03-18T09:30:00+04:00",
            provision="permit",
        ),
    )
    add_professional(
        ex,
        "pharmacist",
        family="HOARAU",
        given=["Aurélie"],
        rpps_number=rpps("1020001234"),
        org=organization(
            "Pharmacie du Barachois",
            address(["8 place Sarda Garriga"], "Saint-Denis", "97400", "97411"),
            finess_number=finess("97040123"),
        ),
        profession=PHARMACIEN,
        profession_text="Pharmacien d'officine",
        phone="06 39 98 74 00",
    )
    add_professional(
        ex,
        "gp",
        family="GRONDIN",
        given=["Laurent"],
        rpps_number=rpps("1010001357"),
        doctor=True,
        profession=MEDECIN,
        profession_text="Médecin généraliste",
        phone="06 39 98 74 50",
    )
    return ex


def message_gp() -> Json:
    # Same resources as referral-gp.json, but its own ServiceRequest identifier: posting both examples to one
    # gateway must give two referrals, not an idempotent replay.
    ex = gp_example(name="referral-gp", sr_value="MSP-BDL-2025-000143")
    header = {
        "resourceType": "MessageHeader",
        "id": fixed_uuid("message-referral-gp", "messageheader"),
        "eventCoding": coding(CS_MESSAGE_EVENT, "referral-request", "Demande d'appui"),
        "sender": {"reference": ex.url("gp-role")},
        "source": {
            "name": "Logiciel médecin (exemple)",
            "software": "Logiciel médecin",
            "endpoint": "https://logiciel-medecin.example.org/fhir",
        },
        "focus": [{"reference": ex.url("servicerequest")}],
    }
    return ex.message("2025-03-10T10:15:30+01:00", header, fixed_uuid("message-referral-gp", "bundle"))


def nurse_pta_2016_example() -> Example:
    """A community nurse refers a Valenciennes patient whose GP is known: dac-59-hainaut (policy pta-2016)
    holds the referral until the GP validates it."""
    ex = Example("referral-nurse-pta-2016")
    patient_url = ex.url("patient")
    nurse_url = ex.url("nurse-role")
    gp_url = ex.url("gp-role")
    ex.add(
        "servicerequest",
        service_request(
            system="https://logiciel-infirmier.example.org/fhir/referral-id",
            value="IDEL-VAL-2025-00031",
            mission="pathway-support",
            patient_url=patient_url,
            requester_url=nurse_url,
            gp_link="none",
            reasons=[
                "Dénutrition et perte d'autonomie depuis trois mois",
                "Épuisement de l'épouse, aidante principale",
            ],
            authored_on="2025-03-19T13:10:00+01:00",
            notes=[
                (
                    "2025-03-19T13:10:00+01:00",
                    "Patient suivi à domicile pour soins d'hygiène et surveillance du poids. Besoin d'un bilan "
                    "global et d'aides humaines. Le médecin traitant (Dr Delcourt) n'a pas encore donné son avis "
                    "sur cette demande.",
                )
            ],
        ),
    )
    add_ins_patient(
        ex,
        order="129",
        family="LEROY",
        given=["Roger", "André"],
        gender="male",
        birth_date="1947-10-05",
        birth_insee="59178",
        birth_city="Douai",
        addr=address(["22 avenue de Saint-Amand"], "Valenciennes", "59300", "59606", use="home"),
        reliability=VALIDATED,
        phone="03 53 01 59 31",
        gp_url=gp_url,
    )
    ex.add(
        "consent",
        consent(
            patient=ref(patient_url),
            performer=ref(nurse_url),
            date_time="2025-03-19T12:40:00+01:00",
            provision="permit",
        ),
    )
    add_professional(
        ex,
        "nurse",
        family="LEMAIRE",
        given=["Camille"],
        rpps_number=rpps("1020013579"),
        org=organization(
            "Cabinet infirmier du Faubourg de Cambrai",
            address(["5 rue du Faubourg de Cambrai"], "Valenciennes", "59300", "59606"),
            siret_number=siret(siren("81234567"), "0018"),
        ),
        profession=INFIRMIER,
        profession_text="Infirmière libérale",
        phone="03 53 01 59 02",
    )
    add_professional(
        ex,
        "gp",
        family="DELCOURT",
        given=["Martine"],
        rpps_number=rpps("1010024680"),
        doctor=True,
        profession=MEDECIN,
        profession_text="Médecin généraliste",
        phone="03 53 01 59 70",
    )
    return ex


def gp_validated_example() -> Example:
    """A hospital physician refers a Quimper patient (dac-29, policy pta-2016) and declares that the GP already
    validated the request (dac-gp-validation): no wait for the GP."""
    ex = Example("referral-gp-validated")
    patient_url = ex.url("patient")
    requester_url = ex.url("physician-role")
    gp_url = ex.url("gp-role")
    ex.add(
        "servicerequest",
        service_request(
            system="https://ch-odet.example.org/fhir/referral-id",
            value="CHO-MPO-2025-000287",
            mission="pathway-support",
            patient_url=patient_url,
            requester_url=requester_url,
            gp_link="none",
            reasons=[
                "Retour à domicile après un accident vasculaire cérébral, hémiparésie droite",
                "Logement inadapté, conjoint lui-même dépendant",
            ],
            authored_on="2025-03-20T11:30:00+01:00",
            notes=[
                (
                    "2025-03-20T11:30:00+01:00",
                    "Sortie prévue le 25/03/2025. Le Dr Kergoat, médecin traitant, a validé la demande d'appui "
                    "par téléphone le 18/03/2025.",
                )
            ],
            gp_validation=("2025-03-18T17:45:00+01:00", ex.url("gp-practitioner")),
        ),
    )
    add_ins_patient(
        ex,
        order="263",
        family="TANGUY",
        given=["Anne-Marie", "Louise"],
        gender="female",
        birth_date="1944-01-22",
        birth_insee="29151",
        birth_city="Morlaix",
        addr=address(["14 rue de Kerfeunteun"], "Quimper", "29000", "29232", use="home"),
        reliability=VALIDATED,
        phone="02 61 91 29 63",
        gp_url=gp_url,
    )
    ex.add(
        "consent",
        consent(
            patient=ref(patient_url),
            performer=ref(requester_url),
            date_time="2025-03-20T10:00:00+01:00",
            provision="permit",
        ),
    )
    add_professional(
        ex,
        "physician",
        family="LE BRIS",
        given=["Gaëlle"],
        rpps_number=rpps("1010035791"),
        doctor=True,
        org=organization(
            "Centre hospitalier de l'Odet, service de médecine polyvalente",
            address(["10 avenue de l'Hôpital"], "Quimper", "29000", "29232"),
            finess_number=finess("29001357"),
            phone="02 61 91 29 00",
        ),
        profession=MEDECIN,
        profession_text="Médecin interniste",
        phone="02 61 91 29 41",
    )
    add_professional(
        ex,
        "gp",
        family="KERGOAT",
        given=["Yann"],
        rpps_number=rpps("1010046802"),
        doctor=True,
        profession=MEDECIN,
        profession_text="Médecin généraliste",
        phone="02 61 91 29 80",
    )
    return ex


def consent_opposition() -> Json:
    """The patient of referral-hospital-nurse.json objects, afterwards: a lone Consent for POST /fhir/Consent, the
    patient referenced by INS (logical reference), the nurse who records it by RPPS."""
    family, given, rpps_number = HOSPITAL_NURSE
    traits = HOSPITAL_NURSE_PATIENT
    return consent(
        patient=logical_ref(
            SYS_INS_NIR,
            ins_of(traits),
            f"{traits['given'][0]} {traits['usual_family']}, née {traits['family']}",
        ),
        performer=logical_ref(SYS_RPPS, rpps_number, f"{given} {family}"),
        date_time="2025-03-12T10:20:00+01:00",
        provision="deny",
    )


def message_opposition() -> Json:
    """An opposition as a message: MessageHeader (event opposition, focus the Consent), the Patient (the same as
    referral-corsica.json) and the Consent deny, recorded by her neurologist (logical reference by RPPS)."""
    ex = Example("message-opposition")
    patient_url = add_ins_patient(ex, **CORSICA_PATIENT)
    family, given, rpps_number = CORSICA_NEUROLOGIST
    consent_url = ex.add(
        "consent",
        consent(
            patient=ref(patient_url),
            performer=logical_ref(SYS_RPPS, rpps_number, f"Dr {given} {family}"),
            date_time="2025-03-21T15:05:00+01:00",
            provision="deny",
        ),
    )
    header = {
        "resourceType": "MessageHeader",
        "id": fixed_uuid("message-opposition", "messageheader"),
        "eventCoding": coding(CS_MESSAGE_EVENT, "opposition", "Opposition du patient"),
        "source": {
            "name": "Logiciel hospitalier (exemple)",
            "software": "Logiciel hospitalier",
            "endpoint": "https://hopital-exemple.fr/fhir",
        },
        "focus": [{"reference": consent_url}],
    }
    return ex.message("2025-03-21T15:05:30+01:00", header, fixed_uuid("message-opposition", "bundle"))


# ---------------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------------
def identifiers(node: Any) -> Any:
    """Every Identifier under `node`: resources' identifier lists and logical references' identifier."""
    if isinstance(node, dict):
        found = node.get("identifier")
        if isinstance(found, dict):
            yield found
        elif isinstance(found, list):
            yield from (i for i in found if isinstance(i, dict))
        for v in node.values():
            yield from identifiers(v)
    elif isinstance(node, list):
        for v in node:
            yield from identifiers(v)


def key_errors(node: Any) -> list[str]:
    """Check keys of every INS-NIR, RPPS, FINESS and SIRET under `node`."""
    errors: list[str] = []
    for ident in identifiers(node):
        system, value = ident.get("system"), ident.get("value", "")
        if system == SYS_INS_NIR and not (len(value) == 15 and value[-2:] == nir_key(value[:13])):
            errors.append(f"INS-NIR key {value}")
        if system == SYS_RPPS and not (len(value) == 11 and luhn_valid(value)):
            errors.append(f"RPPS key {value}")
        if system == SYS_FINESS and not (len(value) == 9 and luhn_valid(value)):
            errors.append(f"FINESS key {value}")
        if system == SYS_SIRENE and not (len(value) == 14 and luhn_valid(value) and luhn_valid(value[:9])):
            errors.append(f"SIRET key {value}")
    return errors


def consent_errors(res: Json) -> list[str]:
    errors: list[str] = []
    if not (res.get("policy") or res.get("policyRule")):
        errors.append("Consent violates ppc-1")
    if not res.get("patient"):
        errors.append("Consent violates ppc-2")
    return errors


def check_bundle(fname: str, bundle: Json) -> list[str]:
    errors: list[str] = []

    def err(msg: str) -> None:
        errors.append(f"{fname}: {msg}")

    full_urls = [e["fullUrl"] for e in bundle["entry"]]
    if len(set(full_urls)) != len(full_urls):
        err("duplicate fullUrl")
    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str):
                yield node["reference"]
            for v in node.values():
                yield from walk(v)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v)

    for ref in walk(bundle["entry"]):
        if ref not in by_url:
            err(f"unresolved reference {ref}")

    for e in bundle["entry"]:
        res = e["resource"]
        rt = res["resourceType"]
        if bundle["type"] == "transaction":
            if e["request"]["url"] != rt or e["request"]["method"] != "POST":
                err(f"bad request on {rt}")
        elif "request" in e:
            err("request element in a message bundle")
        if rt != "MessageHeader" and ("id" in res or "meta" in res):
            err(f"{rt} carries id/meta")
        for msg in key_errors(res):
            err(msg)
        if rt == "Practitioner":
            ids = {i["system"]: i["value"] for i in res.get("identifier", [])}
            if SYS_RPPS in ids and ids.get(SYS_IDNPS) != "8" + ids[SYS_RPPS]:
                err("IDNPS is not 8 + RPPS")
        if rt == "Patient":
            ins = next(i["value"] for i in res["identifier"] if i["system"] == SYS_INS_NIR)
            bp = next(x for x in res["extension"] if x["url"] == EXT_BIRTH_PLACE)
            birth_insee = bp["valueAddress"]["extension"][0]["valueCoding"]["code"]
            sex = "1" if res["gender"] == "male" else "2"
            expected = sex + res["birthDate"][2:4] + res["birthDate"][5:7] + birth_insee
            if ins[:10] != expected:
                err(f"INS-NIR {ins} incoherent with traits ({expected}...)")
            if e.get("request", {}).get("ifNoneExist") not in (None, f"identifier={SYS_INS_NIR}|{ins}"):
                err("Patient ifNoneExist does not match the INS")
            if not any(n.get("use") == "official" and n.get("family") and n.get("given") for n in res["name"]):
                err("Patient lacks an official name with given names")
        if rt == "Consent":
            for msg in consent_errors(res):
                err(msg)

    srs = [r for r in by_url.values() if r["resourceType"] == "ServiceRequest"]
    first = bundle["entry"][0]["resource"]
    if bundle["type"] == "message" and first["resourceType"] != "MessageHeader":
        err("bdl-12: first entry must be a MessageHeader")
        return errors
    if bundle["type"] == "message" and first["eventCoding"]["code"] == "opposition":
        # An opposition: one Consent deny (the focus) and at most one Patient (the Consent's patient), no referral.
        consents = [(u, r) for u, r in by_url.items() if r["resourceType"] == "Consent"]
        patients = [u for u, r in by_url.items() if r["resourceType"] == "Patient"]
        if srs or len(consents) != 1 or len(patients) > 1:
            err("an opposition message carries one Consent, at most one Patient and no ServiceRequest")
        else:
            consent_url, res = consents[0]
            if res["status"] != "active" or res["provision"]["type"] != "deny":
                err("the opposition's Consent is not an active deny")
            if [f["reference"] for f in first["focus"]] != [consent_url]:
                err("MessageHeader.focus is not the Consent")
            if patients and res["patient"].get("reference") != patients[0]:
                err("the Consent's patient is not the Patient entry")
    elif len(srs) != 1:
        err("exactly one ServiceRequest expected")
    else:
        sr = srs[0]
        link = next(x["valueCode"] for x in sr["extension"] if x["url"] == EXT_GP_LINK)
        pat = by_url[sr["subject"]["reference"]]
        gps = [g["reference"] for g in pat.get("generalPractitioner", [])]
        if link == "self" and gps != [sr["requester"]["reference"]]:
            err("gp-link self but the requester is not Patient.generalPractitioner")
        if link != "self" and sr["requester"]["reference"] in gps:
            err("requester is the GP but gp-link is not self")
        if link == "linked-physician" and not gps:
            err("gp-link linked-physician without a known GP")
        validation = next((x for x in sr["extension"] if x["url"] == EXT_GP_VALIDATION), None)
        if validation:
            parts = {x["url"]: x for x in validation["extension"]}
            validator = parts["validator"]["valueReference"]["reference"]
            gp_people = set(gps) | {by_url[g]["practitioner"]["reference"] for g in gps if "practitioner" in by_url[g]}
            if set(parts) != {"date", "validator"}:
                err("dac-gp-validation needs exactly the sub-extensions date and validator")
            if validator not in gp_people:
                err("dac-gp-validation's validator is not the patient's GP")
            if datetime.fromisoformat(parts["date"]["valueDateTime"]) > datetime.fromisoformat(sr["authoredOn"]):
                err("GP validation dated after the request")
        if bundle["type"] == "message" and first["focus"][0]["reference"] != next(
            u for u, r in by_url.items() if r is sr
        ):
            err("MessageHeader.focus is not the ServiceRequest")
    return errors


def check_consent(fname: str, res: Json) -> list[str]:
    """A Consent posted on its own (POST /fhir/Consent): no bundle, so its references are logical."""
    errors = [f"{fname}: {msg}" for msg in key_errors(res) + consent_errors(res)]
    if res["resourceType"] != "Consent" or "id" in res or "meta" in res:
        errors.append(f"{fname}: not a Consent without id/meta")
    refs = [res["patient"], *res.get("performer", [])]
    if any("reference" in r for r in refs):
        errors.append(f"{fname}: a lone Consent has no bundle entry to reference; use logical references")
    if res["patient"].get("identifier", {}).get("system") != SYS_INS_NIR:
        errors.append(f"{fname}: Consent.patient is not referenced by INS")
    return errors


def check_across(outputs: dict[str, Json]) -> list[str]:
    """Across files: one identifier per request / bundle / message, and one identity per INS and per RPPS (a
    person appearing in several files, or referenced by identifier, is the same person everywhere)."""
    errors: list[str] = []
    seen: dict[str, str] = {}

    def unique(kind: str, key: str, fname: str) -> None:
        if kind + key in seen:
            errors.append(f"{fname}: {kind} {key} already used in {seen[kind + key]}")
        seen[kind + key] = fname

    people: dict[str, tuple[str, Any]] = {}  # "system|value" -> (file, identity traits)
    references: list[tuple[str, str]] = []  # (file, "system|value") of logical references
    for fname, data in outputs.items():
        resources = [e["resource"] for e in data["entry"]] if data["resourceType"] == "Bundle" else [data]
        if data["resourceType"] == "Bundle":
            unique("Bundle.identifier", data["identifier"]["value"], fname)
        for res in resources:
            rt = res["resourceType"]
            if rt == "ServiceRequest":
                ident = res["identifier"][0]
                unique("ServiceRequest.identifier", f"{ident['system']}|{ident['value']}", fname)
            if rt == "MessageHeader":
                unique("MessageHeader.id", res["id"], fname)
            if rt in ("Patient", "Practitioner"):
                traits = (
                    [res["name"], res["gender"], res["birthDate"], res["extension"]] if rt == "Patient" else res["name"]
                )
                for ident in res.get("identifier", []):
                    if ident["system"] in (SYS_INS_NIR, SYS_RPPS):
                        key = f"{ident['system']}|{ident['value']}"
                        if key in people and people[key][1] != traits:
                            errors.append(f"{fname}: {key} has other traits than in {people[key][0]}")
                        people.setdefault(key, (fname, traits))
            for r in [res.get("patient"), *res.get("performer", [])] if rt == "Consent" else []:
                if isinstance(r, dict) and isinstance(r.get("identifier"), dict):
                    references.append((fname, f"{r['identifier']['system']}|{r['identifier']['value']}"))
    for fname, key in references:
        if key not in people:
            errors.append(f"{fname}: logical reference {key} names no patient or professional of the examples")
    return errors


def parse_check(fname: str, data: Json) -> None:
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.consent import Consent

    if data["resourceType"] == "Consent":
        Consent.model_validate(data)
    else:
        Bundle.model_validate(data)


def write_json(fname: str, data: Json) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    (HERE / fname).write_text(text, encoding="utf-8")


def write_xml(fname: str, data: Json) -> None:
    from fhir.resources.R4B.bundle import Bundle
    from lxml import etree

    raw = Bundle.model_validate(data).model_dump_xml()
    raw_bytes = raw.encode("utf-8") if isinstance(raw, str) else raw
    parser = etree.XMLParser(remove_blank_text=True)
    tree = etree.fromstring(raw_bytes, parser)
    pretty = etree.tostring(tree, pretty_print=True, xml_declaration=True, encoding="UTF-8")
    (HERE / fname).write_bytes(pretty)
    # Round trip: the XML must parse back to the same content as the JSON.
    back = Bundle.model_validate_xml((HERE / fname).read_bytes())
    if back.model_dump(mode="json") != Bundle.model_validate(data).model_dump(mode="json"):
        raise SystemExit(f"{fname}: XML round trip differs from the JSON")


def main() -> int:
    examples = {
        "referral-gp.json": gp_example(),
        "referral-hospital-nurse.json": hospital_nurse_example(),
        "referral-social-worker.json": social_worker_example(),
        "referral-no-gp.json": no_gp_example(),
        "referral-opposition.json": opposition_example(),
        "referral-corsica.json": corsica_example(),
        "referral-overseas.json": overseas_example(),
        "referral-nurse-pta-2016.json": nurse_pta_2016_example(),
        "referral-gp-validated.json": gp_validated_example(),
    }
    outputs: dict[str, Json] = {}
    for fname, ex in examples.items():
        sr = ex.entries[0][1]
        outputs[fname] = ex.transaction(timestamp=sr["authoredOn"])
    outputs["message-referral-gp.json"] = message_gp()
    outputs["message-opposition.json"] = message_opposition()
    outputs["consent-opposition.json"] = consent_opposition()

    errors: list[str] = []
    for fname, data in outputs.items():
        if data["resourceType"] == "Bundle":
            errors += check_bundle(fname, data)
        else:
            errors += check_consent(fname, data)
        parse_check(fname, data)
        write_json(fname, data)
    errors += check_across(outputs)
    write_xml("referral-hospital-nurse.xml", outputs["referral-hospital-nurse.json"])
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    for fname, data in outputs.items():
        what = f"{len(data['entry'])} entries" if data["resourceType"] == "Bundle" else data["resourceType"]
        print(f"wrote {fname} ({what})")
    print("wrote referral-hospital-nurse.xml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

Profile: DacPractitionerRole
Parent: PractitionerRole
Id: dac-practitionerrole
Title: "DAC practitioner role"
Description: "A professional acting for a referral: the requester, the GP, another member of the care team. The person (Practitioner, with the RPPS / ADELI / IDNPS identifiers of DESIGN §8) and what they do (code: profession, e.g. TRE_G15 or JDV_J106 of the ANS, or text) are required; the organization (FINESS, SIRET) when there is one."
* ^publisher = "DAC Gateway"
* ^jurisdiction = urn:iso:std:iso:3166#FR "France"
* practitioner 1..1 MS
* practitioner only Reference(Practitioner)
* organization MS
* organization only Reference(Organization)
* code 1..* MS
* code ^short = "Profession or role (ANS TRE_G15 / JDV_J106 code, or text)"
* telecom MS

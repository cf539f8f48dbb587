// The patient of a referral (DESIGN §7, §8): an INS identifier only with the five INS identity traits; otherwise a
// local identifier with family name, given name, birth date and gender; an address that gives the territory.

Profile: DacPatient
Parent: Patient
Id: dac-patient
Title: "DAC patient"
Description: "The patient of a referral to a DAC platform. An INS (INS-NIR or INS-NIA, or their test OIDs) travels only with the five INS identity traits of the référentiel INS: birth family name and given names (official name), gender, birth date and the INSEE code of the birth place (patient-birthPlace with the FR Core INSEE code extension). Without an INS, a local identifier with family name, given name, birth date and gender. The address gives the patient's territory, which selects the platform."
* ^publisher = "DAC Gateway"
* ^jurisdiction = urn:iso:std:iso:3166#FR "France"
* obeys dac-patient-1 and dac-patient-2 and dac-patient-3 and dac-patient-4
* extension contains $patient-birthPlace named birthPlace 0..1 MS
* extension[birthPlace] ^short = "Birth place: an Address carrying the INSEE code (fr-core-address-insee-code; 99999 or a country code for births abroad) — required with an INS"
* identifier 1..* MS
* identifier ^slicing.discriminator.type = #value
* identifier ^slicing.discriminator.path = "system"
* identifier ^slicing.rules = #open
* identifier ^slicing.ordered = false
* identifier ^slicing.description = "The INS (national health identifier) by its system; other identifiers (local ones) are allowed."
* identifier contains
    INS-NIR 0..1 MS and
    INS-NIA 0..1 MS and
    INS-NIR-TEST 0..1 and
    INS-NIA-TEST 0..1
* identifier[INS-NIR] ^short = "INS-NIR: the NIR used as national health identifier (13 characters and a 2-digit key)"
* identifier[INS-NIR].system 1..1
* identifier[INS-NIR].system = "urn:oid:1.2.250.1.213.1.4.8" (exactly)
* identifier[INS-NIR].value 1..1
* identifier[INS-NIA] ^short = "INS-NIA: the temporary number given by the CNAV, same shape as the NIR"
* identifier[INS-NIA].system 1..1
* identifier[INS-NIA].system = "urn:oid:1.2.250.1.213.1.4.9" (exactly)
* identifier[INS-NIA].value 1..1
* identifier[INS-NIR-TEST] ^short = "INS-NIR of a test identity (accepted only where the platform allows test identities)"
* identifier[INS-NIR-TEST].system 1..1
* identifier[INS-NIR-TEST].system = "urn:oid:1.2.250.1.213.1.4.10" (exactly)
* identifier[INS-NIR-TEST].value 1..1
* identifier[INS-NIA-TEST] ^short = "INS-NIA of a test identity (accepted only where the platform allows test identities)"
* identifier[INS-NIA-TEST].system 1..1
* identifier[INS-NIA-TEST].system = "urn:oid:1.2.250.1.213.1.4.11" (exactly)
* identifier[INS-NIA-TEST].value 1..1
* name 1..* MS
* name ^short = "Names: with an INS, the official name is the birth family name and the birth given names"
* gender MS
* birthDate MS
* address 1..* MS
* address ^short = "Address: the INSEE commune code (fr-core-address-insee-code, or district) or at least the postal code selects the platform"
* generalPractitioner MS
* generalPractitioner only Reference(Practitioner or PractitionerRole)
* generalPractitioner ^short = "The patient's médecin traitant (GP), when there is one"

Invariant: dac-patient-1
Description: "An INS identifier travels only with the five INS identity traits: an official name with family and given names, gender, birth date, and the birth place (extension patient-birthPlace) carrying the INSEE code (fr-core-address-insee-code, or district)."
Severity: #error
Expression: "identifier.where(system = 'urn:oid:1.2.250.1.213.1.4.8' or system = 'urn:oid:1.2.250.1.213.1.4.9' or system = 'urn:oid:1.2.250.1.213.1.4.10' or system = 'urn:oid:1.2.250.1.213.1.4.11').exists() implies (name.where(use = 'official' and family.exists() and given.exists()).exists() and gender.exists() and birthDate.exists() and extension.where(url = 'http://hl7.org/fhir/StructureDefinition/patient-birthPlace').value.ofType(Address).where(extension.where(url = 'https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code').value.ofType(Coding).code.exists() or district.exists()).exists())"

Invariant: dac-patient-2
Description: "A patient without an INS needs, beside an identifier, a name with family and given names, a birth date and a gender."
Severity: #error
Expression: "identifier.where(system = 'urn:oid:1.2.250.1.213.1.4.8' or system = 'urn:oid:1.2.250.1.213.1.4.9' or system = 'urn:oid:1.2.250.1.213.1.4.10' or system = 'urn:oid:1.2.250.1.213.1.4.11').exists() or (name.where(family.exists() and given.exists()).exists() and gender.exists() and birthDate.exists())"

Invariant: dac-patient-3
Description: "An INS (INS-NIR, INS-NIA or their test OIDs) has 15 characters: 13 (digits, with 2A or 2B for a birth in Corsica) and a 2-digit key."
Severity: #error
Expression: "identifier.where(system = 'urn:oid:1.2.250.1.213.1.4.8' or system = 'urn:oid:1.2.250.1.213.1.4.9' or system = 'urn:oid:1.2.250.1.213.1.4.10' or system = 'urn:oid:1.2.250.1.213.1.4.11').all(value.matches('^[0-9]{6}[0-9AB][0-9]{8}$'))"

Invariant: dac-patient-4
Description: "An address gives the patient's territory: the INSEE commune code (fr-core-address-insee-code, or district) or at least a postal code."
Severity: #error
Expression: "address.where(extension.where(url = 'https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code').value.ofType(Coding).code.exists() or district.exists() or postalCode.exists()).exists()"

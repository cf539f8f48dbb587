// Aliases shared by the FSH files of DAC Gateway.

// French national identifier systems (DESIGN §8).
Alias: $ins-nir = urn:oid:1.2.250.1.213.1.4.8
Alias: $ins-nia = urn:oid:1.2.250.1.213.1.4.9
Alias: $ins-nir-test = urn:oid:1.2.250.1.213.1.4.10
Alias: $ins-nia-test = urn:oid:1.2.250.1.213.1.4.11

// Standard and FR Core extensions used by the profiles.
Alias: $patient-birthPlace = http://hl7.org/fhir/StructureDefinition/patient-birthPlace
Alias: $request-statusReason = http://hl7.org/fhir/StructureDefinition/request-statusReason
Alias: $fr-core-address-insee-code = https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code

// R4 code systems.
Alias: $message-significance-category = http://hl7.org/fhir/message-significance-category

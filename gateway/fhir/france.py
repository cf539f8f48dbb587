"""FR Core (Interop'Santé) element URLs the gateway reads (FR Core 2.1)."""

INSEE_CODE_EXTENSION = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code"
BIRTH_PLACE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"  # core R4, used by FR Core

"""Non-FHIR formats in (DESIGN §6, §13): HL7 v2 (HTTP and MLLP) and CDA, mapped by rules kept as data under
``mappings/`` to the referral Bundle a FHIR sender would post, then taken in by the same intake."""

Profile: DacConsent
Parent: Consent
Id: dac-consent
Title: "DAC patient information and opposition"
Description: "The patient was informed of the referral (L1110-12 of the Code de la santé publique) and either did not object (provision.type permit) or objected (provision.type deny: the opposition stops the processing and is honoured by later requests). dateTime is when the patient was informed, performer who informed. The legal basis is cited by policyRule (its text, or a coding's code or display, names L1110-12) or by policy (uri or authority)."
* ^publisher = "DAC Gateway"
* ^jurisdiction = urn:iso:std:iso:3166#FR "France"
* obeys dac-consent-1
* patient 1..1 MS
* patient only Reference(Patient)
* dateTime 1..1 MS
* dateTime ^short = "When the patient was informed"
* performer MS
* performer ^short = "Who informed the patient"
* policyRule MS
* policyRule ^short = "The legal basis: CSP art. L1110-12 (in text, or a coding's code or display)"
* provision 1..1 MS
* provision.type 1..1 MS
* provision.type ^short = "permit = informed and not opposed; deny = opposition"

Invariant: dac-consent-1
Description: "The Consent cites article L1110-12 of the Code de la santé publique in policyRule (text, or a coding's code or display) or in policy (uri or authority)."
Severity: #error
Expression: "(policyRule.text | policyRule.coding.code | policyRule.coding.display | policy.uri | policy.authority).where($this.contains('1110-12')).exists()"

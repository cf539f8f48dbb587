// The extensions of DAC Gateway (DESIGN §3, §7).

Extension: DacGpLinkExtension
Id: dac-gp-link
Title: "DAC requester's link to the GP"
Description: "The requester's link to the patient's médecin traitant (GP): self (the requester is the GP), linked-physician (a physician declaring a link to the GP) or none. It decides whether the GP must validate the referral (D6327-4)."
Context: ServiceRequest
* ^publisher = "DAC Gateway"
* ^jurisdiction = urn:iso:std:iso:3166#FR "France"
* value[x] 1..1
* value[x] only code
* value[x] from DacGpLinkVS (required)

Extension: DacGpValidationExtension
Id: dac-gp-validation
Title: "DAC GP validation already obtained"
Description: "The requester declares the GP already validated the request: when, and optionally which GP. The gp-validation Task is then stored completed, with a Provenance naming the requester as the source of that statement (DESIGN §7)."
Context: ServiceRequest
* ^publisher = "DAC Gateway"
* ^jurisdiction = urn:iso:std:iso:3166#FR "France"
* extension contains
    date 1..1 and
    validator 0..1
* extension[date] ^short = "When the GP validated the request"
* extension[date].value[x] only dateTime
* extension[date].value[x] 1..1
* extension[validator] ^short = "The GP who validated the request"
* extension[validator].value[x] only Reference(Practitioner or PractitionerRole)
* extension[validator].value[x] 1..1
* value[x] 0..0

Extension: DacHopCount
Id: dac-hop-count
Title: "DAC hop count"
Description: "How many gateways forwarded this message before the receiver (0 when sent by the original sender's gateway). A message at the receiver's hop limit is refused with 422, so forwarding loops end (DESIGN §3.6)."
Context: MessageHeader
* ^publisher = "DAC Gateway"
* ^jurisdiction = urn:iso:std:iso:3166#FR "France"
* value[x] 1..1
* value[x] only unsignedInt

Profile: DacServiceRequest
Parent: ServiceRequest
Id: dac-servicerequest
Title: "DAC referral (request for support)"
Description: "A request for support sent to a DAC platform (DESIGN §2, §7): the mission asked for, the patient, the requester; the sender's identifier makes a resubmission idempotent. The requester's link to the GP and a GP validation already obtained are carried by two extensions; a revoked request says why with request-statusReason."
* ^publisher = "DAC Gateway"
* ^jurisdiction = urn:iso:std:iso:3166#FR "France"
* extension contains
    DacGpLinkExtension named gpLink 0..1 MS and
    DacGpValidationExtension named gpValidation 0..1 MS and
    $request-statusReason named statusReason 0..1 MS
* extension[statusReason] ^short = "Why the request was revoked (dac-revocation-reason)"
* extension[statusReason].value[x] from DacRevocationReasonVS (extensible)
* identifier 1..* MS
* identifier ^short = "The sender's own id for this request: the key that makes a resubmission idempotent"
* identifier.system 1..1 MS
* identifier.value 1..1 MS
* status MS
* status ^short = "active or draft on input; the gateway sets the stored status"
* intent MS
* intent = #order (exactly)
* code 1..1 MS
* code from DacMissionVS (required)
* code ^short = "The mission asked for (dac-mission)"
* subject MS
* subject only Reference(Patient)
* requester 1..1 MS
* requester only Reference(PractitionerRole or Organization)
* requester ^short = "Who asks: a PractitionerRole, or an Organization for a service"
* performer MS
* performer only Reference(Organization)
* performer ^short = "The platform's Organization, set by the gateway once the request is routed"
* priority MS
* reasonCode MS
* reasonCode ^short = "Why the patient's pathway is complex"
* note MS
* supportingInfo MS

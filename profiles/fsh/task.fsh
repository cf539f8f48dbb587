Profile: DacTask
Parent: Task
Id: dac-task
Title: "DAC workflow task"
Description: "A step of the referral workflow (DESIGN §3): GP validation or information, patient information, platform intake, contact of the GP by the platform. focus is the referral, for the patient, owner who must act; restriction.period.end is the deadline. A rejection or a cancellation needs a statusReason. businessStatus follows the BSeR progression (dac-task-business-status) or, for platform-intake, the delivery status (dac-delivery-status)."
* ^publisher = "DAC Gateway"
* ^jurisdiction = urn:iso:std:iso:3166#FR "France"
* obeys dac-task-1
* status MS
* statusReason MS
* businessStatus MS
* businessStatus from DacTaskProgress (extensible)
* code 1..1 MS
* code from DacTaskTypeVS (required)
* focus 1..1 MS
* focus only Reference(ServiceRequest)
* for 1..1 MS
* for only Reference(Patient)
* requester MS
* owner 1..1 MS
* owner ^short = "Who must act: the GP, or the platform"
* restriction MS
* restriction.period MS
* restriction.period.end MS
* restriction.period.end ^short = "Deadline (for gp-validation: the platform's GP validation delay)"

Invariant: dac-task-1
Description: "A rejected or cancelled Task says why (statusReason)."
Severity: #error
Expression: "(status = 'rejected' or status = 'cancelled') implies statusReason.exists()"

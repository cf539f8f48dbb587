// Messaging (DESIGN §3.5, §3.6, §4): the MessageHeader and message Bundle of a referral, the MessageDefinition of
// the referral-request event and the GraphDefinition of the resources such a message carries.

Profile: DacMessageHeader
Parent: MessageHeader
Id: dac-messageheader
Title: "DAC message header"
Description: "The header of a DAC Gateway message: the event is a dac-message-event code, focus the resource the message is about (the ServiceRequest for referral-request, referral-update and contact-gp). The MessageHeader id is the delivery's id and stays the same on every retry, so receivers can drop duplicates; the hop count (dac-hop-count) ends forwarding loops between gateways."
* ^publisher = "DAC Gateway"
* ^jurisdiction = urn:iso:std:iso:3166#FR "France"
* extension contains DacHopCount named hopCount 0..1 MS
* event[x] only Coding
* event[x] MS
* eventCoding from DacMessageEventVS (required)
* eventCoding.system 1..1
* eventCoding.system = "https://fhir.dac-gateway.org/CodeSystem/dac-message-event" (exactly)
* eventCoding.code 1..1
* source MS
* focus 1..* MS

Profile: DacReferralMessage
Parent: Bundle
Id: dac-referral-message
Title: "DAC referral message"
Description: "A referral as a message Bundle (POST [base]/$process-message, and the gateway's deliveries to platforms): a dac-messageheader first (event referral-request, referral-update for a later change, or contact-gp when a GP validation ran past its deadline), then the one ServiceRequest it is about, the one Patient and what they stand on (requester, GP, Consent, CareTeam, caregivers, documents; the gateway's Tasks in its deliveries to platforms). The resources a referral may carry are listed by GraphDefinition referral-request. The entries are sliced by resource type, each slice against its profile; how many there must be is said by invariants (dac-message-2), since not every validator can count slices discriminated by the type of entry.resource."
* ^publisher = "DAC Gateway"
* ^jurisdiction = urn:iso:std:iso:3166#FR "France"
* obeys dac-message-1 and dac-message-2
* type MS
* type = #message (exactly)
* entry ^slicing.discriminator.type = #type
* entry ^slicing.discriminator.path = "resource"
* entry ^slicing.rules = #open
* entry ^slicing.ordered = false
* entry ^slicing.description = "The resources of a referral by type, each against its profile."
* entry contains
    messageHeader 0..1 MS and
    serviceRequest 0..1 MS and
    patient 0..1 MS and
    practitionerRole 0..* MS and
    consent 0..1 MS and
    careTeam 0..* MS and
    task 0..*
* entry 1..* MS
* entry.resource 1..1 MS
* entry[messageHeader].resource only DacMessageHeader
* entry[serviceRequest].resource only DacServiceRequest
* entry[patient].resource only DacPatient
* entry[practitionerRole].resource only DacPractitionerRole
* entry[consent].resource only DacConsent
* entry[careTeam].resource only DacCareTeam
* entry[task].resource only DacTask

Invariant: dac-message-1
Description: "A referral message starts with its MessageHeader."
Severity: #error
Expression: "entry.first().resource.is(MessageHeader)"

Invariant: dac-message-2
Description: "A referral message carries one MessageHeader, one ServiceRequest and one Patient."
Severity: #error
Expression: "entry.where(resource.is(MessageHeader)).count() = 1 and entry.where(resource.is(ServiceRequest)).count() = 1 and entry.where(resource.is(Patient)).count() = 1"

Instance: ReferralRequestMessageDefinition
InstanceOf: MessageDefinition
Usage: #definition
Title: "Referral to a DAC platform"
Description: "A request for support sent to a DAC platform."
* id = "referral-request"
* url = "https://fhir.dac-gateway.org/MessageDefinition/referral-request"
* version = "0.1.0"
* name = "ReferralRequest"
* title = "Referral to a DAC platform"
* status = #draft
* experimental = false
* date = "2025-03-01"
* publisher = "DAC Gateway"
* jurisdiction = urn:iso:std:iso:3166#FR "France"
* description = "A referral (request for support) sent to a DAC platform, by a professional's software to the gateway (POST [base]/$process-message) and by the gateway to the platform of the patient's territory or to a peer gateway. The message Bundle follows the profile dac-referral-message; its focus is the one ServiceRequest (dac-servicerequest); the resources it may carry are those of GraphDefinition referral-request: Patient, Practitioner, PractitionerRole, Organization, ServiceRequest, Consent, CareTeam, RelatedPerson, DocumentReference."
* purpose = "Lets a professional ask a DAC platform for support for a patient whose pathway is complex (L6327-1, D6327-4), and lets the gateway route the request to the competent platform."
* eventCoding = DacMessageEvent#referral-request "Demande d'appui"
* category = #consequence
* focus[0].code = #ServiceRequest
* focus[0].profile = Canonical(DacServiceRequest)
* focus[0].min = 1
* focus[0].max = "1"
* responseRequired = #always
* allowedResponse[0].message = "https://fhir.dac-gateway.org/MessageDefinition/referral-request"
* allowedResponse[0].situation = "The receiver answers every referral-request with a message Bundle whose MessageHeader has the same event and a response (identifier = the request's MessageHeader id; code ok, transient-error or fatal-error, with an OperationOutcome in details on an error). Later changes to the referral are sent as referral-update messages."
* graph[0] = "https://fhir.dac-gateway.org/GraphDefinition/referral-request"

Instance: ReferralRequestGraph
InstanceOf: GraphDefinition
Usage: #definition
Title: "Resources of a referral"
Description: "The resources a referral message carries, from its ServiceRequest."
* id = "referral-request"
* url = "https://fhir.dac-gateway.org/GraphDefinition/referral-request"
* version = "0.1.0"
* name = "ReferralRequest"
* status = #draft
* experimental = false
* date = "2025-03-01"
* publisher = "DAC Gateway"
* jurisdiction = urn:iso:std:iso:3166#FR "France"
* description = "The resources a referral (MessageDefinition referral-request, or a transaction Bundle posted to [base]) may carry, starting from its ServiceRequest: Patient, Practitioner, PractitionerRole, Organization, ServiceRequest, Consent, CareTeam, RelatedPerson, DocumentReference. Reverse links (params) find the resources that point to the patient."
* start = #ServiceRequest
* profile = Canonical(DacServiceRequest)
// The patient and what points to them.
* link[0].path = "ServiceRequest.subject"
* link[0].min = 1
* link[0].max = "1"
* link[0].description = "The patient"
* link[0].target[0].type = #Patient
* link[0].target[0].profile = Canonical(DacPatient)
* link[0].target[0].link[0].path = "Patient.generalPractitioner"
* link[0].target[0].link[0].min = 0
* link[0].target[0].link[0].max = "*"
* link[0].target[0].link[0].description = "The patient's GP"
* link[0].target[0].link[0].target[0].type = #PractitionerRole
* link[0].target[0].link[0].target[0].profile = Canonical(DacPractitionerRole)
* link[0].target[0].link[0].target[1].type = #Practitioner
* link[0].target[0].link[1].min = 0
* link[0].target[0].link[1].max = "1"
* link[0].target[0].link[1].description = "The patient's information or opposition (L1110-12)"
* link[0].target[0].link[1].target[0].type = #Consent
* link[0].target[0].link[1].target[0].params = "patient={ref}"
* link[0].target[0].link[1].target[0].profile = Canonical(DacConsent)
* link[0].target[0].link[2].min = 0
* link[0].target[0].link[2].max = "1"
* link[0].target[0].link[2].description = "The care team around the patient"
* link[0].target[0].link[2].target[0].type = #CareTeam
* link[0].target[0].link[2].target[0].params = "subject={ref}"
* link[0].target[0].link[2].target[0].profile = Canonical(DacCareTeam)
* link[0].target[0].link[2].target[0].link[0].path = "CareTeam.participant.member"
* link[0].target[0].link[2].target[0].link[0].min = 0
* link[0].target[0].link[2].target[0].link[0].max = "*"
* link[0].target[0].link[2].target[0].link[0].description = "The members of the care team"
* link[0].target[0].link[2].target[0].link[0].target[0].type = #PractitionerRole
* link[0].target[0].link[2].target[0].link[0].target[0].profile = Canonical(DacPractitionerRole)
* link[0].target[0].link[2].target[0].link[0].target[1].type = #Practitioner
* link[0].target[0].link[2].target[0].link[0].target[2].type = #RelatedPerson
* link[0].target[0].link[2].target[0].link[0].target[3].type = #Organization
* link[0].target[0].link[3].min = 0
* link[0].target[0].link[3].max = "*"
* link[0].target[0].link[3].description = "Caregivers and other persons related to the patient"
* link[0].target[0].link[3].target[0].type = #RelatedPerson
* link[0].target[0].link[3].target[0].params = "patient={ref}"
// The requester and what they stand on.
* link[1].path = "ServiceRequest.requester"
* link[1].min = 1
* link[1].max = "1"
* link[1].description = "The requester: a professional (PractitionerRole) or a service (Organization)"
* link[1].target[0].type = #PractitionerRole
* link[1].target[0].profile = Canonical(DacPractitionerRole)
* link[1].target[0].link[0].path = "PractitionerRole.practitioner"
* link[1].target[0].link[0].min = 1
* link[1].target[0].link[0].max = "1"
* link[1].target[0].link[0].target[0].type = #Practitioner
* link[1].target[0].link[1].path = "PractitionerRole.organization"
* link[1].target[0].link[1].min = 0
* link[1].target[0].link[1].max = "1"
* link[1].target[0].link[1].target[0].type = #Organization
* link[1].target[1].type = #Organization
// The platform, once routed, and the documents.
* link[2].path = "ServiceRequest.performer"
* link[2].min = 0
* link[2].max = "1"
* link[2].description = "The platform's Organization, once the request is routed"
* link[2].target[0].type = #Organization
* link[3].path = "ServiceRequest.supportingInfo"
* link[3].min = 0
* link[3].max = "*"
* link[3].description = "Attachments (size-limited)"
* link[3].target[0].type = #DocumentReference

// The code systems of DAC Gateway (DESIGN §2), each with a value set of the same id holding all its codes.
// Displays are French, as senders and platforms show them; definitions are English. dac-issue is generated from
// gateway/errors.py into generated-dac-issue.fsh by tools/build_profiles.py.

RuleSet: DacCodeSystem
* ^caseSensitive = true
* ^experimental = false
* ^publisher = "DAC Gateway"
* ^jurisdiction = urn:iso:std:iso:3166#FR "France"

RuleSet: DacValueSet
* ^experimental = false
* ^publisher = "DAC Gateway"
* ^jurisdiction = urn:iso:std:iso:3166#FR "France"

// ---------------------------------------------------------------------------------------------------------------
CodeSystem: DacMission
Id: dac-mission
Title: "DAC missions"
Description: "The three missions of a support platform (PTA decree of 2016, D6327-1), which a referral (ServiceRequest.code) asks for."
* insert DacCodeSystem
* #information-orientation "Information et orientation des professionnels" "Information and orientation of professionals towards the health, social and medico-social resources of the territory."
* #pathway-support "Appui à l'organisation des parcours complexes" "Support to organise complex pathways, including admissions to and discharges from establishments, favouring staying at home: reception, analysis of the person's situation, orientation, follow-up and reinforced accompaniment, planning of care, in connection with the GP."
* #practice-support "Soutien aux pratiques et initiatives professionnelles" "Practical, logistical and organisational support to professional practices and initiatives on the territory."

ValueSet: DacMissionVS
Id: dac-mission
Title: "DAC missions"
Description: "All the codes of the dac-mission code system."
* insert DacValueSet
* include codes from system DacMission

// ---------------------------------------------------------------------------------------------------------------
CodeSystem: DacCareteamRole
Id: dac-careteam-role
Title: "DAC care team roles"
Description: "The role of a participant in the care team around the patient of a referral (CareTeam.participant.role)."
* insert DacCodeSystem
* #gp "Médecin traitant" "The patient's médecin traitant (general practitioner), or the physician who follows the patient."
* #requester "Demandeur" "The professional who asked the platform for support (ServiceRequest.requester)."
* #coordinator "Coordinateur du DAC" "The platform's coordinator in charge of the patient's pathway."
* #professional "Professionnel" "Another health, social or medico-social professional involved with the patient."
* #caregiver "Aidant" "A caregiver (family member, friend) helping the patient (RelatedPerson)."

ValueSet: DacCareteamRoleVS
Id: dac-careteam-role
Title: "DAC care team roles"
Description: "All the codes of the dac-careteam-role code system."
* insert DacValueSet
* include codes from system DacCareteamRole

// ---------------------------------------------------------------------------------------------------------------
CodeSystem: DacTaskType
Id: dac-task-type
Title: "DAC task types"
Description: "What a Task of the referral workflow asks its owner to do (DESIGN §3)."
* insert DacCodeSystem
* #gp-validation "Validation du recours par le médecin traitant" "The GP validates (accepts) or rejects the referral triggered by another professional (D6327-4); routing waits for it under the pta-2016 policy."
* #gp-information "Information du médecin traitant" "The GP is informed of the referral; nothing is blocked."
* #patient-information "Information du patient (droit d'opposition)" "The platform informs the patient of the referral and of the right to object (L1110-12), since the referral carried no Consent."
* #platform-intake "Prise en charge par la plateforme" "The platform the referral was routed to takes it in; businessStatus carries the delivery status (dac-delivery-status)."
* #contact-gp "Contact du médecin traitant par la plateforme" "The platform finds and contacts the physician who follows the patient: no GP is known, or the GP did not answer the validation in time."

ValueSet: DacTaskTypeVS
Id: dac-task-type
Title: "DAC task types"
Description: "All the codes of the dac-task-type code system."
* insert DacValueSet
* include codes from system DacTaskType

// ---------------------------------------------------------------------------------------------------------------
CodeSystem: DacTaskBusinessStatus
Id: dac-task-business-status
Title: "DAC task business status"
Description: "Where a Task of the referral workflow stands (Task.businessStatus): the BSeR progression (created, accepted, declined, completed) and the gateway's own steps."
* insert DacCodeSystem
* #created "Créée" "The Task was created and waits for its owner."
* #accepted "Acceptée" "The owner accepted the Task (for gp-validation: the GP validated the referral)."
* #declined "Refusée" "The owner declined the Task (for gp-validation: the GP rejected the referral)."
* #completed "Terminée" "The Task was carried out."
* #cancelled "Annulée" "The Task was cancelled, for instance after the patient objected."
* #escalated "Relancée par la plateforme" "The Task was still requested at its deadline (restriction.period.end): the platform contacts the GP itself (D6327-4, « à défaut par la plateforme »)."

ValueSet: DacTaskBusinessStatusVS
Id: dac-task-business-status
Title: "DAC task business status"
Description: "All the codes of the dac-task-business-status code system."
* insert DacValueSet
* include codes from system DacTaskBusinessStatus

// ---------------------------------------------------------------------------------------------------------------
CodeSystem: DacDeliveryStatus
Id: dac-delivery-status
Title: "DAC delivery status"
Description: "Where the delivery of a referral to its platform stands: the businessStatus of the platform-intake Task."
* insert DacCodeSystem
* #queued "En attente d'envoi" "The message is in the outbox, waiting to be sent or retried."
* #delivered "Délivrée" "The platform acknowledged the message (2xx)."
* #failed "Échec de délivrance" "The platform refused the message or every retry failed: a dead letter, listed by 'gateway outbox'."

ValueSet: DacDeliveryStatusVS
Id: dac-delivery-status
Title: "DAC delivery status"
Description: "All the codes of the dac-delivery-status code system."
* insert DacValueSet
* include codes from system DacDeliveryStatus

ValueSet: DacTaskProgress
Id: dac-task-progress
Title: "DAC task progress"
Description: "What Task.businessStatus may hold: the workflow steps (dac-task-business-status) and, on a platform-intake Task, the delivery status (dac-delivery-status)."
* insert DacValueSet
* include codes from system DacTaskBusinessStatus
* include codes from system DacDeliveryStatus

// ---------------------------------------------------------------------------------------------------------------
CodeSystem: DacMessageEvent
Id: dac-message-event
Title: "DAC message events"
Description: "The events of the messages DAC Gateway receives and sends (MessageHeader.eventCoding)."
* insert DacCodeSystem
* #referral-request "Demande d'appui" "A referral: a request for support sent to a DAC platform, focus the ServiceRequest (MessageDefinition referral-request)."
* #referral-update "Mise à jour de la demande d'appui" "A change to a referral already sent (status, Tasks), focus the ServiceRequest."
* #opposition "Opposition du patient" "The patient objects to the sharing of information (L1110-12): the referrals already sent are revoked, focus the Consent."
* #contact-gp "Contact du médecin traitant par la plateforme" "A GP validation ran past its deadline (D6327-4, à défaut par la plateforme): the platform of the patient's territory is sent the referral, as in a referral-request, with the escalated gp-validation Task and its new contact-gp Task, so that it contacts the GP and records the GP's answer on the GP's behalf; focus the ServiceRequest."

ValueSet: DacMessageEventVS
Id: dac-message-event
Title: "DAC message events"
Description: "All the codes of the dac-message-event code system."
* insert DacValueSet
* include codes from system DacMessageEvent

// ---------------------------------------------------------------------------------------------------------------
CodeSystem: DacRevocationReason
Id: dac-revocation-reason
Title: "DAC revocation reasons"
Description: "Why a referral (ServiceRequest) was revoked, carried by the request-statusReason extension."
* insert DacCodeSystem
* #patient-opposition "Opposition du patient" "The patient objected to the referral (Consent with provision.type deny, or an opposition already recorded)."
* #gp-rejected "Refus du médecin traitant" "The GP rejected the referral (gp-validation Task rejected)."
* #withdrawn "Demande retirée" "The requester withdrew the referral."

ValueSet: DacRevocationReasonVS
Id: dac-revocation-reason
Title: "DAC revocation reasons"
Description: "All the codes of the dac-revocation-reason code system."
* insert DacValueSet
* include codes from system DacRevocationReason

// ---------------------------------------------------------------------------------------------------------------
CodeSystem: DacGpLink
Id: dac-gp-link
Title: "DAC link of the requester to the GP"
Description: "The requester's link to the patient's médecin traitant (GP), which decides the GP step of the workflow (D6327-4)."
* insert DacCodeSystem
* #self "Médecin traitant" "The requester is the patient's GP."
* #linked-physician "Médecin en lien avec le médecin traitant" "The requester is a physician who declares a link to the patient's GP."
* #none "Aucun lien" "The requester has no link to the patient's GP."

ValueSet: DacGpLinkVS
Id: dac-gp-link
Title: "DAC link of the requester to the GP"
Description: "All the codes of the dac-gp-link code system."
* insert DacValueSet
* include codes from system DacGpLink

Profile: DacCareTeam
Parent: CareTeam
Id: dac-careteam
Title: "DAC care team"
Description: "The care team around the patient of a referral: the GP, the requester, other professionals, caregivers (RelatedPerson) and, later, the platform's coordinator, with their roles (dac-careteam-role; the ANS code PCP of the GP is accepted beside ours)."
* ^publisher = "DAC Gateway"
* ^jurisdiction = urn:iso:std:iso:3166#FR "France"
* subject 1..1 MS
* subject only Reference(Patient)
* participant MS
* participant.role MS
* participant.role from DacCareteamRoleVS (extensible)
* participant.member 1..1 MS

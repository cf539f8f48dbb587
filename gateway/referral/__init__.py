"""What a referral is (DESIGN §6): its parts (``bundle``), the identities of its resources (``identity``), the
facts the workflow decides on (``facts``) and the CareTeam it needs (``careteam``).

Pure: imports only ``gateway.fhir`` and ``gateway.errors``; the rooms above it (validation, workflow, routing,
intake, the edges) use it and it uses none of them. Reading a referral does not validate it: intake validates,
then reads (``gateway.validation.validate.referral_findings``)."""

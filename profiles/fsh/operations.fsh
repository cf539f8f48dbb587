// The operations and the search parameters of our own that the gateway serves (DESIGN §4, §15): each
// OperationDefinition derives from the R4 one it narrows (base); the CapabilityStatement points at them.

Instance: DacProcessMessage
InstanceOf: OperationDefinition
Usage: #definition
Title: "Process a referral message"
* id = "dac-process-message"
* url = "https://fhir.dac-gateway.org/OperationDefinition/dac-process-message"
* version = "0.1.0"
* name = "DacProcessMessage"
* title = "Process a referral message"
* status = #draft
* kind = #operation
* publisher = "DAC Gateway"
* description = "POST [base]/$process-message: a referral (event referral-request), its update (referral-update) or an opposition as a message Bundle (profile dac-referral-message). Processed synchronously: the answer is a message Bundle whose MessageHeader.response names the request; a resubmission of the same MessageHeader id is answered with the first answer, never processed twice."
* affectsState = true
* code = #process-message
* base = "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message"
* system = true
* type = false
* instance = false
* parameter[0].name = #content
* parameter[0].use = #in
* parameter[0].min = 1
* parameter[0].max = "1"
* parameter[0].documentation = "The message Bundle (the request body)."
* parameter[0].type = #Bundle
* parameter[1].name = #return
* parameter[1].use = #out
* parameter[1].min = 1
* parameter[1].max = "1"
* parameter[1].documentation = "The response message Bundle; an OperationOutcome (4xx) when the message is refused."
* parameter[1].type = #Bundle

Instance: DacValidate
InstanceOf: OperationDefinition
Usage: #definition
Title: "Validate a resource or a referral"
* id = "dac-validate"
* url = "https://fhir.dac-gateway.org/OperationDefinition/dac-validate"
* version = "0.1.0"
* name = "DacValidate"
* title = "Validate a resource or a referral"
* status = #draft
* kind = #operation
* publisher = "DAC Gateway"
* description = "POST [base]/$validate or [base]/[type]/$validate: the resource (or referral Bundle) against our profile for its type, or the profile named; nothing is stored. The body is the resource itself or a Parameters with a resource part."
* affectsState = false
* code = #validate
* base = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
* resource[0] = #Resource
* system = true
* type = true
* instance = false
* parameter[0].name = #resource
* parameter[0].use = #in
* parameter[0].min = 0
* parameter[0].max = "1"
* parameter[0].documentation = "The resource to validate (or the request body itself)."
* parameter[0].type = #Resource
* parameter[1].name = #profile
* parameter[1].use = #in
* parameter[1].min = 0
* parameter[1].max = "1"
* parameter[1].documentation = "Canonical URL of one of our profiles or of an R4 base definition; by default our profile for the resource's type."
* parameter[1].type = #uri
* parameter[2].name = #return
* parameter[2].use = #out
* parameter[2].min = 1
* parameter[2].max = "1"
* parameter[2].documentation = "The issues found, each with its dac-issue code and FHIRPath expression."
* parameter[2].type = #OperationOutcome

Instance: DacExpand
InstanceOf: OperationDefinition
Usage: #definition
Title: "Expand one of our value sets"
* id = "dac-expand"
* url = "https://fhir.dac-gateway.org/OperationDefinition/dac-expand"
* version = "0.1.0"
* name = "DacExpand"
* title = "Expand one of our value sets"
* status = #draft
* kind = #operation
* publisher = "DAC Gateway"
* description = "GET [base]/ValueSet/$expand?url=… or [base]/ValueSet/[id]/$expand: the expansion of one of the value sets the gateway publishes (made when the profiles are built: every code listed)."
* affectsState = false
* code = #expand
* base = "http://hl7.org/fhir/OperationDefinition/ValueSet-expand"
* resource[0] = #ValueSet
* system = false
* type = true
* instance = true
* parameter[0].name = #url
* parameter[0].use = #in
* parameter[0].min = 0
* parameter[0].max = "1"
* parameter[0].documentation = "Canonical URL of the value set (at type level)."
* parameter[0].type = #uri
* parameter[1].name = #return
* parameter[1].use = #out
* parameter[1].min = 1
* parameter[1].max = "1"
* parameter[1].documentation = "The value set with its expansion."
* parameter[1].type = #ValueSet

Instance: DacTaskDeadline
InstanceOf: SearchParameter
Usage: #definition
Title: "Task deadline"
* id = "dac-task-deadline"
* url = "https://fhir.dac-gateway.org/SearchParameter/dac-task-deadline"
* version = "0.1.0"
* name = "DacTaskDeadline"
* status = #draft
* publisher = "DAC Gateway"
* description = "When the Task is due (Task.restriction.period.end): the GP validation deadline of a referral."
* code = #deadline
* base[0] = #Task
* type = #date
* expression = "Task.restriction.period.end"
* xpath = "f:Task/f:restriction/f:period/f:end"
* xpathUsage = #normal
* comparator[0] = #eq
* comparator[1] = #ne
* comparator[2] = #gt
* comparator[3] = #lt
* comparator[4] = #ge
* comparator[5] = #le
* comparator[6] = #sa
* comparator[7] = #eb

Instance: DacAuditEventAgent
InstanceOf: SearchParameter
Usage: #definition
Title: "AuditEvent client"
* id = "dac-auditevent-agent"
* url = "https://fhir.dac-gateway.org/SearchParameter/dac-auditevent-agent"
* version = "0.1.0"
* name = "DacAuditEventAgent"
* status = #draft
* publisher = "DAC Gateway"
* description = "The registered client that acted (its client id, system https://fhir.dac-gateway.org/client-id): a token on AuditEvent.agent.who.identifier, where R4's agent is a reference."
* code = #agent
* base[0] = #AuditEvent
* type = #token
* expression = "AuditEvent.agent.who.identifier"
* xpath = "f:AuditEvent/f:agent/f:who/f:identifier"
* xpathUsage = #normal

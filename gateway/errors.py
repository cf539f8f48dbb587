"""The gateway's exceptions, each carrying what an integrator needs to act on it.

Every failure the gateway reports is a ``GatewayError`` holding one or more ``Issue``s — severity, FHIR issue
type, a stable ``dac-issue`` code (``IssueCode``), an English diagnostic and the FHIRPath expression of the
offending element as posted. The HTTP layer turns them into an OperationOutcome in exactly one place
(``gateway.api.errors``); the status code belongs to the exception class::

    GatewayError
    ├── InvalidRequest ............ 400  unparsable body, unknown search parameter, bad entry request
    ├── TokenRequestRejected ...... 400  the token endpoint's RFC 6749 errors (rendered as OAuth JSON, not FHIR)
    ├── Unauthenticated ........... 401  no access token, or one that is not valid (WWW-Authenticate: Bearer)
    ├── Forbidden ................. 403  a valid token whose scopes do not cover the interaction, or an
    │                                    X-Provenance naming another agent than the client
    ├── ResourceNotFound .......... 404  unknown type, id or version
    ├── MethodNotAllowed .......... 405
    ├── NotAcceptable ............. 406  Accept / _format asks for a format (or FHIR version) we cannot write
    ├── RequestTimeout ............ 408  the body did not arrive within GATEWAY_BODY_TIMEOUT
    ├── PayloadTooLarge ........... 413  over GATEWAY_MAX_BODY_BYTES, enforced while reading; too many entries
    ├── UnsupportedMediaType ...... 415
    ├── UnprocessableEntity ....... 422
    │   ├── InvalidResource ....... 422  structure or profile failure
    │   └── BusinessRuleViolation . 422  referral rules (one ServiceRequest, resolvable references, …)
    ├── Conflict .................. 409  a forbidden Task transition
    ├── PreconditionFailed ........ 412  ifMatch / ifNoneExist / If-Match mismatch
    ├── PreconditionRequired ...... 428  an update without If-Match
    ├── StoreUnavailable .......... 503  the database cannot be reached; nothing was stored
    ├── Overloaded ................ 503  reading the body outran its time budget; nothing was stored
    └── DownstreamError ........... 502  a platform or peer gateway failed
        └── DownstreamTimeout ..... 504
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Literal, Self

Severity = Literal["fatal", "error", "warning", "information"]


class IssueCode(StrEnum):
    """Stable message ids (CodeSystem ``dac-issue``): integrators match errors on these, not on English."""

    BODY_UNPARSABLE = "body-unparsable"
    BODY_TOO_LARGE = "body-too-large"
    MEDIA_TYPE_UNSUPPORTED = "media-type-unsupported"
    FORMAT_NOT_ACCEPTABLE = "format-not-acceptable"
    XML_DOCTYPE_FORBIDDEN = "xml-doctype-forbidden"
    XML_NAMESPACE_INVALID = "xml-namespace-invalid"
    RESOURCE_TYPE_UNKNOWN = "resource-type-unknown"
    RESOURCE_TYPE_UNSUPPORTED = "resource-type-unsupported"
    RESOURCE_NOT_FOUND = "resource-not-found"
    VERSION_NOT_FOUND = "version-not-found"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    ELEMENT_UNKNOWN = "element-unknown"
    ELEMENT_REQUIRED = "element-required"
    VALUE_INVALID = "value-invalid"
    SEARCH_PARAMETER_UNKNOWN = "search-parameter-unknown"
    SEARCH_PARAMETER_INVALID = "search-parameter-invalid"
    BUNDLE_TYPE_UNSUPPORTED = "bundle-type-unsupported"
    ENTRY_REQUEST_INVALID = "entry-request-invalid"
    ENTRY_FULLURL_DUPLICATE = "entry-fullurl-duplicate"
    REFERENCE_UNRESOLVED = "reference-unresolved"
    REFERRAL_PATIENT_MISSING = "referral-patient-missing"
    REFERRAL_PATIENT_MULTIPLE = "referral-patient-multiple"
    REFERRAL_SERVICEREQUEST_MISSING = "referral-servicerequest-missing"
    REFERRAL_SERVICEREQUEST_MULTIPLE = "referral-servicerequest-multiple"
    SERVICEREQUEST_IDENTIFIER_MISSING = "servicerequest-identifier-missing"
    SERVICEREQUEST_SUBJECT_MISMATCH = "servicerequest-subject-mismatch"
    SERVICEREQUEST_STATUS_INVALID = "servicerequest-status-invalid"
    RESOURCE_TYPE_NOT_ALLOWED = "resource-type-not-allowed"
    MESSAGE_HEADER_MISSING = "message-header-missing"
    MESSAGE_EVENT_UNSUPPORTED = "message-event-unsupported"
    CONDITIONAL_MULTIPLE_MATCHES = "conditional-multiple-matches"
    VERSION_MISMATCH = "version-mismatch"
    STORE_UNAVAILABLE = "store-unavailable"
    TERRITORY_UNKNOWN = "territory-unknown"
    IF_MATCH_REQUIRED = "if-match-required"
    TRANSITION_FORBIDDEN = "transition-forbidden"
    TASK_ELEMENT_IMMUTABLE = "task-element-immutable"
    STATUS_REASON_REQUIRED = "status-reason-required"
    PATCH_INVALID = "patch-invalid"
    PROVENANCE_HEADER_INVALID = "provenance-header-invalid"
    PROVENANCE_AGENT_MISMATCH = "provenance-agent-mismatch"
    HOP_LIMIT_REACHED = "hop-limit-reached"
    ENDPOINT_NOT_REGISTERED = "endpoint-not-registered"
    CONCURRENT_CHANGE = "concurrent-change"
    INS_KEY_INVALID = "ins-key-invalid"
    IDENTIFIER_INVALID = "identifier-invalid"
    INS_TRAITS_MISSING = "ins-traits-missing"
    INS_TEST_NOT_ALLOWED = "ins-test-not-allowed"
    INSEE_CODE_INVALID = "insee-code-invalid"
    VALIDATION_PASSED = "validation-passed"
    REFERRAL_PATIENT_MISMATCH = "referral-patient-mismatch"
    IDENTIFIER_CHANGE_FORBIDDEN = "identifier-change-forbidden"
    VALUE_TOO_LONG = "value-too-long"
    MISSION_INVALID = "mission-invalid"
    NESTING_TOO_DEEP = "nesting-too-deep"
    BUNDLE_TOO_MANY_ENTRIES = "bundle-too-many-entries"
    BODY_TIMEOUT = "body-timeout"
    INTERNAL_ERROR = "internal-error"
    CARDINALITY_MIN = "cardinality-min"
    CARDINALITY_MAX = "cardinality-max"
    TYPE_INVALID = "type-invalid"
    FIXED_VALUE_MISMATCH = "fixed-value-mismatch"
    PATTERN_MISMATCH = "pattern-mismatch"
    BINDING_REQUIRED = "binding-required"
    BINDING_EXTENSIBLE = "binding-extensible"
    EXTENSION_UNKNOWN = "extension-unknown"
    SLICE_CARDINALITY = "slice-cardinality"
    INVARIANT_FAILED = "invariant-failed"
    INVARIANT_NOT_EVALUATED = "invariant-not-evaluated"
    REFERENCE_TARGET_INVALID = "reference-target-invalid"
    MESSAGE_FOCUS_INVALID = "message-focus-invalid"
    PROFILE_UNKNOWN = "profile-unknown"
    PROFILE_TYPE_MISMATCH = "profile-type-mismatch"
    ACCESS_TOKEN_MISSING = "access-token-missing"
    ACCESS_TOKEN_INVALID = "access-token-invalid"
    SCOPE_INSUFFICIENT = "scope-insufficient"
    CLIENT_AUTHENTICATION_FAILED = "client-authentication-failed"
    TOKEN_REQUEST_INVALID = "token-request-invalid"
    SCOPE_NOT_ALLOWED = "scope-not-allowed"
    REFERRAL_IDENTIFIER_TAKEN = "referral-identifier-taken"
    DECISION_NOT_ALLOWED = "decision-not-allowed"
    PATIENT_IDENTITY_REQUIRED = "patient-identity-required"
    IDENTIFIER_SYSTEM_NOT_OWNED = "identifier-system-not-owned"
    DIRECTORY_RECORD_READ_ONLY = "directory-record-read-only"
    XML_ATTRIBUTE_UNKNOWN = "xml-attribute-unknown"
    XML_TOO_LARGE = "xml-too-large"
    BODY_TIME_BUDGET_EXCEEDED = "body-time-budget-exceeded"
    OUTCOME_TRUNCATED = "outcome-truncated"
    HEADERS_TOO_LARGE = "headers-too-large"
    INS_TRAITS_MISMATCH = "ins-traits-mismatch"
    CONSENT_UPDATE_NOT_ALLOWED = "consent-update-not-allowed"
    # HL7 v2 and CDA (DESIGN §13)
    HL7V2_UNREADABLE = "hl7v2-unreadable"
    HL7V2_MESSAGE_UNSUPPORTED = "hl7v2-message-unsupported"
    HL7V2_ENCODING_INVALID = "hl7v2-encoding-invalid"
    REFERRAL_STATUS_UNSUPPORTED = "referral-status-unsupported"
    CDA_INVALID = "cda-invalid"


#: Definitions published with the ``dac-issue`` CodeSystem; a test keeps them in step with ``IssueCode``.
ISSUE_DEFINITIONS: dict[IssueCode, str] = {
    IssueCode.BODY_UNPARSABLE: "The request body is not well-formed FHIR JSON or XML.",
    IssueCode.BODY_TOO_LARGE: "The request body exceeds the gateway's size limit.",
    IssueCode.MEDIA_TYPE_UNSUPPORTED: "The Content-Type is not a FHIR JSON or XML media type.",
    IssueCode.FORMAT_NOT_ACCEPTABLE: "Accept or _format asks for a format other than FHIR R4 JSON or XML.",
    IssueCode.XML_DOCTYPE_FORBIDDEN: "XML with a DOCTYPE (DTD, entities) is refused.",
    IssueCode.XML_NAMESPACE_INVALID: "The XML root element is not in the FHIR namespace http://hl7.org/fhir.",
    IssueCode.RESOURCE_TYPE_UNKNOWN: "resourceType is missing or is not an R4 resource type.",
    IssueCode.RESOURCE_TYPE_UNSUPPORTED: "The gateway does not serve this resource type.",
    IssueCode.RESOURCE_NOT_FOUND: "No resource with this type and id.",
    IssueCode.VERSION_NOT_FOUND: "The resource has no such version.",
    IssueCode.METHOD_NOT_ALLOWED: "The HTTP method is not allowed on this URL.",
    IssueCode.ELEMENT_UNKNOWN: "The element does not exist in FHIR R4 at this place.",
    IssueCode.ELEMENT_REQUIRED: "A required element is missing.",
    IssueCode.VALUE_INVALID: "The value does not have the form its FHIR data type requires.",
    IssueCode.SEARCH_PARAMETER_UNKNOWN: "The search parameter is not supported for this resource type.",
    IssueCode.SEARCH_PARAMETER_INVALID: "The search parameter value cannot be understood.",
    IssueCode.BUNDLE_TYPE_UNSUPPORTED: "The Bundle type is not the one this endpoint takes.",
    IssueCode.ENTRY_REQUEST_INVALID: "A transaction entry's request (method, url) is missing or not supported.",
    IssueCode.ENTRY_FULLURL_DUPLICATE: "Two entries share one fullUrl.",
    IssueCode.REFERENCE_UNRESOLVED: "A reference points to nothing in the bundle nor on the gateway.",
    IssueCode.REFERRAL_PATIENT_MISSING: "A referral must carry exactly one Patient; there is none.",
    IssueCode.REFERRAL_PATIENT_MULTIPLE: "A referral must carry exactly one Patient; there are several.",
    IssueCode.REFERRAL_SERVICEREQUEST_MISSING: "A referral must carry exactly one ServiceRequest; there is none.",
    IssueCode.REFERRAL_SERVICEREQUEST_MULTIPLE: "A referral must carry exactly one ServiceRequest; there are several.",
    IssueCode.SERVICEREQUEST_IDENTIFIER_MISSING: "The ServiceRequest needs an identifier with system and value.",
    IssueCode.SERVICEREQUEST_SUBJECT_MISMATCH: "ServiceRequest.subject must reference the referral's Patient.",
    IssueCode.SERVICEREQUEST_STATUS_INVALID: "A posted ServiceRequest's status must be active or draft.",
    IssueCode.RESOURCE_TYPE_NOT_ALLOWED: "This resource type is not part of a referral bundle.",
    IssueCode.MESSAGE_HEADER_MISSING: "A message Bundle must start with a MessageHeader.",
    IssueCode.MESSAGE_EVENT_UNSUPPORTED: "The MessageHeader event is not one the gateway processes.",
    IssueCode.CONDITIONAL_MULTIPLE_MATCHES: "A conditional create matched more than one resource.",
    IssueCode.VERSION_MISMATCH: "The version given (If-Match, ifMatch) is not the current one.",
    IssueCode.STORE_UNAVAILABLE: "The database cannot be reached; nothing was stored. Retry later.",
    IssueCode.TERRITORY_UNKNOWN: "No DAC platform covers the patient's territory, and there is no default.",
    IssueCode.IF_MATCH_REQUIRED: 'An update must say which version it changes (If-Match: W/"n").',
    IssueCode.TRANSITION_FORBIDDEN: "The Task cannot go from its current status to the one asked.",
    IssueCode.TASK_ELEMENT_IMMUTABLE: "A decision changes status, statusReason, businessStatus, note, output only.",
    IssueCode.STATUS_REASON_REQUIRED: "A rejection or a cancellation needs a statusReason.",
    IssueCode.PATCH_INVALID: "The JSON Patch cannot be applied to the resource.",
    IssueCode.PROVENANCE_HEADER_INVALID: "The X-Provenance header is not a Provenance with agents.",
    IssueCode.PROVENANCE_AGENT_MISMATCH: "An X-Provenance agent is not the authenticated client (or its onBehalfOf "
    "not the Task's owner).",
    IssueCode.HOP_LIMIT_REACHED: "The message was forwarded between gateways as often as allowed.",
    IssueCode.ENDPOINT_NOT_REGISTERED: "A callback endpoint is not https, or not under an endpoint registered for the "
    "client.",
    IssueCode.CONCURRENT_CHANGE: "Concurrent changes kept colliding with this one; nothing was stored, retry.",
    IssueCode.INS_KEY_INVALID: "The INS (NIR / NIA) does not have the shape or check key of an INS.",
    IssueCode.IDENTIFIER_INVALID: "A national identifier (RPPS, ADELI, FINESS, SIREN, SIRET) has a wrong shape or key.",
    IssueCode.INS_TRAITS_MISSING: "An INS travels only with the five identity traits of the référentiel INS.",
    IssueCode.INS_TEST_NOT_ALLOWED: "A test INS is accepted only by platforms that allow test identities.",
    IssueCode.INSEE_CODE_INVALID: "The INSEE commune code does not have the shape of one.",
    IssueCode.VALIDATION_PASSED: "$validate found nothing to report.",
    IssueCode.REFERRAL_PATIENT_MISMATCH: "A Consent, CareTeam, caregiver or document of the referral is another's.",
    IssueCode.IDENTIFIER_CHANGE_FORBIDDEN: "National identifiers are not changed by an update inside a referral.",
    IssueCode.VALUE_TOO_LONG: "A value is longer than the gateway stores, or holds a NUL character.",
    IssueCode.MISSION_INVALID: "ServiceRequest.code is not one of the three missions of CodeSystem dac-mission.",
    IssueCode.NESTING_TOO_DEEP: "The body nests objects, arrays or XML elements deeper than the gateway reads.",
    IssueCode.BUNDLE_TOO_MANY_ENTRIES: "The Bundle holds more entries than the gateway takes in one request.",
    IssueCode.BODY_TIMEOUT: "The request body did not arrive in time; nothing was read or stored.",
    IssueCode.INTERNAL_ERROR: "An unexpected error; nothing was stored.",
    IssueCode.CARDINALITY_MIN: "An element repeats fewer times than its profile's minimum.",
    IssueCode.CARDINALITY_MAX: "An element repeats more often than its profile allows, or a choice has two types.",
    IssueCode.TYPE_INVALID: "A value has the wrong type: JSON type of a primitive, object expected, or a choice type "
    "the profile does not allow.",
    IssueCode.FIXED_VALUE_MISMATCH: "A value differs from the fixed value its profile requires.",
    IssueCode.PATTERN_MISMATCH: "A value does not match the pattern its profile requires.",
    IssueCode.BINDING_REQUIRED: "A code is not in the value set of a required binding.",
    IssueCode.BINDING_EXTENSIBLE: "A code is not in the value set of an extensible binding (warning).",
    IssueCode.EXTENSION_UNKNOWN: "An extension URL in the gateway's namespace that no published definition has.",
    IssueCode.SLICE_CARDINALITY: "A slice of a repeating element has too few or too many items.",
    IssueCode.INVARIANT_FAILED: "A FHIRPath invariant (constraint) of a profile or of R4 is not met.",
    IssueCode.INVARIANT_NOT_EVALUATED: "An invariant could not be evaluated on this data (warning).",
    IssueCode.REFERENCE_TARGET_INVALID: "A reference points to a resource type its profile does not allow.",
    IssueCode.MESSAGE_FOCUS_INVALID: "MessageHeader.focus does not reference what the MessageDefinition requires.",
    IssueCode.PROFILE_UNKNOWN: "The profile asked for is not one the gateway publishes or knows.",
    IssueCode.PROFILE_TYPE_MISMATCH: "The profile is for another resource type.",
    IssueCode.ACCESS_TOKEN_MISSING: "The API needs an access token (Authorization: Bearer) from POST /auth/token.",
    IssueCode.ACCESS_TOKEN_INVALID: "The access token is malformed, expired or not signed by this gateway.",
    IssueCode.SCOPE_INSUFFICIENT: "The access token's scopes do not cover this interaction on this resource type.",
    IssueCode.CLIENT_AUTHENTICATION_FAILED: "The client assertion (private_key_jwt) was refused.",
    IssueCode.TOKEN_REQUEST_INVALID: "The token request is malformed or uses an unsupported grant type.",
    IssueCode.SCOPE_NOT_ALLOWED: "None of the requested scopes is registered for this client.",
    IssueCode.REFERRAL_IDENTIFIER_TAKEN: (
        "Another sender's referral already carries this ServiceRequest identifier, Bundle.identifier or "
        "MessageHeader id; nothing was stored."
    ),
    IssueCode.DECISION_NOT_ALLOWED: (
        "The client's role may not make this decision on this Task (a sender only withdraws its referral; a "
        "platform decides its own Tasks, and a GP validation only once escalated)."
    ),
    IssueCode.PATIENT_IDENTITY_REQUIRED: (
        "An opposition names its patient as a referral does: a Patient the client may see, or the INS with the "
        "five identity traits matching the identity on record; nothing was revoked."
    ),
    IssueCode.IDENTIFIER_SYSTEM_NOT_OWNED: (
        "The ServiceRequest identifier or Bundle.identifier is in an identifier system registered for another "
        "client; nothing was stored."
    ),
    IssueCode.INS_TRAITS_MISMATCH: (
        "The INS is on record with other identity traits (birth family name, birth given names, gender, birth date "
        "or birth place): identity vigilance refuses the referral, nothing was stored; the traits are named, "
        "never their values."
    ),
    IssueCode.CONSENT_UPDATE_NOT_ALLOWED: (
        "A Consent is updated (an opposition ended or corrected) by the client that posted it, or by an operator."
    ),
    IssueCode.DIRECTORY_RECORD_READ_ONLY: (
        "Practitioners, Organizations and PractitionerRoles are directory records shared by every party: only an "
        "operator changes them."
    ),
    IssueCode.XML_ATTRIBUTE_UNKNOWN: (
        "An XML attribute FHIR does not define: a FHIR element carries value, id or url (and namespace "
        "declarations) only."
    ),
    IssueCode.XML_TOO_LARGE: (
        "The XML body has more elements, same-named sibling elements or attributes on one element than the "
        "gateway reads."
    ),
    IssueCode.BODY_TIME_BUDGET_EXCEEDED: (
        "Reading the body took longer than the gateway allows (GATEWAY_PARSE_TIME_BUDGET); nothing was stored, "
        "retry later."
    ),
    IssueCode.OUTCOME_TRUNCATED: "More issues were found than an OperationOutcome lists; this one counts the rest.",
    IssueCode.HEADERS_TOO_LARGE: "The request line and headers exceed the gateway's limit (GATEWAY_MAX_HEADER_BYTES).",
    IssueCode.HL7V2_UNREADABLE: "The HL7 v2 message cannot be read: no MSH segment, separators or segments broken.",
    IssueCode.HL7V2_MESSAGE_UNSUPPORTED: (
        "The HL7 v2 message type, trigger event, version or processing id is not one the gateway takes (REF^I12, "
        "ORU^R01 or MDM^T02 carrying a CDA; v2.5; processing id P, T or D)."
    ),
    IssueCode.HL7V2_ENCODING_INVALID: (
        "The HL7 v2 message's bytes are not in the character set MSH-18 declares (UNICODE UTF-8, 8859/1, 8859/15; "
        "ASCII when empty), or MSH-18 names another."
    ),
    IssueCode.REFERRAL_STATUS_UNSUPPORTED: (
        "RF1-1 (referral status, HL7 table 0283) is not P (pending) or A (accepted): only a new referral is taken."
    ),
    IssueCode.CDA_INVALID: "The document is not a CDA R2 ClinicalDocument (namespace urn:hl7-org:v3).",
}

# FHIR issue types (http://hl7.org/fhir/issue-type) we use.
IssueType = Literal[
    "invalid",
    "structure",
    "required",
    "value",
    "invariant",
    "code-invalid",
    "business-rule",
    "conflict",
    "not-found",
    "not-supported",
    "too-long",
    "security",
    "login",
    "forbidden",
    "processing",
    "exception",
    "timeout",
    "transient",
    "duplicate",
    "informational",
]


@dataclass(frozen=True, slots=True)
class Issue:
    """One finding, rendered as one OperationOutcome.issue."""

    code: IssueCode
    diagnostics: str
    expression: str | None = None
    issue_type: IssueType = "invalid"
    severity: Severity = "error"
    #: Where the issue is in a document that is not FHIR (a CDA's XPath, DESIGN §13); rendered as issue.location.
    location: str | None = None


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    status_code: ClassVar[int] = 500

    def __init__(self, *issues: Issue) -> None:
        if not issues:
            raise ValueError("a GatewayError needs at least one Issue")
        self.issues: tuple[Issue, ...] = issues
        super().__init__("; ".join(issue.diagnostics for issue in issues))

    @classmethod
    def single(
        cls,
        code: IssueCode,
        diagnostics: str,
        expression: str | None = None,
        issue_type: IssueType | None = None,
    ) -> Self:
        return cls(Issue(code, diagnostics, expression, issue_type or cls.default_issue_type))

    default_issue_type: ClassVar[IssueType] = "exception"


class InvalidRequest(GatewayError):
    status_code = 400
    default_issue_type: ClassVar[IssueType] = "invalid"


class TokenRequestRejected(GatewayError):
    """An RFC 6749 §5.2 error of the token endpoint; ``oauth_error`` is its ``error`` code."""

    status_code = 400
    default_issue_type: ClassVar[IssueType] = "security"

    def __init__(self, oauth_error: str, *issues: Issue) -> None:
        super().__init__(*issues)
        self.oauth_error = oauth_error

    @classmethod
    def because(cls, oauth_error: str, code: IssueCode, description: str) -> TokenRequestRejected:
        return cls(oauth_error, Issue(code, description, None, cls.default_issue_type))


class Unauthenticated(GatewayError):
    status_code = 401
    default_issue_type: ClassVar[IssueType] = "login"


class Forbidden(GatewayError):
    status_code = 403
    default_issue_type: ClassVar[IssueType] = "forbidden"


class ResourceNotFound(GatewayError):
    status_code = 404
    default_issue_type: ClassVar[IssueType] = "not-found"


class MethodNotAllowed(GatewayError):
    status_code = 405
    default_issue_type: ClassVar[IssueType] = "not-supported"


class NotAcceptable(GatewayError):
    status_code = 406
    default_issue_type: ClassVar[IssueType] = "not-supported"


class RequestTimeout(GatewayError):
    status_code = 408
    default_issue_type: ClassVar[IssueType] = "timeout"


class PayloadTooLarge(GatewayError):
    status_code = 413
    default_issue_type: ClassVar[IssueType] = "too-long"


class UnsupportedMediaType(GatewayError):
    status_code = 415
    default_issue_type: ClassVar[IssueType] = "not-supported"


class UnprocessableEntity(GatewayError):
    status_code = 422
    default_issue_type: ClassVar[IssueType] = "invalid"


class InvalidResource(UnprocessableEntity):
    default_issue_type: ClassVar[IssueType] = "structure"


class BusinessRuleViolation(UnprocessableEntity):
    default_issue_type: ClassVar[IssueType] = "business-rule"


class PreconditionFailed(GatewayError):
    status_code = 412
    default_issue_type: ClassVar[IssueType] = "conflict"


class Conflict(GatewayError):
    status_code = 409
    default_issue_type: ClassVar[IssueType] = "conflict"


class PreconditionRequired(GatewayError):
    status_code = 428
    default_issue_type: ClassVar[IssueType] = "required"


class StoreUnavailable(GatewayError):
    status_code = 503
    default_issue_type: ClassVar[IssueType] = "transient"


class Overloaded(GatewayError):
    status_code = 503
    default_issue_type: ClassVar[IssueType] = "transient"


class DownstreamError(GatewayError):
    status_code = 502
    default_issue_type: ClassVar[IssueType] = "exception"


class DownstreamTimeout(DownstreamError):
    status_code = 504
    default_issue_type: ClassVar[IssueType] = "timeout"

"""What the gateway publishes about its authentication: the SMART configuration document and the
CapabilityStatement's ``rest.security``."""

from __future__ import annotations

from gateway.auth.clients import ASSERTION_ALGORITHMS
from gateway.fhir.types import Resource

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def smart_configuration(token_url: str, scopes: list[str]) -> dict[str, object]:
    return {
        "token_endpoint": token_url,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": scopes,
        "capabilities": ["client-confidential-asymmetric"],
    }


def rest_security(token_url: str) -> Resource:
    return {
        "cors": False,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "description": "SMART Backend Services: client_credentials with a private_key_jwt assertion (RS384 or "
        "ES384) at the token endpoint; every request carries Authorization: Bearer <access token>.",
        "extension": [{"url": OAUTH_URIS, "extension": [{"url": "token", "valueUri": token_url}]}],
    }

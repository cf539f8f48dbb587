"""/openapi.json describes the FHIR API usefully: FHIR media types, errors as OperationOutcome, search parameters."""

from __future__ import annotations

import httpx


async def test_openapi_describes_fhir_answers_errors_and_search(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    post = schema["paths"]["/fhir"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/fhir+json", "application/fhir+xml"}
    assert set(post["responses"]["200"]["content"]) == {"application/fhir+json", "application/fhir+xml"}
    for status in ("400", "413", "415", "422", "503"):
        outcome = post["responses"][status]["content"]["application/fhir+json"]["schema"]
        assert outcome == {"$ref": "#/components/schemas/OperationOutcome"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    search = {p["name"] for p in schema["paths"]["/fhir/{resource_type}"]["get"]["parameters"]}
    assert {"identifier", "patient", "status", "_count", "_lastUpdated"} <= search
    assert "application/json-patch+json" in schema["paths"]["/fhir/Task/{task_id}"]["patch"]["requestBody"]["content"]
    assert "requestBody" in schema["paths"]["/fhir/Task/{task_id}"]["put"]

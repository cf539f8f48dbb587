"""Shared type aliases: a FHIR resource on the way through the gateway is its R4 JSON as a dict."""

from typing import Any

JSONObject = dict[str, Any]
Resource = dict[str, Any]

"""The FHIR package dac.gateway (DESIGN §15): what GET /package.tgz holds, that it is the build's, and that an
independent tool (@medplum/core) loads it and validates with its profiles."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.conformance.files import examples_dir, profiles_dir
from gateway.conformance.package import pack, package_members

ROOT = Path(__file__).resolve().parents[2]
LOADER = ROOT / "tools" / "profiles" / "load-package.mjs"
MEDPLUM = ROOT / "tools" / "profiles" / "node_modules" / "@medplum" / "core" / "package.json"


async def _package(client: httpx.AsyncClient) -> tuple[httpx.Response, dict[str, bytes]]:
    response = await client.get("/package.tgz")
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        members = {}
        for member in archive.getmembers():
            extracted = archive.extractfile(member)
            assert extracted is not None
            members[member.name] = extracted.read()
    return response, members


@pytest.mark.parametrize("auth", ["off", "on"])
async def test_the_package_layout(auth: str, client: httpx.AsyncClient, secure: httpx.AsyncClient) -> None:
    response, members = await _package(client if auth == "off" else secure)  # on: no token needed
    assert response.headers["content-type"] == "application/gzip"
    assert 'filename="dac.gateway-0.1.0.tgz"' in response.headers["content-disposition"]
    manifest = json.loads(members["package/package.json"])
    assert manifest["name"] == "dac.gateway" and manifest["version"] == "0.1.0"
    assert manifest["fhirVersions"] == ["4.0.1"]
    assert manifest["dependencies"] == {"hl7.fhir.r4.core": "4.0.1"}
    for folder in ("package", "package/example"):
        index = json.loads(members[f"{folder}/.index.json"])
        assert index["index-version"] == 1
        listed = {f"{folder}/{entry['filename']}": entry for entry in index["files"]}
        present = {name for name in members if name.rsplit("/", 1)[0] == folder and name.endswith(".json")}
        assert set(listed) == present - {f"{folder}/package.json", f"{folder}/.index.json"}
        for name, entry in listed.items():
            resource = json.loads(members[name])
            assert (resource["resourceType"], resource["id"], resource.get("url")) == (
                entry["resourceType"],
                entry["id"],
                entry.get("url"),
            )
    kinds = {json.loads(members[name])["resourceType"] for name in members if name.count("/") == 1 and "-" in name}
    assert {"StructureDefinition", "ValueSet", "CodeSystem", "OperationDefinition", "SearchParameter"} <= kinds
    assert "package/example/referral-gp.json" in members


async def test_served_package_is_the_build(client: httpx.AsyncClient) -> None:
    """tools/build_profiles.py package and GET /package.tgz: one packing, the same bytes."""
    response = await client.get("/package.tgz")
    assert response.content == pack(package_members(ROOT / "profiles", ROOT / "examples"))
    assert profiles_dir().resolve() == (ROOT / "profiles").resolve()  # an editable install: its package data
    assert examples_dir().resolve() == (ROOT / "examples").resolve()


async def test_medplum_loads_the_package_and_validates_with_it(client: httpx.AsyncClient, tmp_path: Path) -> None:
    if shutil.which("node") is None or not MEDPLUM.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail("Node or tools/profiles/node_modules missing under CI")
        pytest.skip("Node or tools/profiles/node_modules missing (npm ci --prefix tools/profiles)")
    response = await client.get("/package.tgz")
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        archive.extractall(tmp_path, filter="data")
    command = ["node", str(LOADER), str(tmp_path)]
    result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    assert loaded["name"] == "dac.gateway"
    assert "https://fhir.dac-gateway.org/StructureDefinition/dac-servicerequest" in loaded["indexed"]
    assert len(loaded["examples"]) >= 8 and "referral-gp.json" in loaded["examples"]
    assert all(errors == [] for errors in loaded["examples"].values()), loaded["examples"]
    # The profile's fixed intent (order), as the package carries it, is what catches the copy with intent plan.
    for name, errors in loaded["mutated"].items():
        assert any(error.startswith("ServiceRequest.intent") for error in errors), (name, errors)

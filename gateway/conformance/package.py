"""The FHIR package ``dac.gateway`` (NPM layout, FHIR package spec): package/package.json, package/.index.json, our
conformance resources, package/example/ with the example referrals and its .index.json. Made from the package
data, byte for byte the same on every build (no dates), so ``GET /package.tgz`` and ``tools/build_profiles.py
package`` give the same file."""

from __future__ import annotations

import functools
import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from gateway.conformance.files import check_definitions, examples_dir

Json = dict[str, Any]
#: What an .index.json entry copies from its resource (FHIR package spec, index version 1).
_INDEX_KEYS = ("url", "version", "kind", "type", "supplements", "content")


def _dump(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()


def _index(files: dict[str, Json]) -> bytes:
    entries = []
    for name in sorted(files):
        resource = files[name]
        entry: Json = {"filename": name, "resourceType": resource["resourceType"], "id": resource["id"]}
        entry |= {key: resource[key] for key in _INDEX_KEYS if isinstance(resource.get(key), str)}
        entries.append(entry)
    return _dump({"index-version": 1, "files": entries})


def _resources(folder: Path) -> dict[str, Json]:
    found = {}
    for path in sorted(folder.glob("*.json")):
        resource = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(resource, dict) and "resourceType" in resource:
            found[path.name] = resource
    return found


def package_members(profiles: Path, examples: Path) -> dict[str, bytes]:
    """Archive path → content."""
    manifest = json.loads((profiles / "package.json").read_text(encoding="utf-8"))
    resources = _resources(profiles)
    # The examples have no id of their own (they are posted, and the gateway gives ids): named by their file.
    example_files = {
        name: {**resource, "id": resource.get("id") or Path(name).stem}
        for name, resource in _resources(examples).items()
    }
    members = {"package/package.json": _dump(manifest), "package/.index.json": _index(resources)}
    members |= {f"package/{name}": _dump(resource) for name, resource in resources.items()}
    members["package/example/.index.json"] = _index(example_files)
    members |= {f"package/example/{name}": _dump(resource) for name, resource in example_files.items()}
    return members


def pack(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            info.mode = 0o644
            info.mtime = 0
            archive.addfile(info, io.BytesIO(members[name]))
    return gzip.compress(buffer.getvalue(), mtime=0)  # no date anywhere: the same bytes every time


def package_name(profiles: Path) -> str:
    """``{name}-{version}.tgz``, from the manifest."""
    manifest = json.loads((profiles / "package.json").read_text(encoding="utf-8"))
    return f"{manifest['name']}-{manifest['version']}.tgz"


@functools.cache
def served_package() -> tuple[str, bytes]:
    """The package made from the installed package data: its file name and bytes (made once per process)."""
    profiles = check_definitions()
    return package_name(profiles), pack(package_members(profiles, examples_dir()))

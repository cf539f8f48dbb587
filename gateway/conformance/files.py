"""Where the definitions the gateway runs on are: package data (DESIGN §15).

profiles/ and mappings/ are kept at the top of the repository, where other FHIR tools load them; gateway/_data/
holds symbolic links to them, so a wheel carries their content (pyproject.toml's package-data) and an editable
checkout reads them in place. Either way they are found through importlib.resources, never from the working
directory nor from a source tree the installed package may not have."""

from __future__ import annotations

import functools
from importlib.resources import files
from pathlib import Path

#: The FHIR definitions that must be there for the gateway to validate anything: without them it would store
#: whatever it is sent, so start-up stops instead (``check_definitions``).
REQUIRED_PROFILE_FILES = (
    "StructureDefinition-dac-servicerequest.json",
    "StructureDefinition-dac-patient.json",
    "StructureDefinition-dac-task.json",
    "StructureDefinition-dac-referral-message.json",
    "MessageDefinition-referral-request.json",
    "ValueSet-dac-mission.json",
    "r4/StructureDefinition-Bundle.json",
    "r4/StructureDefinition-ServiceRequest.json",
)


class DefinitionsNotFound(Exception):
    """The package data is missing or incomplete (a broken install): the message names what and where."""


def _data() -> Path:
    root = files("gateway") / "_data"
    # A wheel installed on a file system (pip never installs one zipped) or an editable checkout: both are paths.
    if not isinstance(root, Path):
        raise DefinitionsNotFound(f"the gateway's package data is not on a file system ({root!r})")
    return root


def profiles_dir() -> Path:
    """profiles/: our conformance resources, and r4/ the R4 base definitions (profiles/README.md)."""
    return _data() / "profiles"


def examples_dir() -> Path:
    """examples/: the example referrals, which the FHIR package carries (package/example/)."""
    return _data() / "examples"


def mappings_dir() -> Path:
    """mappings/: the routing example, and the HL7 v2 and CDA mapping rules (DESIGN §13)."""
    return _data() / "mappings"


def example_routing() -> Path:
    """The example routing file (mappings/routing/routing.toml): the default of ``GATEWAY_ROUTING``."""
    return _data() / "mappings" / "routing" / "routing.toml"


@functools.cache
def check_definitions() -> Path:
    """profiles/ if every required definition is there; else DefinitionsNotFound naming the missing ones."""
    folder = profiles_dir()
    missing = [name for name in REQUIRED_PROFILE_FILES if not (folder / name).is_file()]
    if missing:
        raise DefinitionsNotFound(
            f"FHIR definitions missing from {folder}: {', '.join(missing)} — the installation is incomplete "
            "(reinstall the gateway; from a checkout, profiles/ must be there: tools/build_profiles.py build)"
        )
    return folder

"""The definitions are package data (DESIGN §15): found through importlib.resources, and their absence stops
start-up with a clear message instead of a gateway that validates nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway import cli
from gateway.config import EXAMPLE_ROUTING
from gateway.conformance import files

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(files, "profiles_dir", lambda: tmp_path)
    files.check_definitions.cache_clear()
    yield tmp_path
    files.check_definitions.cache_clear()


def test_found_through_the_package() -> None:
    assert files.check_definitions().resolve() == (ROOT / "profiles").resolve()
    assert EXAMPLE_ROUTING.resolve() == (ROOT / "mappings" / "routing" / "routing.toml").resolve()
    assert (files.profiles_dir() / "r4" / "StructureDefinition-Bundle.json").is_file()


def test_missing_definitions_are_named(no_profiles: Path) -> None:
    (no_profiles / "StructureDefinition-dac-patient.json").write_text("{}")
    with pytest.raises(files.DefinitionsNotFound) as caught:
        files.check_definitions()
    message = str(caught.value)
    assert "StructureDefinition-dac-servicerequest.json" in message and str(no_profiles) in message
    assert "StructureDefinition-dac-patient.json" not in message


@pytest.mark.parametrize("command", [["validate", str(ROOT / "examples" / "referral-gp.json")], ["serve"]])
def test_start_up_stops_without_them(no_profiles: Path, command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_AUTH", "off")
    result = CliRunner().invoke(cli.app, command)
    assert result.exit_code == 2
    assert "cannot load the FHIR definitions" in result.output and "dac-servicerequest" in result.output

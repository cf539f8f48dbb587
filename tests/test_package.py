from __future__ import annotations

import gateway
from gateway.errors import ISSUE_DEFINITIONS, IssueCode


def test_exports_are_sorted_and_importable() -> None:
    assert gateway.__all__ == sorted(gateway.__all__)
    for name in gateway.__all__:
        assert getattr(gateway, name) is not None


def test_every_issue_code_has_a_definition() -> None:
    assert set(ISSUE_DEFINITIONS) == set(IssueCode)
    assert all(definition.endswith(".") for definition in ISSUE_DEFINITIONS.values())
    codes = [str(code) for code in IssueCode]
    assert len(codes) == len(set(codes))


def test_the_published_dac_issue_codesystem_lists_every_code() -> None:
    import json
    from pathlib import Path

    published = json.loads((Path(__file__).resolve().parents[1] / "profiles" / "CodeSystem-dac-issue.json").read_text())
    assert published["url"] == "https://fhir.dac-gateway.org/CodeSystem/dac-issue"
    assert {concept["code"] for concept in published["concept"]} == {str(code) for code in IssueCode}


def test_the_wheel_carries_every_file_the_gateway_reads_from_its_package_data() -> None:
    """The wheel holds of gateway/_data/ only what pyproject.toml's package-data globs name. The merge of issues 15
    and 16 kept the old list (migrations, py.typed): the wheel carried no profile, no routing, no example — an
    installed gateway stopped at start-up ('cannot load the FHIR definitions'), /package.tgz had no examples. Each
    file read at run time (profiles/*.json and r4/, the routing and its territories, the examples the FHIR package
    carries) must be matched by a glob; tools/check_wheel.py builds and runs the real wheel in CI."""
    import tomllib
    from pathlib import Path

    root = Path(gateway.__file__).resolve().parent
    globs = tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["gateway"]
    carried = {path.relative_to(root).as_posix() for pattern in globs for path in root.glob(pattern)}
    data = root / "_data"
    read = [
        *(data / "profiles").glob("*.json"),
        *(data / "profiles" / "r4").glob("*.json"),
        *(data / "mappings" / "routing").iterdir(),
        *(path for path in (data / "mappings" / "hl7v2").rglob("*") if path.is_file()),  # the v2 and CDA rules
        *(path for path in (data / "mappings" / "cda").rglob("*") if path.is_file()),
        *(data / "examples").glob("*.json"),
    ]
    assert len(read) > 100
    missing = sorted(
        path.relative_to(root).as_posix() for path in read if path.relative_to(root).as_posix() not in carried
    )
    assert not missing, f"{len(missing)} files not in the wheel, e.g. {missing[:5]}"

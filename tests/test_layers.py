"""The rooms' import contracts (DESIGN §6, ``[tool.importlinter]`` in pyproject.toml): data flows one way, from the
edges down; the referral's room imports only fhir and errors; the store sits at the bottom side."""

from __future__ import annotations

from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_no_room_imports_a_higher_one(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    report = capsys.readouterr().out
    assert code == 0, report
    assert "0 broken" in report

"""The shipped automations file is valid Prefect automations; a bad one is one UsageError naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.alerts import load_automations
from flows.cli import main
from tasks.errors import UsageError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_automations_are_valid_and_take_the_notify_block() -> None:
    automations = load_automations(REPO / "deployments/automations.yaml", "my-hook")
    assert {a["name"] for a in automations} == {"bakery-run-failed", "bakery-production-stale"}
    assert all(action["block_document_name"] == "my-hook" for a in automations for action in a["actions"])


def test_a_bad_automation_is_exit_2_naming_file_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "automations.yaml"
    bad.write_text("automations:\n  - name: x\n    trigger: {type: event, posture: Sideways}\n    actions: []\n")
    with pytest.raises(UsageError, match=r"automations\[0\] \(x\): trigger"):
        load_automations(bad)
    assert main(["alerts", "apply", "--file", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0]

"""deployments/ci/annotate.py: `bake validate --json` findings as GitHub annotations / a GitLab Code Quality report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("annotate", REPO / "deployments" / "ci" / "annotate.py")
assert spec and spec.loader
annotate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(annotate)

FINDINGS = [
    {"file": str(REPO / "packer" / "a.pkr.hcl"), "line": 3, "rule": "encrypt-boot", "severity": "warning",
     "message": "50%, done: yes\nsecond line", "waived": None},
    {"file": str(REPO / "packer" / "b.pkr.hcl"), "line": 0, "rule": "unknown-source", "severity": "error",
     "message": "no such source", "waived": None},
    {"file": str(REPO / "packer" / "a.pkr.hcl"), "line": 9, "rule": "cleanup-last", "severity": "warning",
     "message": "waived one", "waived": "# bakery:ignore"},
]  # fmt: skip


def test_github_annotations_are_escaped_relative_and_leveled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert annotate.github(FINDINGS) == [
        "::warning file=packer/a.pkr.hcl,line=3,title=bakery encrypt-boot::50%25, done: yes%0Asecond line",
        "::error file=packer/b.pkr.hcl,title=bakery unknown-source::no such source",
        "::notice file=packer/a.pkr.hcl,line=9,title=bakery cleanup-last (waived%3A # bakery%3Aignore)::waived one",
    ]


def test_gitlab_code_quality_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO)
    document = tmp_path / "validate.json"
    document.write_text(json.dumps({"valid": True, "findings": FINDINGS}))
    assert annotate.main(["gitlab", str(document)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["severity"], r["location"]) for r in report] == [
        ("minor", {"path": "packer/a.pkr.hcl", "lines": {"begin": 3}}),
        ("major", {"path": "packer/b.pkr.hcl", "lines": {"begin": 1}}),
        ("info", {"path": "packer/a.pkr.hcl", "lines": {"begin": 9}}),
    ]
    assert len({r["fingerprint"] for r in report}) == 3


def test_a_missing_document_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert annotate.main(["github", str(tmp_path / "none.json")]) == 2
    assert capsys.readouterr().err.count("\n") == 1

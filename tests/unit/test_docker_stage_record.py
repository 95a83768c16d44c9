"""The Docker family's stage record: one model (``StageRecord``) for the local file and the registry's."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from tasks.errors import JobFailed
from tasks.targets.base import Intent
from tasks.targets.docker.stages import FamilyRecord, checked_record, record_stage


def test_a_missing_record_is_an_empty_one_of_the_family() -> None:
    assert checked_record({}, "app") == {"family": "app", "images": {}, "history": []}


def test_what_bakery_writes_reads_back_unchanged_fields_it_does_not_know_included(tmp_path: Path) -> None:
    record = FamilyRecord("app", tmp_path)
    with record.update() as data:
        record_stage(data, "sha256:" + "a" * 64, "1.0", "staging", "run-1", {"bakery:forced": "true"})
        data["images"]["sha256:" + "a" * 64]["from_a_newer_bakery"] = {"kept": True}
        intent = Intent("run-2", "promote", "app", "sha256:" + "a" * 64, "staging", ("sha256:" + "b" * 64,), "now")
        data["intent"] = {**asdict(intent), "old": list(intent.old)}
    written = json.loads(record.path.read_text())
    assert record.read() == written
    assert written["images"]["sha256:" + "a" * 64]["from_a_newer_bakery"] == {"kept": True}


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ([], "expected a JSON object, got list"),
        ({"images": []}, "images: Input should be a valid dictionary"),
        ({"images": {"sha256:1": {"stage": 3}}}, "images.sha256:1.stage: Input should be a valid string"),
        ({"history": [{"image": "x"}]}, "history.0.at: Field required"),
        ({"intent": {"run_id": "r"}}, "intent.action: Field required"),
    ],
)
def test_a_record_of_another_shape_is_one_line_naming_the_field(tmp_path: Path, raw: object, problem: str) -> None:
    record = FamilyRecord("app", tmp_path)
    record.path.write_text(json.dumps(raw))
    with pytest.raises(JobFailed, match="unreadable promotion record") as failed:
        record.read()
    assert problem in str(failed.value)

"""The Docker family's stage record: one model (``StageRecord``) for the local file and the registry's."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import cast

import docker
import pytest

from tasks.errors import JobFailed
from tasks.targets.base import Intent
from tasks.targets.docker.stages import DockerStages, FamilyRecord, checked_record, record_stage


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


def _record_with_intent(directory: Path, name: str, family: str) -> None:
    intent = Intent("run-9", "promote", family, "sha256:" + "c" * 64, "staging", (), "now")
    (directory / name).write_text(json.dumps({"family": family, "intent": {**asdict(intent), "old": []}}))


def test_families_with_intent_reads_each_record_through_the_model_and_skips_unfinished_writes(
    tmp_path: Path,
) -> None:
    _record_with_intent(tmp_path, "app.json", "app")
    (tmp_path / "quiet.json").write_text(json.dumps({"family": "quiet"}))
    _record_with_intent(tmp_path, ".app.k2j3.json", "app")  # a write killed before its rename
    stages = DockerStages(engine=cast(docker.DockerClient, object()), records=tmp_path)  # records only

    assert stages.families() == ["app", "quiet"]
    assert stages.families_with_intent() == ["app"]

    (tmp_path / "broken.json").write_text('{"family": "broken", "intent": {"run_id": "r"')  # cut short
    # listed, never skipped unseen: the sweep's own read of it names the file, for that family alone
    assert stages.families_with_intent() == ["app", "broken"]
    with pytest.raises(JobFailed, match=r"broken\.json: unreadable promotion record"):
        stages.read_intent("broken")

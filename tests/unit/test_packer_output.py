"""Packer's machine-readable lines and manifests, as 1.6.6 and current Packer write them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.errors import JobFailed
from tasks.packer import failure_detail, parse_machine_line, read_manifest, redactor


def test_ui_line_unescapes_commas_and_newlines() -> None:
    line = parse_machine_line(
        "1764171000,docker.base,ui,say,==> docker.base: Provisioning with shell script%!(PACKER_COMMA) step 1\\nnext\n"
    )
    assert line is not None
    assert (line.timestamp, line.target, line.type) == (1764171000, "docker.base", "ui")
    assert line.data == ("say", "==> docker.base: Provisioning with shell script, step 1\nnext")


def test_artifact_line_keeps_all_fields() -> None:
    line = parse_machine_line("1764171000,docker.base,artifact,0,id,sha256:abc")
    assert line is not None
    assert line.type == "artifact"
    assert line.data == ("0", "id", "sha256:abc")


@pytest.mark.parametrize("text", ["", "plain text from a plugin", "abc,def,ghi", "12,onlytwo"])
def test_lines_not_in_the_format_are_skipped(text: str) -> None:
    assert parse_machine_line(text) is None


def _manifest(tmp_path: Path, builds: list[dict[str, object]]) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"builds": builds, "last_run_uuid": "b"}))
    return path


def test_manifest_records(tmp_path: Path) -> None:
    path = _manifest(
        tmp_path,
        [
            {
                "name": "base",
                "builder_type": "docker",
                "build_time": 1,
                "artifact_id": "sha256:old",
                "packer_run_uuid": "a",
                "custom_data": {"image_version": "1"},
            },
            {
                "name": "base",
                "builder_type": "amazon-ebs",
                "build_time": 2,
                "artifact_id": "us-east-1:ami-1",
                "packer_run_uuid": "b",
                "custom_data": None,
            },
        ],
    )
    records = read_manifest(path)
    assert [r.source for r in records] == ["docker.base", "amazon-ebs.base"]
    assert [(r.artifact_id, r.packer_run_uuid) for r in records] == [("sha256:old", "a"), ("us-east-1:ami-1", "b")]


@pytest.mark.parametrize("content", ["not json", '{"builds": [{"name": "x"}]}', '{"nothing": 1}'])
def test_unreadable_manifest_names_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(content)
    with pytest.raises(JobFailed, match=r"manifest\.json: not a readable Packer manifest"):
        read_manifest(path)


def test_redactor_masks_secrets_also_in_their_escaped_form() -> None:
    mask = redactor(["s3cr3t,pass", "tok3n-value", "abc"])
    line = "1,amazon-ebs.base,ui,say,password=s3cr3t%!(PACKER_COMMA)pass token tok3n-value abc"
    assert mask(line) == "1,amazon-ebs.base,ui,say,password=<sensitive> token <sensitive> abc"


def test_failure_detail_is_packers_verdict_with_the_steps_last_output() -> None:
    errors = [
        "==> docker.base: debconf: delaying package configuration",
        "==> docker.base: injected-fault",
        "Build 'docker.base' errored after 2 seconds 705 milliseconds: Script exited with non-zero exit status: 7.",
        "==> Some builds didn't complete successfully and had errors:",
        "Script exited with non-zero exit status: 7.",
    ]
    assert failure_detail(errors) == (
        "docker.base: Script exited with non-zero exit status: 7. "
        "(last output: debconf: delaying package configuration; injected-fault)"
    )


def test_failure_detail_without_a_verdict_says_each_error_once() -> None:
    assert failure_detail(["Error: boom", "Error: boom", "other"]) == "Error: boom; other"

"""Bad requests: exit 2, one clear line naming the culprit, no traceback, nothing started."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flows.cli import main

REPO = Path(__file__).resolve().parents[2]
BROKEN_HCL = 'source "docker" "base" {\n  image = \n}\n'


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A copy of the shipped template set the test may break."""
    directory = tmp_path / "packer"
    shutil.copytree(REPO / "packer", directory)
    return directory


def run_bake(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(main(list(argv)))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return int(exited.value.code or 0), err.strip()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--version", "1.0; touch x"], "--version '1.0; touch x': not a valid image version"),
        (["run", "--version", "1.0 beta"], "--version '1.0 beta': not a valid image version"),
        (["run", "--version", "1" * 200], "not a valid image version"),
        (["run", "--target", "nosuch"], "--target 'nosuch': unknown target (expected one of docker, aws)"),
        (["run", "--family", "App Base"], "--family 'App Base': not a valid image family"),
        (["run", "--ttl", "soon"], "--ttl 'soon': not a duration"),
        (["run", "--ssh-timeout", "10"], "--ssh-timeout '10': not a duration"),
        (["run", "--template-dir", "/nonexistent"], "--template-dir /nonexistent: not a directory"),
        (["run", "--spec", "/nonexistent.yaml"], "--spec /nonexistent.yaml: no such file or directory"),
        (["run", "--var", "novalue"], "--var 'novalue': expected NAME=VALUE"),
        (["run", "--var", "image_version=2"], "--var image_version: set by bakery from --version"),
        (["run", "--var-file", "/nonexistent.pkrvars.hcl"], "--var-file /nonexistent.pkrvars.hcl: no such"),
        (["build", "--only", "docker.nosuch"], "--only docker.nosuch: no such source"),
        (["build", "--lint-ignore", "nosuch"], "--lint-ignore nosuch: no such lint rule"),
        (["build", "--lint-ignore", "unknown-source"], "--lint-ignore unknown-source: an error (it cannot work)"),
        (["build", "--version-var", "no such"], "--version-var 'no such': not a Packer variable name"),
        (["build", "--version-var", "release"], "packer declares no such variable (variables: ami_users"),
        (["build", "--version-var", "v", "--var", "v=1"], "--var v: set by bakery from --version"),
    ],
)
def test_bad_request_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    code, err = run_bake(capsys, *argv)
    assert code == 2
    assert expected in err
    assert len(err.splitlines()) == 1


def test_hcl_syntax_error_is_named_with_file_and_line(capsys: pytest.CaptureFixture[str], templates: Path) -> None:
    (templates / "docker.pkr.hcl").write_text(BROKEN_HCL)
    code, err = run_bake(capsys, "run", "--template-dir", str(templates))
    assert code == 2
    assert f"{templates / 'docker.pkr.hcl'}:2:" in err
    assert "HCL syntax error" in err


def test_missing_required_variable_is_named(capsys: pytest.CaptureFixture[str], templates: Path) -> None:
    extra = 'variable "team" {\n  type = string\n}\n'
    (templates / "team.pkr.hcl").write_text(extra)
    code, err = run_bake(capsys, "validate", "--template-dir", str(templates))
    assert code == 2
    assert "team.pkr.hcl:1: variable 'team' is required and not set (use --var team=...)" in err
    code, err = run_bake(capsys, "validate", "--template-dir", str(templates), "--var", "team=core")
    assert code == 0, err


def test_a_lint_warning_is_reported_and_strict_makes_it_fail(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, templates: Path
) -> None:
    aws = templates / "aws.pkr.hcl"
    aws.write_text(aws.read_text().replace("encrypt_boot = true", "encrypt_boot = false"))
    code, err = run_bake(capsys, "validate", "--template-dir", str(templates), "--target", "aws")
    assert code == 0, err
    assert "aws.pkr.hcl:25: warning: amazon-ebs.base: AMI without encrypt_boot = true [encrypt-boot]" in caplog.text
    code, err = run_bake(capsys, "validate", "--template-dir", str(templates), "--target", "aws", "--strict")
    assert code == 2
    assert "template checks failed (--strict: warnings are errors)" in err
    assert "AMI without encrypt_boot = true [encrypt-boot]" in err


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_bake(capsys, "run", "--nosuch")
    assert code == 2
    assert "unrecognized arguments: --nosuch" in err


def test_sigterm_is_one_line_and_exit_143(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """SIGTERM while a command runs (a worker stopping, a CI job cancelled): one line saying so, exit 143
    (128 + SIGTERM), and the process's own SIGTERM handler is back afterwards."""
    import os
    import signal

    from flows import cli

    def terminated_while_running(args: object) -> dict[str, object]:
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(cli, "cmd_server", terminated_while_running)
    before = signal.getsignal(signal.SIGTERM)
    code, err = run_bake(capsys, "server", "status")
    assert (code, err.splitlines()[-1]) == (143, "bake server: terminated by SIGTERM")
    assert signal.getsignal(signal.SIGTERM) is before

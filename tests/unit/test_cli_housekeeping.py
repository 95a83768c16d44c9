"""`bake retention` and `bake sweep` bad requests: exit 2, one line, nothing started."""

from __future__ import annotations

import pytest

from flows.cli import main


def run_bake(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.out == ""
    return code, captured.err.strip()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["retention", "--keep", "0"], "bake retention: --keep '0': expected a whole number of images to keep"),
        (["retention", "--keep", "-3"], "--keep '-3': expected a whole number"),
        (["retention", "--keep", "many"], "--keep 'many': expected a whole number"),
        (["retention", "--target", "gcp"], "--target 'gcp': unknown target (expected one of docker, aws)"),
        (["retention", "--family", "App Base"], "--family 'App Base': not a valid image family"),
        (["sweep", "--max-age", "3 days"], "bake sweep: --max-age '3 days': not a duration"),
        (["sweep", "--max-age", "10"], "--max-age '10': not a duration"),
        (["sweep", "--target", "azure"], "--target 'azure': unknown target"),
    ],
)
def test_bad_request_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    code, err = run_bake(capsys, *argv)
    assert code == 2
    assert expected in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("command", ["retention", "sweep"])
def test_aws_without_a_region_is_a_bad_request(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: object, command: str
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    code, err = run_bake(capsys, command, "--target", "aws")
    assert code == 2
    assert (
        err == f"bake {command}: --target aws: AWS is not configured: no region (set AWS_REGION or AWS_DEFAULT_REGION)"
    )

"""Public template sets (tests/fixtures/templates, licences in its README) pass ``bake validate`` as their
authors wrote them, warnings allowed; what Packer itself accepts, bakery does not refuse."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from flows.cli import main
from tasks import packer

SETS = Path(__file__).resolve().parents[1] / "fixtures" / "templates"
MORE_COMPLEX = SETS / "learn-more-complex"

# (set, extra bake/packer options, the source bakery must pick, the warnings it must report)
ACCEPTED = [
    ("learn-docker", [], [], "docker.example", {"cleanup-last", "version-tag"}),
    (
        "learn-aws",
        ["--target", "aws"],
        [],
        "amazon-ebs.example",
        {"cloud-init-wait", "cleanup-last", "version-tag", "encrypt-boot"},
    ),
    (
        "learn-more-complex",
        ["--only", "docker.example", "--var-file", str(MORE_COMPLEX / "dev.pkrvars.hcl")],
        ["-var-file", str(MORE_COMPLEX / "dev.pkrvars.hcl")],
        "docker.example",
        {"cleanup-last", "version-tag", "fmt"},
    ),
]


def bake(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


@pytest.mark.parametrize(("name", "options", "packer_options", "source", "warnings"), ACCEPTED)
def test_a_set_packer_accepts_passes_bake_validate(
    capsys: pytest.CaptureFixture[str],
    name: str,
    options: list[str],
    packer_options: list[str],
    source: str,
    warnings: set[str],
) -> None:
    directory = SETS / name
    accepted = subprocess.run(
        [packer.find_packer(), "validate", *packer_options, "."],
        cwd=directory,
        env=packer.packer_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    code, out, err = bake(capsys, "--json", "validate", "--template-dir", str(directory), *options)
    assert code == 0, err
    report = json.loads(out)
    assert report["sources"] == [source]
    assert {f["rule"] for f in report["findings"]} == warnings
    assert {f["severity"] for f in report["findings"]} == {"warning"}


def test_several_sources_of_the_type_are_a_clear_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = bake(capsys, "validate", "--template-dir", str(MORE_COMPLEX))
    assert code == 2
    assert err.strip().endswith(
        "2 docker sources for --target docker (docker.example-2, docker.example); choose one with --only"
    )


def test_a_set_that_needs_a_newer_packer_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    found = packer.packer_version()
    if packer.satisfies(found, ">= 1.7.0"):
        pytest.skip("this Packer supports required_plugins")
    code, _, err = bake(capsys, "validate", "--template-dir", str(SETS / "plugin-amazon-example"), "--target", "aws")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "build.pkr.hcl:2: the templates need Packer >= 1.7.0 (required_plugins" in err
    assert f"found Packer {'.'.join(map(str, found))}" in err

"""The bad-input catalogue: each request exits 2 with one short line naming the culprit, no traceback,
and neither Docker nor the EC2 endpoint shows anything new afterwards.

Every case runs the real `bake` in a subprocess, as a user would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from tasks.ssh import generate_keypair
from tests.conftest import ec2_inventory
from tests.e2e.conftest import BAKE, REPO

pytestmark = pytest.mark.e2e
SETS = REPO / "tests" / "fixtures" / "templates"  # public template sets (licences in their README)
TARGET = "docker, aws"  # every case checks that neither Docker nor EC2 shows anything new


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    expected: str  # what the one line must say: the culprit and what was wrong


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def templates(tmp: Path, edit: Callable[[Path], object]) -> str:
    directory = tmp / "packer"
    shutil.copytree(REPO / "packer", directory)
    edit(directory)
    return str(directory)


def cases(tmp: Path) -> list[Case]:
    spec = str(REPO / "packer/test/image_spec.yaml")
    key = write(tmp / "not-a-key", "this is not a private key\n")
    verify = ("verify", "--host", "127.0.0.1", "--port", "2222", "--user", "u", "--key", key)
    good_key = (*verify[:-1], str(generate_keypair(tmp)[0]))
    host_key = ("--host-key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBvGA0ACsbTAgfg3SRv6cWu4sEBBOy8Qr9ZHtQ3pr/kh")
    hcl = templates(
        tmp / "hcl", lambda d: (d / "docker.pkr.hcl").write_text('source "docker" "base" {\n  image =\n}\n')
    )
    not_utf8 = tmp / "families-latin1.yaml"
    not_utf8.write_bytes(b"families:\n  - family: caf\xe9\n")
    bad_padding = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBvGA0ACsbTAgfg3SRv6cWu4sEBBOy8Qr9ZHtQ3pr/k"
    known_hosts = write(tmp / "known_hosts", f"[127.0.0.1]:2222 {bad_padding}\n")
    required = templates(
        tmp / "required", lambda d: (d / "team.pkr.hcl").write_text('variable "team" {\n  type = string\n}\n')
    )
    return [
        Case("malformed HCL", ("run", "--template-dir", hcl), "docker.pkr.hcl:2:"),
        Case("missing required variable", ("validate", "--template-dir", required), "variable 'team' is required"),
        Case(
            "unknown source for a target", ("build", "--only", "docker.nosuch"), "--only docker.nosuch: no such source"
        ),
        Case("version with shell metacharacters", ("run", "--version", "1.0;touch x"), "--version '1.0;touch x'"),
        Case("version with a space", ("run", "--version", "1.0 rc1"), "--version '1.0 rc1'"),
        Case("version of 200 characters", ("run", "--version", "9" * 200), "not a valid image version"),
        Case("family that cannot be a tag", ("run", "--family", "App_Base!"), "--family 'App_Base!'"),
        Case("family with uppercase", ("build", "--family", "AppBase"), "--family 'AppBase'"),
        Case("version with a trailing newline", ("run", "--version", "1.0\n"), "--version '1.0\\n'"),
        Case("family with a trailing newline", ("run", "--family", "app-base\n"), "--family 'app-base\\n'"),
        Case("family the template refuses (underscore)", ("run", "--family", "app_base"), "--family 'app_base'"),
        Case("duration that overflows", ("run", "--ttl", "99999999999d"), "--ttl '99999999999d': too long"),
        Case("families file not UTF-8", ("rebuild", "--families", str(not_utf8)), "families-latin1.yaml: not UTF-8"),
        Case(
            "malformed known_hosts",
            (*good_key, "--known-hosts", known_hosts, "--spec", spec),
            "known_hosts:1: not a known_hosts line",
        ),
        Case("spec YAML syntax error", ("run", "--spec", write(tmp / "s1.yaml", "package: [nginx\n")), "s1.yaml"),
        Case(
            "spec unknown key",
            ("run", "--spec", write(tmp / "s2.yaml", "service:\n  nginx:\n    enabeld: true\n")),
            "service.nginx.enabeld",
        ),
        Case(
            "spec wrong type",
            ("run", "--spec", write(tmp / "s3.yaml", "port:\n  tcp:80:\n    listening: maybe\n")),
            "port.tcp:80.listening",
        ),
        Case(
            "spec bad regex",
            ("run", "--spec", write(tmp / "s4.yaml", "file:\n  /etc/x:\n    contents: ['/a(b/']\n")),
            "file./etc/x.contents",
        ),
        Case(
            "spec unsupported attribute",
            ("run", "--spec", write(tmp / "s5.yaml", "http:\n  http://x:\n    status: 200\n    proxy: p:3128\n")),
            "http.http://x.proxy: unsupported attribute",
        ),
        Case(
            "spec template variable missing",
            ("run", "--spec", write(tmp / "s6.yaml", "package:\n  {{ .Vars.pkg }}: {installed: true}\n")),
            "s6.yaml:2: template: .Vars.pkg: no such variable",
        ),
        Case("spec file missing", ("run", "--spec", str(tmp / "nosuch.yaml")), "nosuch.yaml"),
        Case("unknown target", ("run", "--target", "gcp"), "--target 'gcp': unknown target"),
        Case("bad duration", ("run", "--ttl", "2 hours"), "--ttl '2 hours': not a duration"),
        Case("bad ssh timeout", ("test", "--image", "x", "--ssh-timeout=-5s"), "--ssh-timeout '-5s'"),
        Case("missing template dir", ("run", "--template-dir", str(tmp / "nowhere")), "nowhere: not a directory"),
        Case("malformed --var", ("run", "--var", "just-a-name"), "--var 'just-a-name': expected NAME=VALUE"),
        Case("image_version as --var", ("build", "--var", "image_version=1"), "--var image_version"),
        Case("missing var file", ("build", "--var-file", str(tmp / "no.pkrvars.hcl")), "no.pkrvars.hcl"),
        Case("unreadable key file", (*verify, *host_key, "--spec", spec), "not-a-key: cannot load private key"),
        Case("malformed host key", (*good_key, "--host-key", "ssh-ed25519 !!!", "--spec", spec), "host key"),
        Case("--keep 0", ("retention", "--keep", "0"), "--keep"),
        Case("--keep negative", ("retention", "--keep", "-3"), "--keep"),
        Case("bad --max-age", ("sweep", "--max-age", "soon"), "--max-age 'soon'"),
        Case("promoting an unknown image", ("promote", "--image", "nosuch:1", "--to", "production"), "nosuch:1"),
        Case("rollback of a bad family name", ("rollback", "--family", "Not A Family"), "--family 'Not A Family'"),
        Case("AWS option on the docker target", ("run", "--subnet", "subnet-1"), "--subnet"),
        Case(
            "template set needing a newer Packer",
            ("validate", "--target", "aws", "--template-dir", str(SETS / "plugin-amazon-example")),
            "the templates need Packer >= 1.7.0",
        ),
        Case(
            "several sources of the target's type",
            ("build", "--template-dir", str(SETS / "learn-more-complex")),
            "choose one with --only",
        ),
        Case("waiving an error", ("run", "--lint-ignore", "unknown-source"), "cannot be waived"),
        Case(
            "AMI without encrypt_boot under --strict",
            (
                "validate",
                "--strict",
                "--target",
                "aws",
                "--template-dir",
                templates(
                    tmp / "enc",
                    lambda d: (d / "aws.pkr.hcl").write_text(
                        (d / "aws.pkr.hcl").read_text().replace("encrypt_boot = true", "encrypt_boot = false")
                    ),
                ),
            ),
            "encrypt_boot",
        ),
    ]


def families_of(argv: tuple[str, ...]) -> set[str]:
    """The families a request names (``--family``), and the default one a run of none would use."""
    named = {argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--family"}
    return named | {"app-base"}


def run_containers(engine: docker.DockerClient, families: set[str], packer_tmp: Path) -> set[str]:
    """Containers this request could have made: test instances of its families (labelled), and Packer
    builders whose files are in this test's own Packer directory. Never another suite's on the engine."""

    def ours(container: Any) -> bool:
        labels = container.labels or {}
        if "bakery.run-id" in labels and labels.get("bakery.family", "") in families:
            return True
        mounts = container.attrs.get("Mounts") or []
        return any(Path(m.get("Source") or "/").is_relative_to(packer_tmp) for m in mounts)

    return {c.id for c in engine.containers.list(all=True, ignore_removed=True) if ours(c)}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    return {c.name: c for c in cases(tmp_path_factory.mktemp("bad-input"))}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case_name" in metafunc.fixturenames:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            names = [c.name for c in cases(Path(tmp))]
        metafunc.parametrize("case_name", names)


def test_bad_request_exits_2_and_launches_nothing(
    case_name: str, catalogue: dict[str, Case], engine: docker.DockerClient, aws_env: str, tmp_path: Path
) -> None:
    """Bad request: exit 2 with one line naming the culprit, nothing new in Docker or EC2."""
    case = catalogue[case_name]
    families = families_of(case.argv)
    packer_tmp = tmp_path / "packer-tmp"  # a builder this request started would mount a directory below it
    packer_tmp.mkdir()
    containers_before = run_containers(engine, families, packer_tmp)
    ec2_before = ec2_inventory(aws_env)
    env = {**os.environ, "PACKER_TMP_DIR": str(packer_tmp)}
    result = subprocess.run(
        [BAKE, *case.argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert case.expected in line
    assert len(line) < 400
    assert run_containers(engine, families, packer_tmp) == containers_before
    assert ec2_inventory(aws_env) == ec2_before

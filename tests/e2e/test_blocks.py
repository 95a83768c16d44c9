"""Credentials and secrets from Prefect blocks, against a real Prefect server and the moto server.

With NO AWS credentials in the environment (nor in a shared file or an instance role), an AwsCredentials
block holding moto's credentials is enough for bakery's boto3 clients (retention, the post-build tagging)
and for packer's amazon-ebs build, which gets them through its own subprocess environment only. A Secret
block reaches packer as ``PKR_VAR_<name>``, masked, and appears in no flow parameter, log or command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.cli import main
from tests.aws_seam import FIXTURE, REGION, assert_nothing_left, version
from tests.e2e.conftest import BAKE, REPO
from tests.prefect_api import prefect_api

pytestmark = pytest.mark.e2e

CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@pytest.fixture
def no_aws_credentials(aws_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The moto endpoint and region stay; every way to find credentials is taken away."""
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("BAKERY_AWS_WAITER_DELAY", "0.2")
    monkeypatch.setenv("BAKERY_STATE_DIR", str(tmp_path / "state"))
    return aws_env


@pytest.fixture
def ec2(no_aws_credentials: str) -> Any:
    """The test's own EC2 client on moto, with credentials of its own (the environment has none)."""
    import boto3

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    return session.client("ec2", region_name=REGION, endpoint_url=no_aws_credentials)


@pytest.fixture
def secret_key() -> str:
    """moto takes any key pair: a distinctive secret lets the test look for it in every output."""
    return f"moto-secret-{uuid.uuid4().hex}"


@pytest.fixture
def credentials_block(prefect_api_url: str, secret_key: str) -> Iterator[str]:
    from prefect_aws import AwsCredentials

    name = f"t-blocks-aws-{uuid.uuid4().hex[:8]}"
    AwsCredentials(aws_access_key_id="testing", aws_secret_access_key=secret_key).save(name)
    yield name
    _delete_block(prefect_api_url, name)


@pytest.fixture
def secret_block(prefect_api_url: str) -> Iterator[tuple[str, str]]:
    from prefect.blocks.system import Secret

    name, value = f"t-blocks-secret-{uuid.uuid4().hex[:8]}", f"s3cr3t-{uuid.uuid4().hex}"
    Secret(value=value).save(name)
    yield name, value
    _delete_block(prefect_api_url, name)


def _delete_block(api_url: str, name: str) -> None:
    with prefect_api(api_url) as api:
        for doc in api.post("/block_documents/filter", json={"block_documents": {"name": {"any_": [name]}}}).json():
            api.delete(f"/block_documents/{doc['id']}")


def bake_subprocess(api_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": api_url}
    return subprocess.run([BAKE, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture
def bake_here(prefect_api_url: str, capfd: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """`bake` in this process, so the test can see this process's environment and packer's command line."""

    def run(*argv: str) -> tuple[int, str, str]:
        capfd.readouterr()
        code = main(list(argv))
        out, err = capfd.readouterr()
        return code, out, err

    return run


def test_retention_uses_the_block_and_nothing_else(
    no_aws_credentials: str, credentials_block: str, prefect_api_url: str
) -> None:
    without = bake_subprocess(prefect_api_url, "retention", "--target", "aws", "--json")
    assert without.returncode == 2, without.stderr[-2000:]
    assert "no credentials" in without.stderr

    done = bake_subprocess(
        prefect_api_url, "retention", "--target", "aws", "--json", "--aws-credentials-block", credentials_block
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["applied"] is False


def test_a_wrong_block_name_is_one_line_and_exit_2(no_aws_credentials: str, prefect_api_url: str) -> None:
    for args in (
        ("retention", "--target", "aws", "--aws-credentials-block", "no-such-block"),
        ("build", "--target", "aws", "--template-dir", FIXTURE, "--aws-credentials-block", "no-such-block"),
        ("build", "--target", "aws", "--template-dir", FIXTURE, "--secret-var", "source_commit=no-such-secret"),
        ("retention", "--target", "docker", "--aws-credentials-block", "some-block"),
    ):
        result = bake_subprocess(prefect_api_url, *args)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "no-such" in lines[0] or "only with --target aws" in lines[0]


def test_packer_build_gets_block_credentials_and_secret_in_its_own_environment_only(
    no_aws_credentials: str,
    credentials_block: str,
    secret_block: tuple[str, str],
    secret_key: str,
    bake_here: Callable[..., tuple[int, str, str]],
    ec2: Any,
    prefect_api_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    secret_name, secret_value = secret_block
    # The fixture template, plus a variable that only records a hash of the secret in the manifest.
    templates = tmp_path / "templates"
    shutil.copytree(REPO / FIXTURE, templates)
    (templates / "probe.pkr.hcl").write_text(
        'variable "probe_secret" {\n  type      = string\n  default   = ""\n  sensitive = true\n}\n'
    )
    build_hcl = templates / "build.pkr.hcl"
    probe = "source_commit = var.source_commit\n      probe = sha256(var.probe_secret)\n"
    build_hcl.write_text(build_hcl.read_text().replace("source_commit = var.source_commit\n", probe))
    subprocess.run(["packer", "fmt", str(templates)], check=True, capture_output=True)
    launched: list[tuple[list[str], dict[str, str]]] = []
    real_popen = subprocess.Popen

    def spy(args: Any, *rest: Any, **kwargs: Any) -> Any:  # records packer's command line and environment
        launched.append(([str(a) for a in args], dict(kwargs.get("env") or {})))
        return real_popen(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", spy)
    family = f"t-blocks-{uuid.uuid4().hex[:6]}"
    before = dict(os.environ)
    code, out, err = bake_here(
        "--json",
        "build",
        "--target",
        "aws",
        "--family",
        family,
        "--template-dir",
        str(templates),
        "--version",
        version(),
        "--aws-credentials-block",
        credentials_block,
        "--secret-var",
        f"probe_secret={secret_name}",
    )
    assert code == 0, err[-4000:]
    result = json.loads(out)
    (image,) = ec2.describe_images(Owners=["self"])["Images"]
    assert result["image_id"] == image["ImageId"]
    manifest = json.loads((Path(result["workdir"]) / "manifest.json").read_text())
    assert manifest["builds"][-1]["custom_data"]["probe"] == hashlib.sha256(secret_value.encode()).hexdigest()

    builds = [(argv, env) for argv, env in launched if argv[1:2] == ["build"]]
    assert len(builds) == 1
    argv, env = builds[0]
    assert env["AWS_SECRET_ACCESS_KEY"] == secret_key and env["PKR_VAR_probe_secret"] == secret_value
    for secret in (secret_key, secret_value):
        assert not any(secret in a for a in argv), "a secret reached packer's command line"
        assert secret not in out + err
        assert secret not in (Path(result["workdir"]) / "build.log").read_text()
    assert dict(os.environ) == before, "the worker's own environment changed"
    # The flow run stored the block names, not the values.
    with prefect_api(prefect_api_url) as api:
        runs = api.post("/flow_runs/filter", json={"sort": "START_TIME_DESC", "limit": 20}).json()
    (run,) = [r for r in runs if r["parameters"].get("family") == family]
    assert run["parameters"]["aws_credentials"] == credentials_block
    assert run["parameters"]["secret_vars"] == {"probe_secret": secret_name}
    assert secret_value not in json.dumps(run) and secret_key not in json.dumps(run)
    assert_nothing_left(ec2)

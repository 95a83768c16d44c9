"""AWS request options, the CLI around them, packer variables from the AWS environment, and the lint rule
for templates without a communicator."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from prefect.states import Failed

from flows.cli import main
from tasks import build, lint
from tasks.errors import JobFailed, UsageError
from tasks.request import AwsOptions, check_aws_options, prepare
from tasks.steps.pipeline import _worth_another_attempt
from tasks.targets.aws.instances import AwsFailed
from tests import aws_seam

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(aws_seam.FIXTURE)  # the shipped packer/ templates as moto builds them


def run_bake(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip()


def test_defaults() -> None:
    assert check_aws_options(None) == AwsOptions(
        subnet=None,
        instance_type="t3.micro",
        ssh_user="ubuntu",
        ssh_address="private",
        ssh_cidr=None,
        instance_profile=None,
        host_key="user-data",
        trust_on_first_use=False,
    )


def test_options_from_a_deployment_form_are_checked() -> None:
    options = check_aws_options({"subnet": "subnet-0123456789abcdef0", "ssh_cidr": "198.51.100.0/24"})
    assert (options.subnet, options.ssh_cidr) == ("subnet-0123456789abcdef0", "198.51.100.0/24")
    with pytest.raises(UsageError, match="unknown option"):
        check_aws_options({"subnetid": "x"})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"subnet": "sn-1"}, "--subnet 'sn-1': not a subnet id"),
        ({"instance_type": "huge"}, "--instance-type 'huge': not an instance type"),
        ({"ssh_user": "root; rm -rf /"}, "--ssh-user 'root; rm -rf /': not a user name"),
        ({"ssh_address": "elastic"}, "--ssh-address 'elastic': expected private or public"),
        ({"ssh_cidr": "198.51.100.7/24"}, "--ssh-cidr '198.51.100.7/24': not a CIDR block"),
        ({"ssh_cidr": "anywhere"}, "--ssh-cidr 'anywhere': not a CIDR block"),
        ({"host_key": "dns"}, "--host-key-source 'dns': expected user-data or console"),
        ({"instance_profile": "no spaces allowed"}, "--instance-profile 'no spaces allowed'"),
    ],
)
def test_bad_options_name_the_flag(options: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(")):
        check_aws_options(options)


def test_open_to_the_world_only_when_given() -> None:
    assert check_aws_options(None).ssh_cidr is None
    assert check_aws_options({"ssh_cidr": "0.0.0.0/0"}).ssh_cidr == "0.0.0.0/0"
    assert check_aws_options({"ssh_cidr": "2001:db8::/32"}).ssh_cidr == "2001:db8::/32"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["test", "--image", "x", "--subnet", "subnet-0123456789abcdef0"], "--subnet: only with --target aws"),
        (["test", "--target", "aws", "--image", "ami-1", "--subnet", "x"], "--subnet 'x': not a subnet id"),
        (["test", "--target", "aws", "--image", "ami-1", "--ssh-cidr", "1.2.3.4/33"], "--ssh-cidr '1.2.3.4/33'"),
        (["run", "--target", "aws", "--ssh-address", "ipv6"], "--ssh-address 'ipv6': expected private or public"),
    ],
)
def test_cli_rejects_bad_aws_options_with_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    code, err = run_bake(capsys, *argv)
    assert code == 2
    assert expected in err
    assert len(err.splitlines()) == 1


def test_cli_without_a_region_is_exit_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    code, err = run_bake(capsys, "test", "--target", "aws", "--image", "ami-0123")
    assert code == 2
    assert "--target aws: no region (set AWS_REGION or AWS_DEFAULT_REGION)" in err


def test_packer_gets_region_and_endpoint_from_the_aws_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    monkeypatch.delenv("AWS_ENDPOINT_URL_EC2", raising=False)
    templates = lint.load_template_set(FIXTURE)
    request = prepare(target="aws", template_dir=FIXTURE, spec=REPO / "packer/test/image_spec.yaml")
    assert build.environment_variables(templates, request) == {
        "aws_region": "eu-west-1",
        "aws_endpoint": "http://127.0.0.1:5000",
    }
    docker = prepare(target="docker", template_dir=FIXTURE, spec=REPO / "packer/test/image_spec.yaml")
    assert build.environment_variables(templates, docker) == {}
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert build.environment_variables(templates, request) == {"aws_region": "eu-west-1"}


def test_the_fixture_template_passes_lint() -> None:
    assert lint.lint(lint.load_template_set(FIXTURE), ["amazon-ebs.base"]) == []


def test_no_communicator_means_no_provisioners(tmp_path: Path) -> None:
    directory = tmp_path / "t"
    shutil.copytree(FIXTURE, directory)
    build_file = directory / "build.pkr.hcl"
    build_file.write_text(
        build_file.read_text().replace(
            '  post-processor "manifest" {',
            '  provisioner "shell" {\n    inline = ["sudo apt-get clean"]\n  }\n\n'
            '  provisioner "shell-local" {\n    inline = ["echo built"]\n  }\n\n'
            '  post-processor "manifest" {',
        )
    )
    findings = lint.lint(lint.load_template_set(directory), ["amazon-ebs.base"])
    assert [(f.rule, f.line) for f in findings] == [("no-communicator", 4)]
    assert 'communicator = "none" cannot run the shell provisioner' in str(findings[0])


def test_with_a_communicator_the_cloud_init_and_cleanup_rules_apply(tmp_path: Path) -> None:
    directory = tmp_path / "t"
    shutil.copytree(FIXTURE, directory)
    source = directory / "aws.pkr.hcl"
    source.write_text(source.read_text().replace('communicator = "none"', 'ssh_username = "ubuntu"'))
    rules = {f.rule for f in lint.lint(lint.load_template_set(directory), ["amazon-ebs.base"])}
    assert rules == {"cloud-init-wait", "cleanup-last"}


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (AwsFailed("timed out", retryable=False), False),
        (AwsFailed("capacity", retryable=True), True),
        (UsageError("--subnet subnet-1: no such subnet"), False),
        (JobFailed("docker exec failed"), True),
        (RuntimeError("engine hiccup"), True),
    ],
)
def test_launch_is_retried_only_when_another_attempt_may_help(error: Exception, retried: bool) -> None:
    assert _worth_another_attempt(None, None, Failed(data=error)) is retried

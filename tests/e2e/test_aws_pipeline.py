"""The AWS target end to end against a moto server (a real HTTP EC2 endpoint on 127.0.0.1).

1. a real ``packer build`` of an amazon-ebs source through ``bake build --target aws``;
2. ``bake test --target aws`` passing: the moto instance is joined AT THE TEST SEAM to a local sshd
   container (``instance_address`` is patched to return 127.0.0.1 and the container's port; the test
   plays cloud-init and installs the host key from the instance's user-data and the key pair's public
   key). No packet ever goes to an address moto invented;
3. failures at launch, at the status wait and at verify: exit 1 with the original error, nothing of the
   run left, the AMI ``failed``.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import docker
import pytest
import yaml
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from docker.models.containers import Container
from moto.server import ThreadedMotoServer

from flows.cli import main
from tasks.request import keys_root
from tasks.targets import aws as target_aws
from tests.e2e.conftest import Bake

pytestmark = pytest.mark.e2e

REGION = "us-east-1"
REPO = Path(__file__).resolve().parents[2]
FIXTURE = "tests/fixtures/packer-aws"
BASE_IMAGE = "bakery/debian:bookworm"
TEST_LABELS = {"bakery.test": "1"}

PASSING_SPEC = """
package:
  openssh-server:
    installed: true
user:
  ubuntu:
    exists: true
file:
  /etc/ssh/ssh_host_ed25519_key.pub:
    exists: true
command:
  "sudo -n true":
    exit-status: 0
"""

FAILING_SPEC = """
package:
  openssh-server:
    installed: true
  no-such-package:
    installed: true
"""

# What cloud-init does on first boot with our user-data and the instance's key pair.
PLAY_CLOUD_INIT = """set -eu
rm -f /etc/ssh/ssh_host_*
printf '%s' "$HOST_PRIVATE" > /etc/ssh/ssh_host_ed25519_key
chmod 600 /etc/ssh/ssh_host_ed25519_key
printf '%s\\n' "$HOST_PUBLIC" > /etc/ssh/ssh_host_ed25519_key.pub
id ubuntu >/dev/null 2>&1 || useradd --create-home --shell /bin/bash ubuntu
install -d -m 700 -o ubuntu -g ubuntu /home/ubuntu/.ssh
printf '%s\\n' "$AUTHORIZED_KEY" > /home/ubuntu/.ssh/authorized_keys
chown ubuntu:ubuntu /home/ubuntu/.ssh/authorized_keys
chmod 600 /home/ubuntu/.ssh/authorized_keys
printf 'ubuntu ALL=(ALL) NOPASSWD:ALL\\n' > /etc/sudoers.d/90-cloud-init-users
chmod 440 /etc/sudoers.d/90-cloud-init-users
mkdir -p /run/sshd
/usr/sbin/sshd -h /etc/ssh/ssh_host_ed25519_key
"""


# --- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The standard variables (for in-process flows and `bake` subprocesses alike), on a fresh moto."""
    request = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    for name, value in {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "BAKERY_AWS_WAITER_DELAY": "0.2",
        "BAKERY_STATE_DIR": str(tmp_path / "state"),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_EC2"):
        monkeypatch.delenv(name, raising=False)
    return moto_url


@pytest.fixture
def ec2(aws_env: str) -> Any:
    return boto3.session.Session().client("ec2", region_name=REGION, endpoint_url=aws_env)


@pytest.fixture
def bake_here(
    prefect_api_url: str, aws_env: str, capfd: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """`bake` in this process (so the test seam can be patched): (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        capfd.readouterr()
        code = main(list(argv))
        out, err = capfd.readouterr()
        return code, out, err

    return run


@pytest.fixture
def ami(bake_here: Callable[..., tuple[int, str, str]]) -> str:
    """An AMI built by packer through `bake build --target aws` (about a second against moto)."""
    code, out, err = bake_here("--json", "build", "--target", "aws", "--template-dir", FIXTURE, "--version", version())
    assert code == 0, err[-3000:]
    return str(json.loads(out)["image_id"])


@pytest.fixture
def sshd_container(engine: docker.DockerClient) -> Iterator[Container]:
    """A stand-in for the instance: the local base image (never pulled), SSH published on 127.0.0.1 only."""
    engine.images.get(BASE_IMAGE)
    container = engine.containers.run(
        BASE_IMAGE,
        ["sleep", "infinity"],
        detach=True,
        name=f"bakery-test-aws-{uuid.uuid4().hex[:8]}",
        labels=TEST_LABELS,
        ports={"22/tcp": ("127.0.0.1", None)},
    )
    try:
        yield container
    finally:
        container.remove(force=True)


# --- helpers -----------------------------------------------------------------------------------------------


def version() -> str:
    return f"0.0.0-aws.{uuid.uuid4().hex[:8]}"


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def image_and_snapshot_tags(ec2: Any, ami: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    image = ec2.describe_images(ImageIds=[ami])["Images"][0]
    snapshot_ids = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "SnapshotId" in m.get("Ebs", {})]
    assert snapshot_ids
    snapshots = ec2.describe_snapshots(SnapshotIds=snapshot_ids)["Snapshots"]
    return tags_of(image), [tags_of(s) for s in snapshots]


def bakery_test_instances(ec2: Any) -> list[dict[str, Any]]:
    """Instances bakery launched for a test (not Packer's builder)."""
    found = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["bakery-test-*"]}])
    return [i for r in found["Reservations"] for i in r["Instances"]]


def assert_nothing_left(ec2: Any) -> None:
    live = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    assert [i["InstanceId"] for r in live["Reservations"] for i in r["Instances"]] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    groups = ec2.describe_security_groups()["SecurityGroups"]
    assert [g["GroupName"] for g in groups if g["GroupName"] != "default"] == []


def join_instance_to(container: Container, ec2: Any, joined: list[str]) -> Callable[[dict[str, Any], str], Any]:
    """The test seam: instead of moto's invented address, the container, set up as cloud-init would."""

    def address(described: dict[str, Any], ssh_address: str) -> tuple[str, int]:
        assert ssh_address == "private"
        attribute = ec2.describe_instance_attribute(InstanceId=described["InstanceId"], Attribute="userData")
        user_data = base64.b64decode(attribute["UserData"]["Value"]).decode()
        assert user_data.startswith("#cloud-config\n")
        host_keys = yaml.safe_load(user_data)["ssh_keys"]
        (pair,) = ec2.describe_key_pairs(KeyNames=[described["KeyName"]], IncludePublicKey=True)["KeyPairs"]
        code, output = container.exec_run(
            ["/bin/sh", "-c", PLAY_CLOUD_INIT],
            environment={
                "HOST_PRIVATE": host_keys["ed25519_private"],
                "HOST_PUBLIC": host_keys["ed25519_public"],
                "AUTHORIZED_KEY": pair["PublicKey"],
            },
        )
        assert code == 0, output
        container.reload()
        joined.append(described["InstanceId"])
        return "127.0.0.1", int(container.ports["22/tcp"][0]["HostPort"])

    return address


def with_ec2_failure(monkeypatch: pytest.MonkeyPatch, operation: str, handler: Callable[..., Any]) -> None:
    """The test seam for failures: the target's EC2 client gets a botocore handler for ``operation``."""
    real = target_aws.ec2_client

    def client(*args: Any, **kwargs: Any) -> Any:
        made = real(*args, **kwargs)
        made.meta.events.register(f"before-call.ec2.{operation}", handler)
        return made

    monkeypatch.setattr(target_aws, "ec2_client", client)


def last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


# --- 1. packer build ---------------------------------------------------------------------------------------


def test_build_makes_one_ami_tagged_like_the_seed(bake: Bake, aws_env: str, ec2: Any) -> None:
    v = version()
    started = time.monotonic()
    result = bake("--json", "build", "--target", "aws", "--template-dir", FIXTURE, "--version", v)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    (image,) = ec2.describe_images(Owners=["self"])["Images"]
    assert summary["image_id"] == image["ImageId"]
    assert summary["stage"] == "testing"
    tags, snapshots = image_and_snapshot_tags(ec2, image["ImageId"])
    expected = {"Name": f"app-base-{v}", "Version": v, "ManagedBy": "packer", "status": "testing"}
    assert expected.items() <= tags.items()
    assert tags["BaseAMI"] == "ami-785db401"
    assert tags["BuildTime"].isdigit()
    assert all(expected.items() <= s.items() for s in snapshots)
    # Packer's builder carried the run's labels and is gone; its temporary key pair and group too.
    builders = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert [tags_of(b)["bakery:purpose"] for b in builders] == ["packer-builder"]
    assert tags_of(builders[0])["bakery:run-id"] == tags["bakery:run-id"]
    assert_nothing_left(ec2)
    print(f"bake build --target aws: {seconds:.1f} s")


# --- 2. the test stage passes -----------------------------------------------------------------------------


def test_test_stage_passes_through_the_seam_and_stages_the_ami(
    bake_here: Callable[..., tuple[int, str, str]],
    ami: str,
    ec2: Any,
    sshd_container: Container,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(PASSING_SPEC)
    joined: list[str] = []
    monkeypatch.setattr(target_aws, "instance_address", join_instance_to(sshd_container, ec2, joined))
    started = time.monotonic()
    code, out, err = bake_here(
        "--json", "test", "--target", "aws", "--image", ami, "--spec", str(spec), "--ssh-timeout", "60s"
    )
    seconds = time.monotonic() - started
    assert code == 0, err[-4000:]
    summary = json.loads(out)
    assert (summary["image_id"], summary["stage"]) == (ami, "staging")
    (instance,) = bakery_test_instances(ec2)
    assert joined == [instance["InstanceId"]]
    assert instance["State"]["Name"] == "terminated"
    run_id = tags_of(instance)["bakery:run-id"]
    tags, snapshots = image_and_snapshot_tags(ec2, ami)
    for t in (tags, *snapshots):
        assert (t["status"], t["bakery:run-id"]) == ("staging", run_id)
        assert t["bakery:staged-at"].endswith("+00:00")
    assert_nothing_left(ec2)
    # SSH got in with only the injected host key pinned (RejectPolicy for any other); its private half
    # reached no log, and the run's key directory is gone.
    assert "PRIVATE KEY" not in out + err
    assert not (keys_root() / run_id).exists()
    print(f"bake test --target aws (pass): {seconds:.1f} s")


# --- 3. failures -------------------------------------------------------------------------------------------


def test_launch_failure_exits_1_removes_what_was_made_and_fails_the_ami(
    bake_here: Callable[..., tuple[int, str, str]], ami: str, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(**kwargs: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "Unsupported", "Message": "The requested configuration is currently not supported."}},
            "RunInstances",
        )

    with_ec2_failure(monkeypatch, "RunInstances", unsupported)
    code, _, err = bake_here("test", "--target", "aws", "--image", ami, "--ssh-timeout", "20s")
    assert code == 1, err[-3000:]
    assert "Unsupported: The requested configuration is currently not supported." in last_line(err)
    assert bakery_test_instances(ec2) == []
    assert_nothing_left(ec2)
    tags, snapshots = image_and_snapshot_tags(ec2, ami)
    assert [tags["status"], *(s["status"] for s in snapshots)] == ["failed"] * (1 + len(snapshots))


def test_status_wait_failure_exits_1_terminates_the_instance_and_fails_the_ami(
    bake_here: Callable[..., tuple[int, str, str]], ami: str, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def initializing_forever(**kwargs: Any) -> Any:
        ids = kwargs["params"].get("InstanceIds", [])
        body = {"InstanceStatuses": [{"InstanceId": i, "InstanceStatus": {"Status": "initializing"}} for i in ids]}
        return AWSResponse("http://127.0.0.1", 200, {}, None), body

    monkeypatch.setenv("BAKERY_AWS_WAITER_TIMEOUT", "2")
    with_ec2_failure(monkeypatch, "DescribeInstanceStatus", initializing_forever)
    code, _, err = bake_here("test", "--target", "aws", "--image", ami, "--ssh-timeout", "20s")
    assert code == 1, err[-3000:]
    assert "did not become status ok within 2 s" in last_line(err)
    (instance,) = bakery_test_instances(ec2)  # launched once: a timeout is not retried
    assert instance["State"]["Name"] == "terminated"
    assert_nothing_left(ec2)
    assert image_and_snapshot_tags(ec2, ami)[0]["status"] == "failed"


def test_verify_failure_exits_1_tears_down_and_fails_the_ami(
    bake_here: Callable[..., tuple[int, str, str]],
    ami: str,
    ec2: Any,
    sshd_container: Container,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    spec = tmp_path / "failing.yaml"
    spec.write_text(FAILING_SPEC)
    joined: list[str] = []
    monkeypatch.setattr(target_aws, "instance_address", join_instance_to(sshd_container, ec2, joined))
    code, _, err = bake_here("test", "--target", "aws", "--image", ami, "--spec", str(spec), "--ssh-timeout", "60s")
    assert code == 1, err[-3000:]
    assert "no-such-package installed" in last_line(err)
    (instance,) = bakery_test_instances(ec2)
    assert joined == [instance["InstanceId"]]
    assert instance["State"]["Name"] == "terminated"
    assert_nothing_left(ec2)
    tags, snapshots = image_and_snapshot_tags(ec2, ami)
    assert [tags["status"], *(s["status"] for s in snapshots)] == ["failed"] * (1 + len(snapshots))

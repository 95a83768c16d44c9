"""The AWS test seam, shared by the e2e and reliability tests of the AWS target on a moto server.

moto "runs" instances nobody can reach, and bakery must never connect to an address moto invented. So
AT THE TEST SEAM, never in product code:

- ``join_seam``: ``tasks.targets.aws.instance_address`` is patched to return 127.0.0.1 and the port of
  a local sshd container (``sshd_container``), after the test has played cloud-init in it: the host key
  from the instance's user-data, the key pair's public key for the login user, passwordless sudo;
- ``on_ec2``: every EC2 client bakery makes (``tasks.aws.client``, the one factory) gets a botocore
  event handler, to inject a failure or throttling into exactly the calls a scenario names.
"""

from __future__ import annotations

import atexit
import base64
import shutil
import tempfile
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

from tasks.targets.aws import client as aws
from tasks.targets.aws import instances as target_aws

REGION = "us-east-1"
SHIPPED_TEMPLATES = Path(__file__).resolve().parents[1] / "packer"


def shipped_aws_templates(directory: Path) -> Path:
    """bakery's shipped ``packer/`` template set, as moto can build it, written into ``directory``.

    The shipped ``variables.pkr.hcl`` and ``aws.pkr.hcl`` (locals, tags, builder tags, ``encrypt_boot``,
    ``source_ami_filter``, ...) as they are, with two changes a moto instance forces, each made exactly
    once or the test stops here (so the tests can never build a stale copy):

    - ``communicator = "none"`` instead of the SSH user: moto "runs" instances nobody can log in to, so
      the build has no provisioners (``bake validate`` flags any that would need a communicator);
    - ``build.pkr.hcl``: the amazon-ebs source and the shipped manifest post-processor only;
    - ``moto.auto.pkrvars.hcl``: the base image filter names the newest Canonical image moto has (xenial).
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "variables.pkr.hcl").write_text((SHIPPED_TEMPLATES / "variables.pkr.hcl").read_text())
    source = (SHIPPED_TEMPLATES / "aws.pkr.hcl").read_text()
    ssh_user = "  ssh_username = var.ssh_username\n"
    assert source.count(ssh_user) == 1, f"packer/aws.pkr.hcl changed: no single {ssh_user.strip()!r} to replace"
    (directory / "aws.pkr.hcl").write_text(
        source.replace(
            ssh_user,
            '  # Nobody can log in to an instance moto runs: no SSH, no provisioners.\n  communicator = "none"\n',
        )
    )
    build = (SHIPPED_TEMPLATES / "build.pkr.hcl").read_text()
    start = build.index('  post-processor "manifest" {')
    manifest = build[start : build.index("\n  }\n", start) + len("\n  }\n")]
    (directory / "build.pkr.hcl").write_text(f'build {{\n  sources = ["source.amazon-ebs.base"]\n\n{manifest}}}\n')
    (directory / "moto.auto.pkrvars.hcl").write_text(
        'base_ami_filter = "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-*"\n'
    )
    return directory


# The shipped AWS template set as moto builds it (about a second a build), made once per process.
_TEMPLATES_ROOT = Path(tempfile.mkdtemp(prefix="bakery-aws-templates-"))
atexit.register(shutil.rmtree, _TEMPLATES_ROOT, True)
FIXTURE = str(shipped_aws_templates(_TEMPLATES_ROOT / "packer-aws"))
BASE_IMAGE = "bakery/debian:bookworm"  # local, never pulled
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

# What cloud-init does on first boot with bakery's user-data and the instance's key pair.
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


# --- fixtures (import them by name into a test module or conftest) ----------------------------------------


@pytest.fixture
def ec2(aws_env: str) -> Any:
    """The test's own EC2 client on the fresh moto: no hooks, what the API really holds."""
    return ec2_client(aws_env)


@pytest.fixture
def sshd_container() -> Iterator[Container]:
    """A stand-in for the instance: the local base image (never pulled), SSH published on 127.0.0.1 only."""
    engine = docker.from_env()
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


# --- reading the EC2 API -----------------------------------------------------------------------------------


def ec2_client(url: str) -> Any:
    return boto3.session.Session().client("ec2", region_name=REGION, endpoint_url=url)


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


def stages_of(ec2: Any, ami: str) -> list[str | None]:
    """The ``status`` tag of the AMI, then of each of its snapshots."""
    tags, snapshots = image_and_snapshot_tags(ec2, ami)
    return [tags.get("status"), *(s.get("status") for s in snapshots)]


def own_images(ec2: Any) -> list[str]:
    return sorted(i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"])


def bakery_test_instances(ec2: Any) -> list[dict[str, Any]]:
    """Instances bakery launched for a test (not Packer's builder), in any state."""
    found = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["bakery-test-*"]}])
    return [i for r in found["Reservations"] for i in r["Instances"]]


def assert_nothing_left(ec2: Any) -> None:
    live = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    assert [i["InstanceId"] for r in live["Reservations"] for i in r["Instances"]] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    groups = ec2.describe_security_groups()["SecurityGroups"]
    assert [g["GroupName"] for g in groups if g["GroupName"] != "default"] == []


# --- the seam: a moto instance joined to the local sshd container ----------------------------------------


def join_instance_to(container: Container, ec2: Any, joined: list[str]) -> Callable[[dict[str, Any], str], Any]:
    """Instead of moto's invented address, the container, set up as cloud-init would set up the instance."""

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


def join_seam(monkeypatch: pytest.MonkeyPatch, container: Container, ec2: Any) -> list[str]:
    """Every instance bakery connects to is the container; returns the ids joined so far (a live list)."""
    joined: list[str] = []
    monkeypatch.setattr(target_aws, "instance_address", join_instance_to(container, ec2, joined))
    return joined


# --- the seam: botocore event handlers on every EC2 client bakery makes ----------------------------------


def on_ec2(monkeypatch: pytest.MonkeyPatch, event: str, handler: Callable[..., Any]) -> None:
    """Register ``handler`` for ``event`` (``before-call.ec2.RunInstances``, ``before-send.ec2``, ...) on
    every EC2 client made through ``tasks.aws.client`` from now on (the target's, sweep's, promotion's)."""
    real = aws.client

    def client(service: str, *args: Any, **kwargs: Any) -> Any:
        made = real(service, *args, **kwargs)
        if service == "ec2":
            made.meta.events.register(event, handler)
        return made

    monkeypatch.setattr(aws, "client", client)


def client_error(code: str, message: str, operation: str) -> ClientError:
    """What a botocore client raises for an error response (for ``before-call`` handlers to raise)."""
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def error_response(code: str, message: str, status: int = 400) -> AWSResponse:
    """An EC2 error as it comes over the wire (for ``before-send`` handlers to return instead of sending):
    botocore parses it, and its retry handler sees it, exactly as a real one."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()
    response = AWSResponse("http://127.0.0.1/", status, {"Content-Type": "text/xml;charset=UTF-8"}, None)
    response._content = body  # read instead of a raw stream
    return response

"""The AWS target's pieces against moto's in-process mock: images, stages, launch, cleanup, host keys."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import paramiko
import pytest
import yaml
from botocore.exceptions import ClientError
from moto import mock_aws

from tasks import ssh
from tasks.errors import JobFailed, UsageError
from tasks.request import AwsOptions
from tasks.targets.aws import client as aws
from tasks.targets.aws import instances as target_aws
from tasks.targets.aws.instances import AwsFailed, AwsTarget
from tasks.targets.base import Image, Run

REGION = "us-east-1"
BASE_AMI = "ami-785db401"  # moto's built-in Canonical xenial image


@pytest.fixture(autouse=True)
def fast_waiters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAKERY_AWS_WAITER_DELAY", "0.05")
    monkeypatch.setenv("BAKERY_AWS_WAITER_TIMEOUT", "2")
    monkeypatch.setenv("BAKERY_AWS_CONSOLE_TIMEOUT", "0.2")


@pytest.fixture
def ec2(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_PROFILE", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION)


@pytest.fixture
def run(tmp_path: Path) -> Run:
    keydir = tmp_path / "keys"
    keydir.mkdir(mode=0o700)
    private_key, public_key = ssh.generate_keypair(keydir)
    return Run(
        run_id="11111111-2222-3333-4444-555555555555",
        family="app-base",
        workdir=tmp_path,
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        private_key=private_key,
        public_key=public_key,
    )


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def make_ami(ec2: Any, version: str = "1.0.0", **extra: str) -> str:
    """An AMI with a snapshot, tagged as the seed's template tags it."""
    volume = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=8)
    snapshot = ec2.create_snapshot(VolumeId=volume["VolumeId"])["SnapshotId"]
    ami = ec2.register_image(
        Name=f"app-base-{version}-1",
        RootDeviceName="/dev/sda1",
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snapshot}}],
    )["ImageId"]
    tags = {"Name": f"app-base-{version}", "Version": version, "ManagedBy": "packer", "status": "testing", **extra}
    ec2.create_tags(Resources=[ami, snapshot], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    return str(ami)


def live_instances(ec2: Any) -> list[str]:
    found = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]


def leftovers(ec2: Any) -> dict[str, list[str]]:
    return {
        "instances": live_instances(ec2),
        "key_pairs": [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]],
        "groups": [
            g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"
        ],
    }


NOTHING_LEFT: dict[str, list[str]] = {"instances": [], "key_pairs": [], "groups": []}


def fail_call(client: Any, operation: str, code: str, message: str = "injected") -> None:
    def raise_error(**kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": code, "Message": message}}, operation)

    client.meta.events.register(f"before-call.ec2.{operation}", raise_error)


# --- images and stages -----------------------------------------------------------------------------------


def test_family_is_name_minus_version_and_a_family_tag_wins() -> None:
    assert aws.family_of_tags({"Name": "app-base-1.2.3", "Version": "1.2.3"}) == "app-base"
    assert aws.family_of_tags({"Name": "app-base-1.2.3", "Version": "1.2.3", "Family": "web"}) == "web"
    assert aws.family_of_tags({"Name": "something", "Version": "1.2.3"}) is None


@pytest.mark.parametrize(
    ("artifact", "region", "expected"),
    [
        ("us-east-1:ami-0123", None, ("us-east-1", "ami-0123")),
        ("us-east-1:ami-1,eu-west-1:ami-2", "eu-west-1", ("eu-west-1", "ami-2")),
        ("us-east-1:ami-1,eu-west-1:ami-2", "ap-south-1", ("us-east-1", "ami-1")),
    ],
)
def test_artifact_id_of_the_manifest(artifact: str, region: str | None, expected: tuple[str, str]) -> None:
    assert target_aws.parse_artifact_id(artifact, region) == expected


def test_artifact_id_that_is_not_an_ami_is_a_clear_error() -> None:
    with pytest.raises(JobFailed, match="not region:ami-"):
        target_aws.parse_artifact_id("app-base:1.0.0")


def test_image_from_artifact_reads_the_tags(ec2: Any) -> None:
    ami = make_ami(ec2, "2.0.0")
    image = AwsTarget(ec2=ec2).image_from_artifact(f"{REGION}:{ami}", "ignored", "ignored")
    assert (image.id, image.family, image.version, image.name, image.stage) == (
        ami,
        "app-base",
        "2.0.0",
        "app-base-2.0.0",
        "testing",
    )


def test_image_by_id_by_name_and_by_family_version(ec2: Any) -> None:
    ami = make_ami(ec2, "3.0.0")
    target = AwsTarget(ec2=ec2)
    assert target.image(ami).id == ami
    assert target.image("app-base-3.0.0").id == ami
    assert target.image("app-base:3.0.0").id == ami


def test_unknown_or_unmanaged_images_are_refused(ec2: Any) -> None:
    target = AwsTarget(ec2=ec2)
    with pytest.raises(UsageError, match="no such AMI"):
        target.image("ami-0123456789abcdef0")
    with pytest.raises(UsageError, match="no ManagedBy tag"):
        target.image(BASE_AMI)


def test_set_stage_tags_the_ami_and_its_snapshots(ec2: Any) -> None:
    ami = make_ami(ec2)
    target = AwsTarget(ec2=ec2)
    before = datetime.now(UTC).replace(microsecond=0)
    target.set_stage(target.image(ami), "staging", "run-7")
    image = ec2.describe_images(ImageIds=[ami])["Images"][0]
    snapshot_id = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    snapshot = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    for tags in (tags_of(image), tags_of(snapshot)):
        assert tags["status"] == "staging"
        assert tags["bakery:run-id"] == "run-7"
        assert datetime.fromisoformat(tags["bakery:staged-at"]) >= before
    target.set_stage(target.image(ami), "failed", "run-8")
    tags = tags_of(ec2.describe_images(ImageIds=[ami])["Images"][0])
    assert (tags["status"], tags["bakery:run-id"]) == ("failed", "run-8")


# --- launch ----------------------------------------------------------------------------------------------


def image_of(ec2: Any) -> Image:
    return AwsTarget(ec2=ec2).image(make_ami(ec2))


def test_launch_tags_everything_at_creation_and_admits_ssh_from_the_vpc_only(ec2: Any, run: Run) -> None:
    image = image_of(ec2)
    instance = AwsTarget(ec2=ec2).launch(image, run)
    expected = {
        "bakery:run-id": run.run_id,
        "bakery:expires-at": "2030-01-01T00:00:00+00:00",
        "ManagedBy": "bakery",
    }
    described = target_aws.describe_instance(ec2, instance.id)
    assert described["State"]["Name"] == "running"
    assert described["ImageId"] == image.id
    assert described["KeyName"] == f"bakery-{run.run_id}"
    assert expected.items() <= tags_of(described).items()
    (pair,) = ec2.describe_key_pairs(KeyNames=[f"bakery-{run.run_id}"], IncludePublicKey=True)["KeyPairs"]
    assert expected.items() <= tags_of(pair).items()
    assert pair["PublicKey"].split()[:2] == run.public_key.split()[:2]
    (group,) = ec2.describe_security_groups(GroupIds=[described["SecurityGroups"][0]["GroupId"]])["SecurityGroups"]
    assert expected.items() <= tags_of(group).items()
    default_vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]
    assert group["VpcId"] == default_vpc["VpcId"]
    (rule,) = group["IpPermissions"]
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 22, 22)
    assert [r["CidrIp"] for r in rule["IpRanges"]] == [default_vpc["CidrBlock"]]
    volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [instance.id]}])["Volumes"]
    assert volumes
    assert all(expected.items() <= tags_of(v).items() for v in volumes)


def test_launch_in_a_subnet_uses_its_vpc_and_the_given_cidr(ec2: Any, run: Run) -> None:
    vpc = ec2.create_vpc(CidrBlock="198.18.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="198.18.1.0/24")["Subnet"]["SubnetId"]
    options = AwsOptions(subnet=subnet, ssh_cidr="192.0.2.7/32", instance_type="t3.small")
    instance = AwsTarget(options, ec2=ec2).launch(image_of(ec2), run)
    described = target_aws.describe_instance(ec2, instance.id)
    assert (described["SubnetId"], described["InstanceType"]) == (subnet, "t3.small")
    (group,) = ec2.describe_security_groups(GroupIds=[described["SecurityGroups"][0]["GroupId"]])["SecurityGroups"]
    assert group["VpcId"] == vpc
    assert [r["CidrIp"] for r in group["IpPermissions"][0]["IpRanges"]] == ["192.0.2.7/32"]


def test_the_host_key_goes_in_through_user_data_and_only_its_public_half_is_kept(ec2: Any, run: Run) -> None:
    target = AwsTarget(ec2=ec2)
    instance = target.launch(image_of(ec2), run)
    raw = ec2.describe_instance_attribute(InstanceId=instance.id, Attribute="userData")["UserData"]["Value"]
    text = base64.b64decode(raw).decode()
    assert text.startswith("#cloud-config\n")
    keys = yaml.safe_load(text)["ssh_keys"]
    private = paramiko.Ed25519Key.from_private_key(io.StringIO(keys["ed25519_private"]))
    public = f"{private.get_name()} {private.get_base64()}"
    assert keys["ed25519_public"].split()[:2] == public.split()
    endpoint = target.endpoint(instance, run)
    assert endpoint.host_key == public
    assert (endpoint.user, endpoint.port, endpoint.key_path) == ("ubuntu", 22, run.private_key)
    assert endpoint.host == target_aws.describe_instance(ec2, instance.id)["PrivateIpAddress"]
    kept = list(run.private_key.parent.iterdir())
    assert sorted(p.name for p in kept) == sorted(["id_ed25519", f"{instance.id}.ssh_host_ed25519_key.pub"])
    assert not any("PRIVATE KEY" in p.read_text() for p in kept if p.name.endswith(".pub"))


def test_a_failed_run_instances_removes_the_key_pair_and_group_and_keeps_the_error(ec2: Any, run: Run) -> None:
    image = image_of(ec2)
    fail_call(ec2, "RunInstances", "Unsupported", "The requested configuration is currently not supported.")
    with pytest.raises(AwsFailed, match="Unsupported: The requested configuration") as failed:
        AwsTarget(ec2=ec2).launch(image, run)
    assert failed.value.retryable is False
    assert leftovers(ec2) == NOTHING_LEFT


def test_capacity_errors_may_be_retried(ec2: Any, run: Run) -> None:
    image = image_of(ec2)
    fail_call(ec2, "RunInstances", "InsufficientInstanceCapacity")
    with pytest.raises(AwsFailed) as failed:
        AwsTarget(ec2=ec2).launch(image, run)
    assert failed.value.retryable is True
    assert leftovers(ec2) == NOTHING_LEFT


def test_a_status_check_that_never_passes_terminates_the_instance(ec2: Any, run: Run) -> None:
    image = image_of(ec2)

    def never_ok(**kwargs: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        ids = kwargs["params"].get("InstanceIds", [])
        body = {"InstanceStatuses": [{"InstanceId": i, "InstanceStatus": {"Status": "initializing"}} for i in ids]}
        return AWSResponse("http://moto", 200, {}, None), body

    ec2.meta.events.register("before-call.ec2.DescribeInstanceStatus", never_ok)
    with pytest.raises(AwsFailed, match="did not become status ok within 2 s") as failed:
        AwsTarget(ec2=ec2).launch(image, run)
    assert failed.value.retryable is False
    assert leftovers(ec2) == NOTHING_LEFT


def test_a_waiter_stopped_by_throttling_says_so_and_may_be_retried(ec2: Any, run: Run) -> None:
    """Throttling that outlived botocore's retries stops the waiter: not a time-out, and worth another launch."""
    fail_call(ec2, "DescribeInstanceStatus", "RequestLimitExceeded", "Request limit exceeded.")
    with pytest.raises(AwsFailed, match="to become status ok: RequestLimitExceeded: Request limit exceeded") as failed:
        AwsTarget(ec2=ec2).launch(image_of(ec2), run)
    assert failed.value.retryable is True
    assert leftovers(ec2) == NOTHING_LEFT


def test_a_cleanup_failure_never_hides_the_launch_error(ec2: Any, run: Run, caplog: pytest.LogCaptureFixture) -> None:
    image = image_of(ec2)
    fail_call(ec2, "RunInstances", "Unsupported", "original")
    fail_call(ec2, "DeleteSecurityGroup", "UnauthorizedOperation", "cleanup broke")
    with pytest.raises(AwsFailed, match="Unsupported: original"):
        AwsTarget(ec2=ec2).launch(image, run)
    assert "cleanup broke" in caplog.text
    assert leftovers(ec2)["key_pairs"] == []


def test_preflight_names_a_missing_subnet_before_anything_is_made(ec2: Any) -> None:
    with pytest.raises(UsageError, match=r"^--subnet subnet-0123456789abcdef0: no such subnet in us-east-1$"):
        AwsTarget(AwsOptions(subnet="subnet-0123456789abcdef0"), ec2=ec2).preflight()
    AwsTarget(ec2=ec2).preflight()  # the default VPC
    assert leftovers(ec2) == NOTHING_LEFT


def test_public_address_without_one_is_a_clear_error() -> None:
    with pytest.raises(JobFailed, match="has no public address"):
        target_aws.instance_address({"InstanceId": "i-1", "PrivateIpAddress": "198.18.0.10"}, "public")
    assert target_aws.instance_address({"InstanceId": "i-1", "PublicIpAddress": "192.0.2.1"}, "public") == (
        "192.0.2.1",
        22,
    )


# --- host keys without injection ------------------------------------------------------------------------

CONSOLE = """[   12.1] cloud-init[700]: Cloud-init v. 23.1 running 'modules:final'
-----BEGIN SSH HOST KEY FINGERPRINTS-----
256 SHA256:abcdEFGH0123456789abcdEFGH0123456789abcdEFG root@ip-10-0-0-1 (ECDSA)
256 SHA256:zyxwVUTS9876543210zyxwVUTS9876543210zyxwVUT root@ip-10-0-0-1 (ED25519)
-----END SSH HOST KEY FINGERPRINTS-----
-----BEGIN SSH HOST KEY KEYS-----
ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= root@ip-10-0-0-1
ec2: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhvc3Qta2V5LWJ5dGVzLWhlcmUtMzItYnl0ZXMhIQ== root@ip-10-0-0-1
-----END SSH HOST KEY KEYS-----
ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQoutside the block
"""


def test_console_host_keys_come_from_cloud_inits_block_ed25519_first() -> None:
    keys = target_aws.console_host_keys(CONSOLE)
    assert [k.split()[0] for k in keys] == ["ssh-ed25519", "ecdsa-sha2-nistp256"]
    assert keys[0] == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhvc3Qta2V5LWJ5dGVzLWhlcmUtMzItYnl0ZXMhIQ=="
    assert target_aws.console_fingerprints(CONSOLE) == {
        "ECDSA": "SHA256:abcdEFGH0123456789abcdEFGH0123456789abcdEFG",
        "ED25519": "SHA256:zyxwVUTS9876543210zyxwVUTS9876543210zyxwVUT",
    }
    assert target_aws.console_host_keys("no keys here") == []


def test_console_source_uses_the_console_key(ec2: Any, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    target = AwsTarget(AwsOptions(host_key="console"), ec2=ec2)
    instance = target.launch(image_of(ec2), run)
    assert not ec2.describe_instance_attribute(InstanceId=instance.id, Attribute="userData").get("UserData")
    monkeypatch.setattr(target_aws, "console_output", lambda ec2, instance_id: CONSOLE)
    assert target.endpoint(instance, run).host_key.startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5")


def test_no_host_key_anywhere_fails_closed(ec2: Any, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    target = AwsTarget(AwsOptions(host_key="console"), ec2=ec2)
    instance = target.launch(image_of(ec2), run)
    scanned: list[str] = []
    monkeypatch.setattr(target_aws, "scan_host_key", lambda *args: scanned.append("scan"))
    with pytest.raises(JobFailed, match="refusing to connect"):
        target.endpoint(instance, run)
    assert scanned == []


def test_trust_on_first_use_only_when_asked(ec2: Any, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    target = AwsTarget(AwsOptions(host_key="console", trust_on_first_use=True), ec2=ec2)
    instance = target.launch(image_of(ec2), run)
    offered = paramiko.Ed25519Key.from_private_key_file(str(run.private_key))
    seen: list[tuple[str, int]] = []

    def scan(host: str, port: int, key_type: str, timeout: float) -> paramiko.PKey:
        seen.append((host, port))
        return offered

    monkeypatch.setattr(target_aws, "instance_address", lambda described, how: ("127.0.0.1", 2222))
    monkeypatch.setattr(target_aws, "scan_host_key", scan)
    endpoint = target.endpoint(instance, run)
    assert endpoint.host_key == f"ssh-ed25519 {offered.get_base64()}"
    assert seen == [("127.0.0.1", 2222)]


def test_a_console_fingerprint_must_match_the_key_offered(ec2: Any, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    target = AwsTarget(AwsOptions(host_key="console"), ec2=ec2)
    instance = target.launch(image_of(ec2), run)
    offered = paramiko.Ed25519Key.from_private_key_file(str(run.private_key))
    good = f"-----BEGIN SSH HOST KEY FINGERPRINTS-----\n256 {target_aws.fingerprint(offered)} root@h (ED25519)\n"
    good += "-----END SSH HOST KEY FINGERPRINTS-----\n"
    monkeypatch.setattr(target_aws, "instance_address", lambda described, how: ("127.0.0.1", 2222))
    monkeypatch.setattr(target_aws, "scan_host_key", lambda *args: offered)
    monkeypatch.setattr(target_aws, "console_output", lambda ec2, instance_id: good)
    assert target.endpoint(instance, run).host_key == f"ssh-ed25519 {offered.get_base64()}"
    monkeypatch.setattr(target_aws, "console_output", lambda ec2, instance_id: good.replace("SHA256:", "SHA256:x"))
    with pytest.raises(JobFailed, match="refusing to connect"):
        target.endpoint(instance, run)


# --- teardown --------------------------------------------------------------------------------------------


def test_teardown_removes_instance_group_and_key_and_is_idempotent(ec2: Any, run: Run) -> None:
    target = AwsTarget(ec2=ec2)
    instance = target.launch(image_of(ec2), run)
    target.teardown(instance)
    assert leftovers(ec2) == NOTHING_LEFT
    target.teardown(instance)  # again: everything is already gone, which is fine
    assert leftovers(ec2) == NOTHING_LEFT


def test_teardown_run_finds_everything_by_the_run_tag(ec2: Any, run: Run, tmp_path: Path) -> None:
    target = AwsTarget(ec2=ec2)
    target.launch(image_of(ec2), run)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other_key, other_public = ssh.generate_keypair(other_dir)
    other = Run("other-run", "app-base", tmp_path, run.expires_at, other_key, other_public)
    kept = target.launch(image_of(ec2), other)
    removed = target.teardown_run(run.run_id)
    assert len(removed) == 3
    assert leftovers(ec2) == {
        "instances": [kept.id],
        "key_pairs": ["bakery-other-run"],
        "groups": ["bakery-other-run"],
    }
    assert target.teardown_run(run.run_id) == []


def test_a_security_group_still_in_use_is_retried(ec2: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    group = ec2.create_security_group(GroupName="g", Description="g")["GroupId"]
    calls: list[int] = []

    def busy_twice(**kwargs: Any) -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise ClientError({"Error": {"Code": "DependencyViolation", "Message": "in use"}}, "DeleteSecurityGroup")

    ec2.meta.events.register("before-call.ec2.DeleteSecurityGroup", busy_twice)
    assert target_aws.delete_security_group(ec2, group, timeout=30) is True
    assert len(calls) == 3


def test_teardown_reports_every_failed_step_but_runs_the_others(ec2: Any, run: Run) -> None:
    target = AwsTarget(ec2=ec2)
    instance = target.launch(image_of(ec2), run)
    fail_call(ec2, "TerminateInstances", "UnauthorizedOperation", "no terminate for you")
    with pytest.raises(AwsFailed, match="no terminate for you"):
        target.teardown(instance)
    assert leftovers(ec2)["key_pairs"] == []  # the key pair went even though the instance could not


def test_groups_wait_for_the_next_attempt_while_the_instance_lives(ec2: Any, run: Run) -> None:
    """EC2 refuses to delete a group a live instance uses: no retrying it for a third of the time limit."""
    target = AwsTarget(ec2=ec2, timeout=900)
    instance = target.launch(image_of(ec2), run)
    fail_call(ec2, "TerminateInstances", "InternalError", "try again")
    deletes: list[int] = []
    ec2.meta.events.register("before-call.ec2.DeleteSecurityGroup", lambda **kwargs: deletes.append(1))
    started = time.monotonic()
    with pytest.raises(AwsFailed, match=r"security group sg-[0-9a-f]+: not removed while its instance") as failed:
        target.teardown(instance)
    assert time.monotonic() - started < 5
    assert failed.value.retryable
    assert deletes == []
    assert leftovers(ec2)["key_pairs"] == []
    assert leftovers(ec2)["groups"] == [f"bakery-{run.run_id}"]


# --- options and settings --------------------------------------------------------------------------------


def test_waiter_delay_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAKERY_AWS_WAITER_DELAY", "0.5")
    assert target_aws.waiter_delay() == 0.5
    monkeypatch.delenv("BAKERY_AWS_WAITER_DELAY")
    assert target_aws.waiter_delay() == 15


def test_region_and_endpoint_come_from_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.delenv("AWS_ENDPOINT_URL_EC2", raising=False)
    assert aws.region() == "eu-west-1"
    assert aws.endpoint_url("ec2") == "http://127.0.0.1:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:2")
    assert aws.endpoint_url("ec2") == "http://127.0.0.1:2"


def test_expiry_tag_is_utc_iso() -> None:
    run = Run("r", "f", Path("/"), datetime(2030, 1, 1, 12, tzinfo=UTC) + timedelta(hours=1), Path("/k"), "")
    assert target_aws.run_tags(run)["bakery:expires-at"] == "2030-01-01T13:00:00+00:00"


# --- crash and cancellation hooks -----------------------------------------------------------------------


class FakeFlowRun:
    def __init__(self, run_id: str, target: str) -> None:
        self.id = run_id
        self.parameters = {"target": target}


def test_the_crash_hook_removes_the_runs_aws_resources(ec2: Any, run: Run) -> None:
    from flows.pipeline import remove_run_resources

    AwsTarget(ec2=ec2).launch(image_of(ec2), run)
    remove_run_resources(None, FakeFlowRun(run.run_id, "aws"), None)  # type: ignore[arg-type]
    assert leftovers(ec2) == NOTHING_LEFT


def test_the_crash_hook_does_nothing_on_aws_when_aws_is_not_configured(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from flows import pipeline

    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setattr(target_aws, "ec2_client", lambda *a, **k: pytest.fail("no AWS client without a region"))
    pipeline.remove_run_resources(None, FakeFlowRun("run-x", "aws"), None)  # type: ignore[arg-type]
    assert "AWS is not configured here" in caplog.text


def test_the_crash_hook_reports_an_unreachable_endpoint_and_returns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import socket
    import time

    from flows import pipeline

    with socket.socket() as sock:  # a port nobody listens on: connection refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    pipeline.remove_run_resources(None, FakeFlowRun("run-y", "aws"), None)  # type: ignore[arg-type]
    assert time.monotonic() - started < 30
    assert "could not remove the AWS resources of run run-y" in caplog.text


def test_terminate_and_wait_is_one_call_for_all_and_sorts_out_an_id_already_gone(ec2: Any) -> None:
    # The run's teardown and the sweep both remove instances this way.
    launched = ec2.run_instances(ImageId=BASE_AMI, MinCount=2, MaxCount=2)["Instances"]
    ids = [i["InstanceId"] for i in launched]
    done = target_aws.terminate_and_wait(ec2, ids)
    assert (done.terminated, done.already_gone, done.refused, done.unfinished) == (ids, [], {}, [])
    missing = "i-0123456789abcdef0"
    again = target_aws.terminate_and_wait(ec2, [ids[0], missing])
    assert again.already_gone == [missing] and again.terminated == [ids[0]]  # terminated is still there
    assert target_aws.terminate(ec2, [missing]) == []

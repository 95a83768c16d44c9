"""Promotion, soak and rollback of AMIs against a moto server (a real HTTP EC2/SSM endpoint on 127.0.0.1).

The server and a fresh state per test are the shared ``moto_url``/``aws_env`` fixtures of ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from tasks import promotion
from tasks.errors import JobFailed
from tasks.targets.aws.stages import AmiStages, seed_lookup
from tests.e2e.conftest import Bake

pytestmark = pytest.mark.e2e
REGION = "us-east-1"


def ec2_client(url: str) -> Any:
    return boto3.session.Session().client("ec2", region_name=REGION, endpoint_url=url)


@pytest.fixture
def ec2(aws_env: str) -> Any:
    return ec2_client(aws_env)


def iso_ago(delta: timedelta) -> str:
    return promotion.iso(datetime.now(UTC) - delta)


def make_ami(ec2: Any, family: str, version: str, status: str, staged_ago: timedelta | None = None) -> str:
    """An AMI as the seed's template tags it (moto ignores TagSpecifications on RegisterImage: CreateTags)."""
    volume = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=8)
    snapshot = ec2.create_snapshot(VolumeId=volume["VolumeId"])["SnapshotId"]
    ami = ec2.register_image(
        Name=f"{family}-{version}-{int(time.time() * 1000)}",
        RootDeviceName="/dev/sda1",
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snapshot}}],
    )["ImageId"]
    tags = {
        "Name": f"{family}-{version}",
        "Version": version,
        "BuildTime": str(int(time.time())),
        "BaseAMI": "ami-0123456789abcdef0",
        "ManagedBy": "packer",
        "status": status,
    }
    if staged_ago is not None:
        tags["bakery:staged-at"] = iso_ago(staged_ago)
    ec2.create_tags(Resources=[ami, snapshot], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    return str(ami)


def tags(ec2: Any, resource: str) -> dict[str, str]:
    found = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [resource]}])["Tags"]
    return {t["Key"]: t["Value"] for t in found}


def status_of(ec2: Any, ami: str) -> str | None:
    return tags(ec2, ami).get("status")


def snapshot_of(ec2: Any, ami: str) -> str:
    return str(ec2.describe_images(ImageIds=[ami])["Images"][0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"])


def production_ids(ec2: Any, family: str) -> list[str]:
    return [i["ImageId"] for i in seed_lookup(ec2, family)]


@pytest.fixture
def family() -> str:
    return f"app-{uuid.uuid4().hex[:6]}"


def test_soak_not_met_exits_1_and_changes_nothing(bake: Bake, ec2: Any, family: str) -> None:
    old = make_ami(ec2, family, "1.0", "production")
    new = make_ami(ec2, family, "2.0", "staging", staged_ago=timedelta(hours=3))
    before = {ami: tags(ec2, ami) for ami in (old, new, snapshot_of(ec2, old), snapshot_of(ec2, new))}

    result = bake("promote", "--target", "aws", "--family", family, "--to", "production")

    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "soak not met" in last and new in last and "staged 3h 0m ago" in last
    assert "Traceback" not in result.stderr
    assert {ami: tags(ec2, ami) for ami in before} == before
    assert ec2.describe_key_pairs()["KeyPairs"] == []  # the lock was released


def test_promote_leaves_one_production_the_lookup_finds_and_rollback_restores(
    bake: Bake, ec2: Any, family: str
) -> None:
    old = make_ami(ec2, family, "1.0", "production")
    new = make_ami(ec2, family, "2.0", "staging", staged_ago=timedelta(hours=25))
    make_ami(ec2, family, "0.9", "superseded")

    result = bake("--json", "promote", "--target", "aws", "--family", family, "--to", "production", "--publish-ssm")

    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout)
    assert record["image"] == new and record["production"] == new
    assert record["published"]["terraform lookup"] == new
    assert production_ids(ec2, family) == [new]  # the seed's lookup: exactly the promoted AMI
    assert status_of(ec2, old) == "superseded"
    assert status_of(ec2, snapshot_of(ec2, old)) == "superseded"
    new_tags = tags(ec2, new)
    assert new_tags["status"] == "production"
    assert tags(ec2, snapshot_of(ec2, new))["status"] == "production"
    assert new_tags["bakery:run-id"] == record["run_id"]
    assert promotion.parse_time(new_tags["bakery:promoted-at"]) is not None
    assert "bakery:forced" not in new_tags
    assert tags(ec2, old)["bakery:superseded-at"] == new_tags["bakery:promoted-at"]
    ssm = boto3.session.Session().client("ssm", region_name=REGION)
    assert ssm.get_parameter(Name=f"/bakery/{family}/production")["Parameter"]["Value"] == new
    assert ec2.describe_key_pairs()["KeyPairs"] == []

    back = bake("--json", "rollback", "--target", "aws", "--family", family)

    assert back.returncode == 0, back.stderr[-2000:]
    assert json.loads(back.stdout)["image"] == old
    assert production_ids(ec2, family) == [old]
    assert status_of(ec2, new) == "superseded"
    assert status_of(ec2, snapshot_of(ec2, old)) == "production"


def test_force_promotes_before_the_soak_and_is_recorded(bake: Bake, ec2: Any, family: str) -> None:
    new = make_ami(ec2, family, "2.0", "staging", staged_ago=timedelta(minutes=5))
    result = bake("--json", "promote", "--target", "aws", "--image", new, "--to", "production", "--force")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["forced"] is True
    assert tags(ec2, new)["bakery:forced"] == "true"
    assert production_ids(ec2, family) == [new]


def test_only_staging_goes_to_production_and_unknown_images_are_bad_requests(bake: Bake, ec2: Any, family: str) -> None:
    testing = make_ami(ec2, family, "3.0", "testing")
    refused = bake("promote", "--target", "aws", "--image", testing, "--to", "production", "--force")
    assert refused.returncode == 1
    assert "is testing, not staging" in refused.stderr.strip().splitlines()[-1]
    assert status_of(ec2, testing) == "testing"
    missing = bake("promote", "--target", "aws", "--image", "ami-00000000000000000", "--to", "production")
    assert missing.returncode == 2, missing.stderr[-2000:]


def test_racing_promotions_never_show_two_productions(aws_env: str, ec2: Any, family: str) -> None:
    """Three promoters race (threads, own clients); an observer polls the seed's lookup throughout."""
    make_ami(ec2, family, "1.0", "production")
    candidates = [make_ami(ec2, family, f"2.{n}", "staging", staged_ago=timedelta(days=2)) for n in range(3)]
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def observe() -> None:
        client = ec2_client(aws_env)
        while not done.is_set():
            seen.append(len(production_ids(client, family)))

    def promote(ami: str) -> None:
        try:
            store = AmiStages(ec2_client(aws_env), lock_wait=timedelta(seconds=60))
            promotion.promote(store, to="production", run_id=f"run-{ami}", image=ami)
        except BaseException as exc:
            errors.append(exc)

    observer = threading.Thread(target=observe)
    observer.start()
    racers = [threading.Thread(target=promote, args=(ami,)) for ami in candidates]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(120)
    done.set()
    observer.join(30)

    assert errors == []
    final = production_ids(ec2, family)
    assert len(final) == 1 and final[0] in candidates
    assert max(seen) <= 1, "an observer saw two production AMIs"
    statuses = [status_of(ec2, ami) for ami in candidates]
    assert statuses.count("production") == 1 and statuses.count("superseded") == 2
    assert ec2.describe_key_pairs()["KeyPairs"] == []


def test_stale_lock_is_broken_and_a_live_one_waits(aws_env: str, ec2: Any, family: str) -> None:
    new = make_ami(ec2, family, "2.0", "staging", staged_ago=timedelta(days=2))
    lock_tags = [
        {"Key": "bakery:run-id", "Value": "crashed"},
        {"Key": "bakery:expires-at", "Value": iso_ago(timedelta(minutes=1))},
        {"Key": "ManagedBy", "Value": "bakery"},
    ]
    ec2.create_key_pair(
        KeyName=f"bakery-promote-{family}", TagSpecifications=[{"ResourceType": "key-pair", "Tags": lock_tags}]
    )
    promotion.promote(AmiStages(ec2), to="production", run_id="r1", image=new)
    assert production_ids(ec2, family) == [new]

    live = [
        {**t, "Value": promotion.iso(datetime.now(UTC) + timedelta(minutes=5))} if "expires" in t["Key"] else t
        for t in lock_tags
    ]
    ec2.create_key_pair(
        KeyName=f"bakery-promote-{family}", TagSpecifications=[{"ResourceType": "key-pair", "Tags": live}]
    )
    newer = make_ami(ec2, family, "3.0", "staging", staged_ago=timedelta(days=2))
    with pytest.raises(JobFailed, match="another promotion holds"):
        promotion.promote(AmiStages(ec2, lock_wait=timedelta(seconds=1)), to="production", run_id="r2", image=newer)
    assert production_ids(ec2, family) == [new]

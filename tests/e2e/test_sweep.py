"""`bake sweep` after a killed run: its labelled leftovers go; fresh and unlabelled ones stay.

Docker: a real run process launches its test container through the Docker target and is SIGKILLed (no
hook runs). AWS (moto server): a killed run's instance, key pair and security group, Packer's own
temporary key pair and security group, next to fresh and unlabelled ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import docker
import pytest

from tests.e2e.conftest import REPO, Bake
from tests.support import first_line_then_sigkill, wait_for
from tests.support.moto import CountingMotoServer, ec2_backend, moto_server

pytestmark = pytest.mark.e2e

BASE = "bakery/debian:bookworm"
# The label on every container this test makes itself, its value this session's own: another suite's
# sweep test on the same engine never sees (or removes) these, nor this one theirs.
TEST_LABEL = "bakery-test.sweep"
TEST_TOKEN = uuid.uuid4().hex[:12]

KILLED_RUN = """
import sys, time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tasks import keys
from tasks.targets.base import Run
from tasks.targets.docker.instances import DockerTarget

run_id = sys.argv[1]
target = DockerTarget()
with keys.run_keypair(run_id) as key:
    run = Run(run_id, "sweeptest", Path("."), datetime.now(UTC) + timedelta(seconds=3), key.private_key, key.public_key)
    instance = target.launch(target.image(sys.argv[2]), run)
    print(instance.id, flush=True)
    time.sleep(600)
"""


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


@pytest.fixture
def moto() -> Iterator[CountingMotoServer]:
    with moto_server() as server:
        server.reset()
        yield server


@pytest.fixture
def containers(engine: docker.DockerClient) -> Iterator[list[str]]:
    """Ids of containers this test made (some labelled by the Docker target itself): removed at the end."""
    made: list[str] = []
    yield made
    for container in engine.containers.list(
        all=True, filters={"label": f"{TEST_LABEL}={TEST_TOKEN}"}, ignore_removed=True
    ):
        made.append(container.id)
    for container_id in made:
        with contextlib.suppress(docker.errors.NotFound):
            engine.api.remove_container(container_id, force=True, v=True)


def killed_run(tmp_path: Path) -> tuple[str, str]:
    """A run that launched its test container and then was SIGKILLed; returns (run id, container id)."""
    run_id = str(uuid.uuid4())
    env = {**os.environ, "BAKERY_KEYS_DIR": str(tmp_path / "bakery-keys"), "PYTHONPATH": str(REPO)}
    container_id = first_line_then_sigkill([sys.executable, "-c", KILLED_RUN, run_id, BASE], REPO, env)
    return run_id, container_id


def test_docker_sweep_removes_what_a_killed_run_left(
    engine: docker.DockerClient, bake: Bake, containers: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, killed = killed_run(tmp_path)
    containers.append(killed)
    keys = tmp_path / "bakery-keys"
    assert (keys / run_id).is_dir()  # no hook ran: the key directory is still there
    old = time.time() - 2 * 86400
    os.utime(keys / run_id, (old, old))
    (keys / "fresh-run").mkdir(mode=0o700)  # old, but its run's container has not expired: it stays
    os.utime(keys / "fresh-run", (old, old))

    now = datetime.now(UTC)
    fresh = iso(now + timedelta(hours=2))
    # Packer's build container (named by packer/docker.pkr.hcl): a fresh one may be a build in progress
    builder = engine.containers.create(
        BASE, command=["true"], name=f"bakery-build-{uuid.uuid4()}", labels={TEST_LABEL: TEST_TOKEN}
    ).id
    keep = engine.containers.create(
        BASE,
        command=["true"],
        labels={
            "bakery.run-id": "fresh-run",
            "bakery.expires-at": fresh,
            "bakery.family": "sweeptest",
            TEST_LABEL: TEST_TOKEN,
        },
    ).id
    plain = engine.containers.create(BASE, command=["true"], labels={TEST_LABEL: TEST_TOKEN}).id
    containers.extend([builder, keep, plain])
    expires = engine.containers.get(killed).labels["bakery.expires-at"]  # 3 s after its launch
    wait_for(lambda: datetime.now(UTC) > datetime.fromisoformat(expires), "the killed run's container expiring", 30)

    monkeypatch.setenv("BAKERY_KEYS_DIR", str(keys))
    with moto_server() as moto:
        moto.reset()
        dry = bake("--json", "sweep", "--target", "docker")
        assert dry.returncode == 0, dry.stderr[-3000:]
        plan = {row["id"]: row for row in json.loads(dry.stdout)["resources"]}
        assert plan[killed]["decision"] == "remove" and plan[killed]["reason"].startswith("expired ")
        assert plan[killed]["run_id"] == run_id
        assert plan[builder]["decision"] == "keep"
        assert plan[builder]["reason"].startswith("only ")
        assert (plan[keep]["decision"], plan[keep]["reason"]) == ("keep", "expires in 1h59m")
        assert plain not in plan  # unlabelled: never even listed
        assert plan[str(keys / run_id)]["decision"] == "remove"
        assert (plan[str(keys / "fresh-run")]["decision"], plan[str(keys / "fresh-run")]["reason"]) == (
            "keep",
            "its run still has live resources",
        )
        assert engine.containers.get(killed).status == "running"  # a dry run removes nothing

        applied = bake("sweep", "--target", "docker", "--apply")
        assert applied.returncode == 0, applied.stderr[-3000:]
        assert moto.counter.total == 0  # --target docker never talks to AWS
    assert "Sweep: target docker" in applied.stdout
    left = {
        c.id
        for c in engine.containers.list(all=True, filters={"label": f"{TEST_LABEL}={TEST_TOKEN}"}, ignore_removed=True)
    }
    left |= {
        c.id
        for c in engine.containers.list(all=True, filters={"label": f"bakery.run-id={run_id}"}, ignore_removed=True)
    }
    assert left == {keep, plain, builder}
    assert not (keys / run_id).exists()
    assert (keys / "fresh-run").is_dir()


def tag_spec(kind: str, tags: dict[str, str]) -> list[dict[str, Any]]:
    return [{"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


def bakery_tags(run_id: str, expires: datetime) -> dict[str, str]:
    return {"bakery:run-id": run_id, "bakery:expires-at": iso(expires), "ManagedBy": "bakery"}


def packer_name(moment: datetime) -> str:
    """Packer's ``packer_<time-ordered uuid>``: the first 8 hex digits are the Unix time."""
    tail = uuid.uuid4().hex
    return f"packer_{int(moment.timestamp()):08x}-{tail[:4]}-{tail[4:8]}-{tail[8:12]}-{tail[12:24]}"


def run_leftovers(ec2: Any, image: str, run_id: str, tags: dict[str, str]) -> dict[str, str]:
    """What a run creates on AWS: key pair, security group, instance using both (tags as given)."""
    pair = ec2.create_key_pair(KeyName=f"bakery-{run_id}", TagSpecifications=tag_spec("key-pair", tags))
    group = ec2.create_security_group(
        GroupName=f"bakery-{run_id}",
        Description="bakery test instance",
        TagSpecifications=tag_spec("security-group", tags),
    )
    instance = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        KeyName=pair["KeyName"],
        SecurityGroupIds=[group["GroupId"]],
        TagSpecifications=tag_spec("instance", {**tags, "Name": f"bakery-test-{run_id}"}),
    )["Instances"][0]
    return {"instance": instance["InstanceId"], "key-pair": pair["KeyPairId"], "security-group": group["GroupId"]}


def test_aws_sweep_removes_what_a_killed_run_left(
    moto: CountingMotoServer, bake: Bake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAKERY_KEYS_DIR", str(tmp_path / "bakery-keys"))  # only this test's key directories
    ec2 = boto3.client("ec2")
    image = ec2.register_image(Name="base")["ImageId"]
    now = datetime.now(UTC)
    killed = run_leftovers(ec2, image, "killed", bakery_tags("killed", now - timedelta(minutes=30)))
    fresh = run_leftovers(ec2, image, "fresh", bakery_tags("fresh", now + timedelta(hours=2)))
    plain = run_leftovers(ec2, image, "plain", {"Owner": "someone"})
    half = run_leftovers(ec2, image, "half", {"bakery:run-id": "half", "bakery:expires-at": iso(now)})  # no ManagedBy
    old_packer, new_packer = packer_name(now - timedelta(days=2)), packer_name(now - timedelta(hours=1))
    packer_pair = ec2.create_key_pair(KeyName=old_packer)["KeyPairId"]
    packer_group = ec2.create_security_group(GroupName=old_packer, Description="Temporary group for Packer")["GroupId"]
    young_group = ec2.create_security_group(GroupName=new_packer, Description="Temporary group for Packer")["GroupId"]
    lookalike = ec2.create_security_group(GroupName=packer_name(now - timedelta(days=9)), Description="mine")["GroupId"]
    # Packer's builder instance of a build started without run_tags two days ago (a killed packer build)
    builder = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, KeyName=old_packer, SecurityGroupIds=[packer_group]
    )["Instances"][0]["InstanceId"]
    young_builder = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=tag_spec("instance", {"Name": "Packer Builder"}),
    )["Instances"][0]["InstanceId"]
    ec2_backend().get_instance(builder).launch_time = now - timedelta(days=2)  # test seam: moto stamps "now"

    # by default only what carries bakery's run tags: Packer's untagged leftovers may be another tool's
    default = bake("--json", "sweep", "--target", "aws")
    assert default.returncode == 0, default.stderr[-3000:]
    listed = {row["id"]: row["decision"] for row in json.loads(default.stdout)["resources"]}
    assert listed == {**{killed[k]: "remove" for k in killed}, **{fresh[k]: "keep" for k in fresh}}

    dry = bake("--json", "sweep", "--target", "aws", "--packer-leftovers")
    assert dry.returncode == 0, dry.stderr[-3000:]
    plan = {row["id"]: (row["decision"], row["reason"]) for row in json.loads(dry.stdout)["resources"]}
    expected = {
        **{killed[k]: "remove" for k in killed},
        **{fresh[k]: "keep" for k in fresh},
        packer_pair: "remove",
        packer_group: "remove",
        builder: "remove",
        young_group: "keep",
        young_builder: "keep",
    }
    assert {k: v[0] for k, v in plan.items()} == expected  # plain, half-labelled and lookalike: not listed
    assert plan[killed["instance"]][1].startswith("expired 30m")
    assert plan[packer_group][1] == "2d old, older than 1d"
    assert plan[builder][1] == "2d old, older than 1d"
    assert plan[young_builder][1].startswith("only ")
    assert plan[fresh["security-group"]][1] == "expires in 1h59m"

    applied = bake("--json", "sweep", "--target", "aws", "--apply", "--packer-leftovers")
    assert applied.returncode == 0, applied.stderr[-3000:]
    result = json.loads(applied.stdout)
    assert {r["id"]: r["result"] for r in result["resources"] if r["decision"] == "remove"} == {
        k: "removed" for k, v in expected.items() if v == "remove"
    }
    states = {
        i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
    }
    assert states[killed["instance"]] == states[builder] == "terminated"
    assert {states[s["instance"]] for s in (fresh, plain, half)} | {states[young_builder]} == {"running"}
    pairs = {p["KeyPairId"] for p in ec2.describe_key_pairs()["KeyPairs"]}
    assert pairs == {fresh["key-pair"], plain["key-pair"], half["key-pair"]}
    groups = {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"}
    assert groups == {fresh["security-group"], plain["security-group"], half["security-group"], young_group, lookalike}

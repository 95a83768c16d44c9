"""A promotion is all or nothing (issue 11, item 3).

A promotion demotes the old production, then writes the new one. A failure at the second write used to
leave the family with no production (AWS) or with a record that says the production is superseded
(Docker); a kill between the two writes, the same, for good. Now an intent is written before the first
write and cleared after the last: a failure is undone on the spot, and a kill is completed or undone by
the next promote, rollback or sweep of the family, which says what it found. Faults go in at seams: a
botocore handler on bakery's EC2 clients, a patched store method in this process, and
``tests/reliability/kill_seam.py`` (SIGKILL of the `bake` process itself at the second write).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from tasks import promotion
from tasks.targets.base import Image
from tasks.targets.docker.stages import DockerStages, FamilyRecord
from tests.aws_seam import client_error, ec2, on_ec2  # noqa: F401  (ec2: fixture)
from tests.e2e.conftest import REPO, Bake
from tests.reliability.conftest import AwsLeaks, Baked

pytestmark = pytest.mark.e2e
TARGET = "docker, aws"

INTENT_TAG = "bakery:promotion-intent"  # spelled out: this module also runs against code without it
NOW = datetime.now(UTC)
OLD_PROMOTED_AT = promotion.iso(NOW - timedelta(days=9))
NEW_STAGED_AT = promotion.iso(NOW - timedelta(days=2))


def kill_at_production_write(image_id: str, *argv: str, env: dict[str, str]) -> int:
    """`bake ARGV` in a process that SIGKILLs itself when it is about to write production on ``image_id``."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.reliability.kill_seam", "production", image_id, *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode


# --- Docker ----------------------------------------------------------------------------------------------------


@pytest.fixture
def docker_family(
    engine: docker.DockerClient, base_image: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Image, Image]]:
    """A family of two images (commits of the base image): ``1.0`` production, ``2.0`` staging for 2 days."""
    monkeypatch.setenv("BAKERY_STATE_DIR", str(state_dir))
    family = f"slots-promo-{uuid.uuid4().hex[:6]}"
    made = []
    for version in ("1.0", "2.0"):
        container = engine.containers.create(base_image, command=["true"], labels={"bakery.family": family})
        try:
            committed = container.commit(repository=family, tag=version)
        finally:
            container.remove(force=True)
        made.append(Image("docker", committed.id, family, version, f"{family}:{version}"))
    old, new = made
    stages = DockerStages(engine)
    stages.write_stage(old.id, family, "1.0", "production", "setup", {promotion.TAG_PROMOTED_AT: OLD_PROMOTED_AT})
    stages.write_stage(new.id, family, "2.0", "staging", "setup", {promotion.TAG_STAGED_AT: NEW_STAGED_AT})
    yield family, old, new
    for image in engine.images.list(name=family):
        for tag in image.tags:
            if tag.startswith(f"{family}:"):
                with contextlib.suppress(docker.errors.APIError):
                    engine.api.remove_image(tag, force=True)


def docker_state(engine: docker.DockerClient, family: str) -> dict[str, Any]:
    def pointer(name: str) -> str | None:
        try:
            return str(engine.images.get(f"{family}:{name}").id)
        except docker.errors.ImageNotFound:
            return None

    data = FamilyRecord(family).read()
    return {
        "production": pointer("production"),
        "superseded": pointer("superseded"),
        "staging": pointer("staging"),
        "stages": {i: e.get("stage") for i, e in data["images"].items()},
        "intent": data.get("intent"),
    }


def test_docker_failure_at_the_production_write_is_undone(
    in_process: Callable[..., int],
    engine: docker.DockerClient,
    docker_family: tuple[str, Image, Image],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Docker: the engine refuses the production tag of the new image: undone at once, exit 1 saying so;
    the old image is production in the tags and the record, the new one staging with its soak."""
    family, old, new = docker_family
    real = DockerStages.write_stage

    def refuse(self: DockerStages, image_id: str, fam: str, version: str, stage: str, *rest: Any) -> None:
        if (image_id, stage) == (new.id, "production"):
            raise docker.errors.APIError("injected: the engine refused the tag")
        real(self, image_id, fam, version, stage, *rest)

    monkeypatch.setattr(DockerStages, "write_stage", refuse)
    code = in_process("promote", "--family", family, "--to", "production")
    err = capfd.readouterr().err
    assert code == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "injected" in last and f"undone: {family}:1.0" in last and "production again" in last, last
    state = docker_state(engine, family)
    assert state["production"] == old.id
    assert state["superseded"] is None, "the demotion's superseded pointer is taken back"
    assert state["staging"] == new.id
    assert state["stages"] == {old.id: "production", new.id: "staging"}
    assert state["intent"] is None
    record = FamilyRecord(family).read()["images"]
    assert record[old.id]["promoted_at"] == OLD_PROMOTED_AT
    assert record[new.id]["staged_at"] == NEW_STAGED_AT


def test_docker_kill_between_the_writes_is_undone_by_the_next_promote(
    session_bake: Bake, engine: docker.DockerClient, docker_family: tuple[str, Image, Image]
) -> None:
    """Docker: `bake promote` SIGKILLed between the two writes; the next `bake promote` of the family says
    what it found, undoes it and then promotes: one production, a consistent record, no intent."""
    family, old, new = docker_family
    code = kill_at_production_write(new.id, "promote", "--family", family, "--to", "production", env=session_bake.env())
    assert code == -9
    state = docker_state(engine, family)
    assert state["stages"][old.id] == "superseded", "the kill left the record saying there is no production"

    again = session_bake("--json", "promote", "--family", family, "--to", "production")
    assert again.returncode == 0, again.stderr[-3000:]
    notes = json.loads(again.stdout)["notes"]
    assert any("found an unfinished promote of" in n and "undone" in n for n in notes), notes
    state = docker_state(engine, family)
    assert (state["production"], state["superseded"]) == (new.id, old.id)
    assert state["stages"] == {old.id: "superseded", new.id: "production"}
    assert state["intent"] is None


def test_docker_kill_between_the_writes_is_undone_by_the_sweep(
    session_bake: Bake, engine: docker.DockerClient, docker_family: tuple[str, Image, Image]
) -> None:
    """Docker: a rollback-free family after a kill: `bake sweep --apply` finds the intent and restores the
    old production (tags and record), the new image back at staging."""
    family, old, new = docker_family
    code = kill_at_production_write(new.id, "promote", "--family", family, "--to", "production", env=session_bake.env())
    assert code == -9
    dry = session_bake("sweep", "--target", "docker")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert f"would resume an unfinished promote of {family}" in dry.stdout
    swept = session_bake("sweep", "--target", "docker", "--apply")
    assert swept.returncode == 0, swept.stderr[-3000:]
    assert f"found an unfinished promote of {family}" in swept.stdout
    state = docker_state(engine, family)
    assert (state["production"], state["staging"]) == (old.id, new.id)
    assert state["stages"] == {old.id: "production", new.id: "staging"}
    assert state["intent"] is None


# --- AWS (moto server) -----------------------------------------------------------------------------------------


def make_ami(ec2: Any, family: str, version: str, tags: dict[str, str]) -> str:  # noqa: F811
    """An AMI of ``family`` with a snapshot, tagged as bakery tags what it builds."""
    volume = ec2.create_volume(Size=8, AvailabilityZone="us-east-1a")["VolumeId"]
    snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    ami = ec2.register_image(
        Name=f"{family}-{version}",
        RootDeviceName="/dev/sda1",
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snapshot}}],
    )["ImageId"]
    ec2.delete_volume(VolumeId=volume)
    all_tags = {"Name": f"{family}-{version}", "Version": version, "ManagedBy": "bakery", **tags}
    ec2.create_tags(Resources=[ami, snapshot], Tags=[{"Key": k, "Value": v} for k, v in all_tags.items()])
    return str(ami)


@pytest.fixture
def aws_family(aws_leaks: AwsLeaks, ec2: Any) -> tuple[str, str, str]:  # noqa: F811
    family = f"slots-promo-{uuid.uuid4().hex[:6]}"
    old = make_ami(ec2, family, "1.0", {"status": "production", "bakery:promoted-at": OLD_PROMOTED_AT})
    new = make_ami(ec2, family, "2.0", {"status": "staging", "bakery:staged-at": NEW_STAGED_AT})
    return family, old, new


def ami_tags(ec2: Any, ami: str) -> dict[str, str]:  # noqa: F811
    image = ec2.describe_images(ImageIds=[ami])["Images"][0]
    return {t["Key"]: t["Value"] for t in image.get("Tags") or []}


def seed_lookup(ec2: Any, family: str) -> list[str]:  # noqa: F811
    found = ec2.describe_images(
        Owners=["self"],
        Filters=[{"Name": "tag:Name", "Values": [f"{family}-*"]}, {"Name": "tag:status", "Values": ["production"]}],
    )["Images"]
    return [i["ImageId"] for i in found]


def test_aws_failure_at_the_production_write_is_undone(
    aws_bake: Callable[..., Baked],
    aws_leaks: AwsLeaks,
    ec2: Any,  # noqa: F811
    aws_family: tuple[str, str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AWS: CreateTags of `status=production` on the new AMI is refused: undone at once, exit 1 saying so;
    the seed's Terraform lookup finds the old production, with its own promoted-at; nothing else is left."""
    family, old, new = aws_family

    def refuse(**kwargs: Any) -> None:
        body = dict(kwargs["params"]["body"])
        tags = {body[k]: body.get(k.replace(".Key", ".Value")) for k in body if k.endswith(".Key")}
        if new in body.values() and tags.get("status") == "production":
            raise client_error("UnauthorizedOperation", "injected: not allowed to tag production", "CreateTags")

    on_ec2(monkeypatch, "before-call.ec2.CreateTags", refuse)
    baked = aws_bake("promote", "--target", "aws", "--family", family, "--to", "production")
    assert baked.code == 1, baked.err[-3000:]
    assert "injected" in baked.last_line and f"undone: {family}-1.0" in baked.last_line, baked.last_line
    assert seed_lookup(ec2, family) == [old]
    old_tags, new_tags = ami_tags(ec2, old), ami_tags(ec2, new)
    assert (old_tags["status"], old_tags["bakery:promoted-at"]) == ("production", OLD_PROMOTED_AT)
    assert (new_tags["status"], new_tags["bakery:staged-at"]) == ("staging", NEW_STAGED_AT)
    assert INTENT_TAG not in new_tags
    aws_leaks.assert_none()  # the promotion lock (a key pair) is gone too


@dataclass(frozen=True)
class Recovery:
    command: str
    description: str  # the report's scenario line (tests/reliability/conftest.py)

    def __str__(self) -> str:
        return self.command


RECOVERIES = [
    Recovery(
        "sweep",
        "AWS: `bake promote` SIGKILLed between the two writes leaves no production; the next `bake sweep "
        "--apply` says what it found and restores the old production (the dead promoter's lock broken at once)",
    ),
    Recovery(
        "rollback",
        "AWS: the same kill; the next `bake rollback` of the family first undoes the unfinished promotion "
        "(saying so), then finds nothing to roll back to (exit 1): the old production stays restored",
    ),
]


@pytest.mark.parametrize("recovery", RECOVERIES, ids=str)
def test_aws_kill_between_the_writes_is_undone_by_the_next_command(
    recovery: Recovery,
    aws_bake: Callable[..., Baked],
    aws_leaks: AwsLeaks,
    ec2: Any,  # noqa: F811
    aws_family: tuple[str, str, str],
    session_bake: Bake,
) -> None:
    """AWS: `bake promote` SIGKILLed between the two writes leaves no production; the next sweep (or
    rollback) of the family says what it found and restores the old production (its lock: its process is
    gone, so it is broken at once)."""
    family, old, new = aws_family
    env = {**os.environ, **session_bake.env()}
    code = kill_at_production_write(
        new, "promote", "--target", "aws", "--family", family, "--to", "production", env=env
    )
    assert code == -9
    assert seed_lookup(ec2, family) == [], "the kill left the family without a production"

    if recovery.command == "sweep":
        baked = aws_bake("sweep", "--target", "aws", "--apply")
        assert baked.code == 0, baked.err[-3000:]
        assert f"found an unfinished promote of {family}" in baked.out, baked.out
        assert seed_lookup(ec2, family) == [old]
        assert ami_tags(ec2, new)["status"] == "staging"
    else:
        baked = aws_bake("--json", "rollback", "--target", "aws", "--family", family)
        assert baked.code == 1, baked.err[-3000:]  # nothing was ever superseded: nothing to roll back to
        assert seed_lookup(ec2, family) == [old], "but the unfinished promotion was undone first"
        assert "no superseded image to roll back to" in baked.last_line
        assert f"found an unfinished promote of {family}" in baked.last_line, baked.last_line  # not only a log line
    assert (ami_tags(ec2, old)["bakery:promoted-at"], ami_tags(ec2, new)["bakery:staged-at"]) == (
        OLD_PROMOTED_AT,
        NEW_STAGED_AT,
    )
    assert INTENT_TAG not in ami_tags(ec2, new)
    aws_leaks.assert_none()

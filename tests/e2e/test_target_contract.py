"""The target contract: the same behaviour asked of every target, against its real platform.

Each target runs every test here: Docker against the real engine, AWS against the moto server (a real HTTP
EC2 endpoint on 127.0.0.1; nothing here connects to an instance, so no network namespace is needed). A new
target passes this suite or is not done: every target in the table (``tasks.targets.registry.PLATFORMS``)
runs it, through a :class:`PlatformView` of its platform here (a target without one fails the suite).

What is tested goes through the entry points only: ``get_target`` (the Target protocol), ``open_store``
(retention's view: inventory, usage, deletion) and ``open_sources`` (the sweep's view: leftovers and their
removal), all from the one table (tasks/targets/registry.py), never a platform module. What is
observed goes through the platform itself (the engine's containers and tags, the EC2 API): a
:class:`PlatformView` is the test's own window on it, never bakery's bookkeeping (except Docker's family
record, which is where the Docker target keeps what tags cannot say).

Other suites may use the same engine at the same time: every Docker name here is a family of this test's
own, every assertion is about this test's run or family, and every cleanup removes only those.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import boto3
import docker
import pytest

from tasks.keys import run_keypair
from tasks.sweep import Rules, decide
from tasks.targets.base import Image, ImageRecord, Instance, Leftover, Run, Target
from tasks.targets.docker.stages import FamilyRecord  # where the Docker target keeps what tags cannot say
from tasks.targets.registry import PLATFORMS, get_target, open_sources, open_store
from tests.conftest import REGION
from tests.support import containers_of, new_family, remove_family

pytestmark = pytest.mark.e2e

LIVE_INSTANCE_STATES = ["pending", "running", "stopping", "stopped"]
# Stages retention does not protect: it may list them as they are or as none (Docker's retention reads the
# stage tags alone, and "testing"/"failed" have no tag), and treats them alike either way.
UNPROTECTED_STAGES = (None, "testing", "failed")


# --- the platforms: how a test makes a build's artifact and looks at what a target did --------------------


class PlatformView(Protocol):
    """A target's platform as the contract sees it from outside bakery."""

    name: str  # the target's name, as get_target takes it
    family: str  # this test's own family

    def new_artifact(self) -> str:
        """An image as a Packer build leaves it (nothing of bakery's on it); its artifact id."""
        ...

    def instances_of(self, run_id: str) -> list[str]:
        """Ids of the live test instances the platform holds for ``run_id`` (its own API, not bakery's)."""
        ...

    def last_result(self, image: Image) -> str | None:
        """The test result recorded beside ``image``, read from where the target keeps it."""
        ...

    def exists(self, image: Image) -> bool:
        """Whether the platform still holds the image."""
        ...

    def foreign_image(self) -> str:
        """An image of this family's name that bakery did not make (no managed-by mark); its image id."""
        ...

    def foreign_instance(self) -> str:
        """A machine bakery did not make (none of its run labels), old enough for any age rule; its id."""
        ...

    def remove_foreign(self) -> None:
        """Remove what ``foreign_image``/``foreign_instance`` made."""
        ...


@dataclass
class DockerView:
    engine: docker.DockerClient
    base_image: str
    family: str
    name: str = "docker"
    foreign: list[str] = field(default_factory=list)

    def new_artifact(self) -> str:
        container = self.engine.containers.create(self.base_image, command=["true"])
        try:
            return str(container.commit().id)  # untagged and unlabelled, as Packer's own image
        finally:
            container.remove(force=True)

    def instances_of(self, run_id: str) -> list[str]:
        return [self.engine.containers.get(name).id for name in containers_of(self.engine, run_id=run_id)]

    def last_result(self, image: Image) -> str | None:
        entry = FamilyRecord(image.family).read()["images"].get(image.id) or {}
        return entry.get("last_result")

    def exists(self, image: Image) -> bool:
        try:
            self.engine.images.get(image.id)
        except docker.errors.ImageNotFound:
            return False
        return True

    def foreign_image(self) -> str:
        container = self.engine.containers.create(self.base_image, command=["true"])
        try:
            return str(container.commit(repository=self.family, tag="0.9").id)  # removed with the family
        finally:
            container.remove(force=True)

    def foreign_instance(self) -> str:
        container = self.engine.containers.create(self.base_image, command=["true"], name=f"{self.family}-foreign")
        self.foreign.append(container.id)
        return str(container.id)

    def remove_foreign(self) -> None:
        for container_id in self.foreign:
            with contextlib.suppress(docker.errors.NotFound):
                self.engine.api.remove_container(container_id, force=True)


@dataclass
class AwsView:
    ec2: Any
    family: str
    name: str = "aws"

    def new_artifact(self) -> str:
        """An AMI made from one of moto's own images, as Packer's amazon-ebs leaves it: ``region:ami-…``."""
        base = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        builder = self.ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1, InstanceType="t3.micro")
        builder_id = builder["Instances"][0]["InstanceId"]
        ami = self.ec2.create_image(InstanceId=builder_id, Name=f"packer-{uuid.uuid4().hex[:12]}")["ImageId"]
        self.ec2.terminate_instances(InstanceIds=[builder_id])
        return f"{REGION}:{ami}"

    def instances_of(self, run_id: str) -> list[str]:
        found = self.ec2.describe_instances(
            Filters=[
                {"Name": "tag:bakery:run-id", "Values": [run_id]},
                {"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES},
            ]
        )
        return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]

    def last_result(self, image: Image) -> str | None:
        (found,) = self.ec2.describe_images(ImageIds=[image.id])["Images"]
        return {t["Key"]: t["Value"] for t in found.get("Tags") or []}.get("bakery:last-result")

    def exists(self, image: Image) -> bool:
        return bool(self.ec2.describe_images(Owners=["self"], ImageIds=[image.id])["Images"])

    def foreign_image(self) -> str:
        """An AMI named like the family's builds, by another tool (no ManagedBy tag)."""
        _, ami = self.new_artifact().split(":")
        self.ec2.create_tags(Resources=[ami], Tags=[{"Key": "Name", "Value": f"{self.family}-0.9"}])
        return ami

    def foreign_instance(self) -> str:
        base = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        started = self.ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1, InstanceType="t3.micro")
        return str(started["Instances"][0]["InstanceId"])

    def remove_foreign(self) -> None:
        pass  # the next test resets moto


VIEWS = ("docker", "aws")  # the targets this suite can look at; a target in the table and not here fails


def test_every_target_in_the_table_runs_the_contract() -> None:
    assert sorted(PLATFORMS) == sorted(VIEWS), "add a PlatformView (and its fixture branch) for the new target"


@pytest.fixture
def own_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records and per-run keys of this test only."""
    monkeypatch.setenv("BAKERY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("BAKERY_KEYS_DIR", str(tmp_path / "keys"))


@pytest.fixture(params=sorted(PLATFORMS))
def platform(request: pytest.FixtureRequest, own_state: None) -> Iterator[PlatformView]:
    family = new_family("contract")
    if request.param == "docker":
        engine: docker.DockerClient = request.getfixturevalue("engine")
        view = DockerView(engine, request.getfixturevalue("base_image"), family)
        try:
            yield view
        finally:
            view.remove_foreign()
            remove_family(engine, family)
    elif request.param == "aws":
        url = request.getfixturevalue("aws_env")  # a fresh moto behind the standard AWS variables
        request.getfixturevalue("monkeypatch").setenv("BAKERY_AWS_WAITER_DELAY", "0.2")
        yield AwsView(boto3.session.Session().client("ec2", region_name=REGION, endpoint_url=url), family)
    else:
        pytest.fail(f"target {request.param!r} has no PlatformView in this suite: it has not passed the contract")


@pytest.fixture
def target(platform: PlatformView) -> Target:
    return get_target(platform.name)


@pytest.fixture
def image(platform: PlatformView, target: Target) -> Image:
    """A build of this test's family, adopted and staged ``testing`` as the pipeline's build stage does."""
    run_id = f"build-{uuid.uuid4()}"
    adopted = target.adopt_build(platform.new_artifact(), platform.family, "1.0", run_id)
    target.set_stage(adopted, "testing", run_id)
    return adopted


@dataclass
class Launched:
    run: Run
    instance: Instance


@pytest.fixture
def launch(target: Target, platform: PlatformView, tmp_path: Path) -> Iterator[Any]:
    """``launch(image, expires_in)``: a test instance of a new run, as the pipeline launches one; every
    instance launched is torn down afterwards, whatever the test did."""
    made: list[Launched] = []
    with_keys: list[Any] = []

    def start(image: Image, expires_in: timedelta = timedelta(hours=1)) -> Launched:
        run_id = str(uuid.uuid4())
        expires_at = datetime.now(UTC) + expires_in
        keys = run_keypair(run_id, expires_at)
        key = keys.__enter__()
        with_keys.append(keys)
        workdir = tmp_path / "runs" / run_id
        workdir.mkdir(parents=True)
        run = Run(run_id, image.family, workdir, expires_at, key.private_key, key.public_key)
        launched = Launched(run, target.launch(image, run))
        made.append(launched)
        return launched

    try:
        yield start
    finally:
        for launched in made:
            target.teardown(launched.instance)
        for keys in with_keys:
            keys.__exit__(None, None, None)


def record_of(target_name: str, image: Image) -> tuple[ImageRecord | None, dict[str, list[str]]]:
    """Retention's view of ``image``: its inventory record (None: not listed) and the usage table."""
    records, usage = open_store(target_name).inventory()
    mine = [r for r in records if r.image_id == image.id]
    assert len(mine) <= 1, mine
    return (mine[0] if mine else None), usage


def leftovers_of(target_name: str, run_id: str, now: datetime | None = None) -> list[Leftover]:
    """The sweep's view of one run: its leftovers in the target's sources, each decided by the sweep's rules."""
    rules = Rules(now=now or datetime.now(UTC))
    return [
        decided
        for source in open_sources(target_name)
        for decided in source.protect([decide(item, rules) for item in source.find()])
        if decided.run_id == run_id
    ]


# --- images and stages -------------------------------------------------------------------------------------


def test_an_adopted_build_is_a_testing_image_of_its_family(
    platform: PlatformView, target: Target, image: Image
) -> None:
    assert (image.target, image.family, image.version) == (target.name, platform.family, "1.0")
    assert target.current_stage(image) == "testing"
    record, _ = record_of(target.name, image)
    assert record is not None, "retention does not list the adopted build"
    assert (record.family, record.version, record.managed) == (platform.family, "1.0", True)
    assert record.stage in UNPROTECTED_STAGES


@pytest.mark.parametrize("stage", ["staging", "production", "superseded", "failed"])
def test_a_stage_set_is_the_stage_read_back_by_the_target_and_by_retention(
    target: Target, image: Image, stage: str
) -> None:
    target.set_stage(image, stage, "contract-run")
    assert target.current_stage(image) == stage
    record, _ = record_of(target.name, image)
    assert record is not None
    if stage in UNPROTECTED_STAGES:
        assert record.stage in UNPROTECTED_STAGES
    else:
        assert record.stage == stage


def test_a_later_stage_replaces_the_earlier_one(target: Target, image: Image) -> None:
    target.set_stage(image, "staging", "contract-run")
    target.set_stage(image, "production", "contract-run-2")
    assert target.current_stage(image) == "production"


def test_a_recorded_test_result_leaves_the_stage_alone(platform: PlatformView, target: Target, image: Image) -> None:
    target.set_stage(image, "production", "contract-run")
    target.record_test_result(image, "failed", "contract-test-run")
    assert target.current_stage(image) == "production"
    assert platform.last_result(image) == "failed"
    target.record_test_result(image, "passed", "contract-test-run-2")
    assert target.current_stage(image) == "production"
    assert platform.last_result(image) == "passed"


def test_an_image_bakery_did_not_make_is_listed_as_not_managed(platform: PlatformView, target: Target) -> None:
    foreign = platform.foreign_image()
    records, _ = open_store(target.name).inventory()
    (record,) = [r for r in records if r.image_id == foreign]
    assert record.managed is False


# --- test instances ----------------------------------------------------------------------------------------


def test_launch_makes_one_instance_of_the_run_and_teardown_removes_it(
    platform: PlatformView, target: Target, image: Image, launch: Any
) -> None:
    launched = launch(image)
    instance = launched.instance
    assert (instance.target, instance.image_id, instance.run_id) == (target.name, image.id, launched.run.run_id)
    assert platform.instances_of(launched.run.run_id) == [instance.id]

    target.teardown(instance)
    assert platform.instances_of(launched.run.run_id) == []
    target.teardown(instance)  # already gone is fine


def test_an_image_in_use_by_a_test_instance_shows_in_retentions_usage(
    target: Target, image: Image, launch: Any
) -> None:
    launched = launch(image)
    _, usage = record_of(target.name, image)
    assert usage.get(image.id), "retention does not see the running test instance using the image"
    target.teardown(launched.instance)
    _, usage = record_of(target.name, image)
    assert not usage.get(image.id)


def test_retention_deletes_an_image_once_and_then_finds_it_gone(
    platform: PlatformView, target: Target, image: Image
) -> None:
    record, _ = record_of(target.name, image)
    assert record is not None
    store = open_store(target.name)
    assert store.recheck([record]) == {record.ref: []}  # nothing holds it
    assert store.delete_image(record) == "deleted"
    for snapshot in record.snapshots:
        assert store.delete_snapshot(snapshot) == "deleted"
    assert not platform.exists(image)
    assert record_of(target.name, image)[0] is None
    assert store.delete_image(record) == "already gone"


# --- leftovers for the sweep -------------------------------------------------------------------------------


def test_the_sweep_never_lists_what_bakery_did_not_make(platform: PlatformView, target: Target) -> None:
    foreign = platform.foreign_instance()
    rules = Rules(now=datetime.now(UTC) + timedelta(days=30), max_age=timedelta(0))  # every age rule met
    found = [decide(item, rules) for source in open_sources(target.name) for item in source.find()]
    assert foreign not in {item.id for item in found}


def test_the_sweep_sees_a_live_run_and_keeps_it_until_it_expires(
    platform: PlatformView, target: Target, image: Image, launch: Any
) -> None:
    launched = launch(image, timedelta(hours=1))
    found = leftovers_of(target.name, launched.run.run_id)
    assert set(platform.instances_of(launched.run.run_id)) <= {item.id for item in found}
    assert found and not [item for item in found if item.remove], [item.reason for item in found]
    assert all(item.expires_at is not None for item in found if item.labelled)

    later = leftovers_of(target.name, launched.run.run_id, now=launched.run.expires_at + timedelta(minutes=1))
    assert later and all(item.remove for item in later), [(item.kind, item.reason) for item in later]


def test_the_sweep_removes_an_expired_runs_leftovers(
    platform: PlatformView, target: Target, image: Image, launch: Any
) -> None:
    launched = launch(image, timedelta(seconds=-60))  # a run that crashed and expired a minute ago
    run_id = launched.run.run_id
    found = leftovers_of(target.name, run_id)
    assert set(platform.instances_of(run_id)) <= {item.id for item in found}
    assert found and all(item.remove for item in found), [(item.kind, item.reason) for item in found]

    results: dict[str, str] = {}
    for source in open_sources(target.name):
        mine = [item for item in found if item.provider == source.provider]
        if mine:
            results.update(source.remove(mine))
    assert results and set(results.values()) <= {"removed", "already gone"}, results
    assert platform.instances_of(run_id) == []
    assert [item for item in leftovers_of(target.name, run_id) if item.kind in ("container", "instance")] == []

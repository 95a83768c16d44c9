"""Testing an image never changes a stage it has earned (issue 11, item 2).

`bake test --image <a production or superseded image>` used to rewrite its stage to ``staging`` on a pass
and ``failed`` on a failure: the family lost its production (the seed's Terraform lookup then returns
nothing) or its rollback target. Now only a ``testing`` (or stage-less) image moves; any other stage
stays, and the result is recorded beside the image (AWS: ``bakery:last-tested``/``bakery:last-result``
tags on the AMI and its snapshots; Docker: the family's promotion record), read back from the engine and
the EC2 API themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from tasks.targets.aws.instances import AwsTarget
from tasks.targets.base import Image
from tasks.targets.docker.instances import DockerTarget
from tasks.targets.docker.stages import FamilyRecord
from tests.aws_seam import (
    FAILING_SPEC,
    FIXTURE,
    PASSING_SPEC,
    ec2,  # noqa: F401  (fixture)
    image_and_snapshot_tags,
    join_seam,
    own_images,
    sshd_container,  # noqa: F401  (fixture)
    stages_of,
    version,
)
from tests.e2e.conftest import REPO, Bake
from tests.reliability.conftest import AwsLeaks, Baked, Leaks
from tests.support import remove_images_of

pytestmark = pytest.mark.e2e
TARGET = "docker, aws"

FAILING_DOCKER_SPEC = "package:\n  no-such-package-at-all:\n    installed: true\n"


@pytest.fixture
def earned_family(engine: docker.DockerClient, built_image: str) -> Iterator[tuple[str, str]]:
    """A family of its own with one image (a commit of the suite's built image: same layers, a new id)."""
    family = f"slots-earned-{uuid.uuid4().hex[:6]}"
    container = engine.containers.create(built_image, command=["true"])
    try:
        container.commit(repository=family, tag="1.0")
    finally:
        container.remove(force=True)
    yield family, f"{family}:1.0"
    remove_images_of(engine, family)


def docker_image(engine: docker.DockerClient, reference: str) -> Image:
    return DockerTarget(engine).image(reference)


@dataclass(frozen=True)
class Earned:
    stage: str
    description: str  # the report's scenario line (tests/reliability/conftest.py)

    def __str__(self) -> str:
        return self.stage


EARNED = [
    Earned(
        "production",
        "Docker: `bake test` of the production image, passing then failing: it stays production (tags and "
        "record), the result is recorded beside it",
    ),
    Earned(
        "superseded",
        "Docker: `bake test` of a superseded image (the rollback target), passing then failing: it stays "
        "superseded, the result is recorded beside it",
    ),
]


@pytest.mark.parametrize("earned", EARNED, ids=str)
def test_docker_testing_an_earned_image_keeps_its_stage(
    earned: Earned,
    session_bake: Bake,
    state_dir: Path,
    engine: docker.DockerClient,
    earned_family: tuple[str, str],
    leaks: Leaks,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Docker: `bake test` of a production/superseded image, passing then failing: the stage stays, the
    pointer tags stay, the result is recorded in the family's record."""
    monkeypatch.setenv("BAKERY_STATE_DIR", str(state_dir))
    stage = earned.stage
    family, reference = earned_family
    leaks.watch(family)
    image = docker_image(engine, reference)
    DockerTarget(engine).set_stage(image, stage, "earlier-run")
    pointer = f"{family}:{stage}"
    assert engine.images.get(pointer).id == image.id

    passed = session_bake("--json", "test", "--image", reference)
    assert passed.returncode == 0, passed.stderr[-3000:]
    assert '"stage": "' + stage + '"' in passed.stdout
    entry = FamilyRecord(family).read()["images"][image.id]
    assert (entry["stage"], entry["last_result"]) == (stage, "passed")
    assert engine.images.get(pointer).id == image.id
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(f"{family}:staging")

    spec = tmp_path / "failing.yaml"
    spec.write_text(FAILING_DOCKER_SPEC)
    failed = session_bake("test", "--image", reference, "--spec", str(spec))
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "no-such-package-at-all" in failed.stderr.strip().splitlines()[-1]
    entry = FamilyRecord(family).read()["images"][image.id]
    assert (entry["stage"], entry["last_result"]) == (stage, "failed")
    assert engine.images.get(pointer).id == image.id
    leaks.assert_none()


def test_docker_testing_a_testing_image_still_stages_it(
    session_bake: Bake,
    state_dir: Path,
    engine: docker.DockerClient,
    earned_family: tuple[str, str],
    leaks: Leaks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Docker control: an image at `testing` still becomes `staging` when its test passes."""
    monkeypatch.setenv("BAKERY_STATE_DIR", str(state_dir))
    family, reference = earned_family
    leaks.watch(family)
    image = docker_image(engine, reference)
    DockerTarget(engine).set_stage(image, "testing", "earlier-run")

    passed = session_bake("test", "--image", reference)
    assert passed.returncode == 0, passed.stderr[-3000:]
    assert engine.images.get(f"{family}:staging").id == image.id
    assert FamilyRecord(family).read()["images"][image.id]["stage"] == "staging"
    leaks.assert_none()


def test_aws_testing_the_production_ami_keeps_its_stage(
    aws_bake: Callable[..., Baked],
    aws_leaks: AwsLeaks,
    ec2: Any,  # noqa: F811
    sshd_container: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """AWS: `bake test` of the production AMI, passing then failing: `status` stays production on the AMI
    and its snapshots, `bakery:last-result` says passed/failed, the seed's lookup still finds it."""
    built = aws_bake("build", "--target", "aws", "--template-dir", str(REPO / FIXTURE), "--version", version())
    assert built.code == 0, built.err[-3000:]
    (ami,) = own_images(ec2)
    target = AwsTarget(ec2=ec2)
    target.set_stage(target.image(ami), "production", "earlier-run")
    join_seam(monkeypatch, sshd_container, ec2)

    for spec_text, code, result in ((PASSING_SPEC, 0, "passed"), (FAILING_SPEC, 1, "failed")):
        spec = tmp_path / f"{result}.yaml"
        spec.write_text(spec_text)
        baked = aws_bake("test", "--target", "aws", "--image", ami, "--spec", spec, "--ssh-timeout", "60s")
        assert baked.code == code, baked.err[-4000:]
        assert set(stages_of(ec2, ami)) == {"production"}, "the AMI and each of its snapshots"
        tags, snapshots = image_and_snapshot_tags(ec2, ami)
        for where in (tags, *snapshots):
            assert where["bakery:last-result"] == result
            assert where["bakery:last-tested"]
        assert tags["bakery:run-id"] == "earlier-run", "the stage's own run id is left as it was"
        found = ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:status", "Values": ["production"]}])[
            "Images"
        ]
        assert [i["ImageId"] for i in found] == [ami]
    aws_leaks.assert_none()

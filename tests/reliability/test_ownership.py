"""Retention touches only what bakery owns: images built FROM a bakery image (which inherit its labels) are
not a family bakery built; an image promoted or launched after the plan was made is skipped.

The engine is shared with other users, so the scenario without ``--family`` is a dry run: its plan is
exactly what ``--apply`` would carry out (the same function), and a deletion of the child family is only
made once it is named.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Iterator

import docker
import pytest

from tests.e2e.conftest import Bake

pytestmark = pytest.mark.e2e
TARGET = "docker"


def build_from(engine: docker.DockerClient, parent: str, tag: str, labels: str = "") -> str:
    dockerfile = f"FROM {parent}\n{labels}\nLABEL team.note={tag.replace(':', '-')}\n"
    image, _ = engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, pull=False)
    return str(image.id)


@pytest.fixture
def child_family(engine: docker.DockerClient, built_image: str) -> Iterator[str]:
    """A team's ``<child>:1`` and ``:2``, built FROM the bakery image (labels name/managed-by inherited)."""
    family = f"own-child-{uuid.uuid4().hex[:6]}"
    for version in ("1", "2"):
        build_from(engine, built_image, f"{family}:{version}")
    yield family
    for version in ("1", "2"):
        with contextlib.suppress(docker.errors.APIError):
            engine.images.remove(f"{family}:{version}")


def test_images_built_from_a_bakery_image_are_not_its_family(
    session_bake: Bake, child_family: str, engine: docker.DockerClient
) -> None:
    """`myapp:1`, `myapp:2` FROM a bakery image: retention without --family leaves them alone (skip, not
    built by bakery); named with --family they are covered like any family."""
    assert engine.images.get(f"{child_family}:1").labels["name"] != child_family  # inherited from the parent
    result = session_bake("--json", "retention", "--target", "docker", "--keep", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["image"]: r for r in json.loads(result.stdout)["images"]}
    for version in ("1", "2"):
        row = rows[f"{child_family}:{version}"]
        assert row["decision"] == "skip", row
        assert f"only with --family {child_family}" in row["reason"]
    named = session_bake("--json", "retention", "--target", "docker", "--family", child_family, "--keep", "1")
    assert named.returncode == 0, named.stderr[-3000:]
    planned = {r["image"]: r["decision"] for r in json.loads(named.stdout)["images"]}
    assert planned == {f"{child_family}:2": "keep", f"{child_family}:1": "delete"}


def test_image_promoted_or_launched_after_the_plan_is_skipped(engine: docker.DockerClient, base_image: str) -> None:
    """Plan: delete v1 and v2 of a family; then v1 gets a container and v2 the production tag: neither is
    removed, each with its reason."""
    from tasks import retention
    from tasks.targets.docker.images import DockerImages

    family = f"own-late-{uuid.uuid4().hex[:6]}"
    bakery_labels = f"LABEL managed-by=packer name={family}"
    tags = [f"{family}:{v}" for v in ("1", "2", "3")]
    container = None
    try:
        for tag in tags:
            build_from(engine, base_image, tag, bakery_labels)
        store = DockerImages(engine)
        images, usage = store.inventory()
        plan = retention.plan_retention(images, usage, keep=1, families=[family])
        assert {d.image.ref for d in plan.deletions} == {tags[0], tags[1]}
        container = engine.containers.create(tags[0], command=["true"], labels={"bakery.test": family})
        engine.images.get(tags[1]).tag(family, "production")
        outcome = retention.execute(plan, store)
        assert outcome.images[tags[0]].startswith("kept: in use since the plan: container ")
        assert outcome.images[tags[1]] == "kept: stage changed since the plan: now production"
        assert all(engine.images.get(tag) for tag in tags)
    finally:
        if container is not None:
            container.remove(force=True)
        for tag in [*tags, f"{family}:production"]:
            with contextlib.suppress(docker.errors.APIError):
                engine.images.remove(tag)


def test_test_container_is_confined(engine: docker.DockerClient, base_image: str) -> None:
    """The test container's settings: private cgroup namespace (v1: the host tree read-only, never writable),
    no-new-privileges, memory and pids limits; a write to the cgroup tree fails inside."""
    from tasks.targets.docker.instances import container_limits

    version = str(engine.info().get("CgroupVersion", "1"))
    options = container_limits(version)
    script = "cat /proc/self/cgroup; echo $$ > /sys/fs/cgroup/pids/tasks && echo WROTE || echo REFUSED"
    container = engine.containers.run(
        base_image, ["sh", "-c", script], detach=True, labels={"bakery.test": "confined"}, **options
    )
    try:
        container.wait(timeout=60)
        output = container.logs().decode()
        config = engine.api.inspect_container(container.id)["HostConfig"]
    finally:
        container.remove(force=True)
    assert "no-new-privileges" in (config.get("SecurityOpt") or [])
    assert config["Memory"] > 0 and config["PidsLimit"] > 0
    if version == "1":
        assert config["CgroupnsMode"] == "private"
        assert "REFUSED" in output and "WROTE" not in output
        assert "/docker/" not in output  # its own namespace: it does not see where it sits on the host

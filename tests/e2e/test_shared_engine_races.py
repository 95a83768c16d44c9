"""On an engine shared with other workers and tools, something may be removed between bakery listing it and
inspecting it (another worker's retention, a sweep, Packer removing its build container, a person). A
listing must then go on with what is still there.

The other party is played at the inspect seam: the first inspect finds its object already removed (for
real, on the engine) — the window a concurrent remover hits.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from tasks.targets.base import Image, Run
from tasks.targets.docker.instances import DockerTarget
from tasks.targets.docker.stages import DockerStages
from tests.support import LABEL_FAMILY, containers_of, new_family, remove_family

pytestmark = pytest.mark.e2e

BASE = "bakery/debian:bookworm"


@pytest.fixture
def family(engine: docker.DockerClient) -> Iterator[str]:
    name = new_family("bakery-race")
    yield name
    remove_family(engine, name)


def removed_before_first_inspect(
    engine: docker.DockerClient, monkeypatch: pytest.MonkeyPatch, method: str, remove: Callable[[str], Any]
) -> list[str]:
    """Make the first ``engine.api.<method>`` call find its object removed by someone else; the ids removed."""
    real = getattr(engine.api, method)
    removed: list[str] = []

    def inspect(resource_id: str, *args: Any, **kwargs: Any) -> Any:
        if not removed:
            removed.append(resource_id)
            remove(resource_id)
        return real(resource_id, *args, **kwargs)

    monkeypatch.setattr(engine.api, method, inspect)
    return removed


def test_listing_a_familys_images_skips_one_removed_meanwhile(
    engine: docker.DockerClient, family: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ids = {}
    for version in ("1.0", "1.1", "1.2"):
        dockerfile = f'FROM {BASE}\nLABEL version="{version}"\n'
        image, _ = engine.images.build(
            fileobj=io.BytesIO(dockerfile.encode()), tag=f"{family}:{version}", pull=False, rm=True, forcerm=True
        )
        ids[version] = image.id
    removed = removed_before_first_inspect(
        engine, monkeypatch, "inspect_image", lambda image_id: engine.api.remove_image(image_id, force=True)
    )

    listed = DockerStages(engine, records=tmp_path).family_images(family)

    assert len(removed) == 1
    assert sorted(i.id for i in listed) == sorted(set(ids.values()) - set(removed))


def test_tearing_down_a_run_removes_its_containers_when_one_is_already_gone(
    engine: docker.DockerClient, family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = f"race-{uuid.uuid4().hex[:8]}"
    labels = {LABEL_FAMILY: family, "bakery.run-id": run_id}
    for _ in range(3):
        engine.containers.create(BASE, command=["true"], labels=labels)
    removed_before_first_inspect(
        engine,
        monkeypatch,
        "inspect_container",
        lambda container_id: engine.api.remove_container(container_id, force=True),
    )

    DockerTarget(engine).teardown_run(run_id)

    monkeypatch.undo()
    assert containers_of(engine, run_id=run_id) == []


def test_a_test_container_of_an_image_removed_meanwhile_is_image_not_found_and_nothing_is_made(
    engine: docker.DockerClient, family: str, tmp_path: Path
) -> None:
    """What launch's second pull relies on: creating the container of a missing image says ImageNotFound
    (``containers.run`` would first try to pull ``sha256:…`` from Docker Hub) and leaves no container."""
    run = Run(f"race-{uuid.uuid4().hex[:8]}", family, tmp_path, datetime.now(UTC), tmp_path / "key", "")
    image = Image("docker", "sha256:" + "0" * 64, family, "1.0", f"{family}:1.0", datetime.now(UTC))
    with pytest.raises(docker.errors.ImageNotFound):
        DockerTarget(engine)._create(image.id, image, run)
    assert containers_of(engine, run_id=run.run_id) == []

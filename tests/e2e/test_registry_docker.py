"""`--registry`: a build pushed to a real registry, tested from its digest, staged and promoted there.

The registry is Debian's docker-registry on 127.0.0.1 (tests/registry_server.py); the engine pushes to
it without any daemon change (127.0.0.0/8 registries are insecure-allowed).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tasks.targets.base import Image
from tasks.targets.docker.image_registry import RegistryClient, parse_registry
from tasks.targets.docker.registry_stages import RegistryStages
from tests.e2e.conftest import Bake
from tests.support import containers_of

pytestmark = pytest.mark.e2e


@pytest.fixture
def family(engine: docker.DockerClient) -> Iterator[str]:
    """A family of this test only; every local image of it is removed afterwards."""
    name = f"registry-{uuid.uuid4().hex[:6]}"
    yield name
    for image in engine.images.list():
        if any(name in reference for reference in (image.tags or []) + (image.attrs.get("RepoDigests") or [])):
            with contextlib.suppress(docker.errors.APIError):
                engine.images.remove(image.id, force=True)


def local_images_of(engine: docker.DockerClient, family: str) -> list[str]:
    return [
        reference
        for image in engine.images.list()
        for reference in (image.tags or []) + (image.attrs.get("RepoDigests") or [])
        if family in reference
    ]


def test_a_build_is_pushed_tested_from_its_digest_and_promoted_from_the_registry_alone(
    bake: Bake, engine: docker.DockerClient, registry_host: str, family: str, tmp_path: Path
) -> None:
    registry = f"{registry_host}/bakery"
    repository = f"bakery/{family}"
    client = RegistryClient(parse_registry(registry))

    built = bake(
        "--json", "run", "--family", family, "--version", "1.0", "--ssh-timeout", "90s", "--registry", registry,
        timeout=900,
    )  # fmt: skip

    assert built.returncode == 0, built.stderr[-4000:]
    summary = json.loads(built.stdout)
    digest = summary["image_id"]
    assert digest.startswith("sha256:") and summary["stage"] == "staging"
    assert client.digest_of(repository, "1.0") == digest  # pushed
    assert client.digest_of(repository, "staging") == digest  # staged by digest, in the registry
    assert client.digest_of(repository, "production") is None
    assert containers_of(engine, family=family) == []
    # the registry keeps the image: this worker's copy (the build's tag, the pull by digest) went with the run
    assert local_images_of(engine, family) == []
    assert f"removed this machine's copy of {family}:1.0 (the registry keeps it)" in built.stderr
    record = RegistryStages(parse_registry(registry)).read_record(family)
    assert record["images"][digest]["stage"] == "staging" and record["images"][digest]["staged_at"]
    assert [(entry["image"], entry["stage"]) for entry in record["history"]] == [
        (digest, "testing"),
        (digest, "staging"),
    ]

    # another machine: no image of the family in its engine, its own state directory
    elsewhere = Bake(bake.api_url, tmp_path / "other-machine")

    promoted = elsewhere(
        "--json", "promote", "--family", family, "--to", "production", "--force", "--registry", registry
    )

    assert promoted.returncode == 0, promoted.stderr[-4000:]
    record_of_promotion = json.loads(promoted.stdout)
    assert (record_of_promotion["name"], record_of_promotion["production"]) == (f"{family}:1.0", digest)
    assert client.digest_of(repository, "production") == digest
    assert client.digest_of(repository, "latest") == digest
    assert local_images_of(engine, family) == []  # nothing was pulled to promote
    history = RegistryStages(parse_registry(registry)).read_record(family)["history"]
    assert [entry["stage"] for entry in history][-1] == "production"
    assert history[-1]["image"] == digest

    unknown = elsewhere("promote", "--image", f"{family}:9.9", "--to", "production", "--registry", registry)
    assert unknown.returncode == 2, unknown.stderr[-2000:]
    assert f"--image '{family}:9.9': no such tag in registry {registry}" in unknown.stderr

    # that machine tests the production image from the registry: pulled by digest, its stage stays
    tested = elsewhere("--json", "test", "--image", f"{family}:1.0", "--ssh-timeout", "90s", "--registry", registry)
    assert tested.returncode == 0, tested.stderr[-4000:]
    assert json.loads(tested.stdout)["image_id"] == digest
    # the test container was started from the pushed digest (pulled by it), and the pull went afterwards
    assert (
        f"removed this machine's copy of {family}:1.0 (the registry keeps it): {registry_host}/{repository}@{digest}"
        in tested.stderr
    )
    assert local_images_of(engine, family) == []
    assert client.digest_of(repository, "production") == digest
    assert RegistryStages(parse_registry(registry)).read_record(family)["images"][digest]["last_result"] == "passed"

    # retention in the registry keeps its production image
    kept = elsewhere("--json", "retention", "--family", family, "--keep", "1", "--registry", registry)
    assert kept.returncode == 0, kept.stderr[-4000:]
    (row,) = json.loads(kept.stdout)["images"]
    assert row["image"] == f"{family}:1.0" and row["decision"] == "keep" and "status production" in row["reason"]


def test_a_failed_push_is_one_line_and_leaves_no_stage(
    engine: docker.DockerClient, base_image: str, family: str, tmp_path: Path
) -> None:
    from tasks.targets.docker.image_registry import RegistryError
    from tasks.targets.docker.instances import DockerTarget
    from tests.registry_server import free_port

    container = engine.containers.create(base_image, command=["true"])
    try:
        container.commit(repository=family, tag="1.0", changes=["LABEL managed-by=bakery", f"LABEL name={family}"])
    finally:
        container.remove(force=True)
    registry = parse_registry(f"127.0.0.1:{free_port()}")  # nothing listens there
    target = DockerTarget(engine, registry=registry)
    image = target._image(engine.images.get(f"{family}:1.0"), family, "1.0")

    with pytest.raises(RegistryError) as raised:
        target.push(image, "run-1")

    assert str(raised.value).startswith(f"registry {registry}: pushing {family}:1.0: ")
    assert "\n" not in str(raised.value)
    assert all(not tag.startswith(registry.host) for tag in engine.images.get(f"{family}:1.0").tags)


def test_a_copy_a_container_uses_stays_and_goes_once_it_is_free(
    engine: docker.DockerClient, base_image: str, registry_host: str, family: str
) -> None:
    """``DockerTarget.release`` against the real engine and registry: a kept failed instance (any container)
    keeps its image and every name of it; without one both names go; a build this target pushed but never
    pulled goes; a same-named local build (bakery's labels, another digest, a local stage tag) is never
    touched, and without a registry nothing goes."""
    from tasks.targets.docker.instances import DockerTarget

    target = DockerTarget(engine, registry=parse_registry(registry_host))

    def build(tags: tuple[str, ...] = ("1.0",)) -> str:
        container = engine.containers.create(base_image, command=["true"])
        changes = ["LABEL managed-by=bakery", f"LABEL name={family}", "LABEL version=1.0"]
        try:
            image_id = str(container.commit(repository=family, tag=tags[0], changes=changes).id)
        finally:
            container.remove(force=True)
        for tag in tags[1:]:
            engine.images.get(image_id).tag(family, tag)
        return image_id

    def push() -> Image:
        return target.push(target._image(engine.images.get(f"{family}:1.0"), family, "1.0"), "run-1")

    build()
    pushed = push()
    local_id = target.pull(pushed)
    assert DockerTarget(engine).release(pushed) == []  # no registry: the engine is where images live
    user = engine.containers.create(local_id, command=["true"])
    try:
        assert target.release(pushed) == []
        assert engine.images.get(f"{family}:1.0").id == local_id
    finally:
        user.remove(force=True)
    assert target.release(pushed) == [f"{family}:1.0", f"{registry_host}/{family}@{pushed.id}"]
    assert local_images_of(engine, family) == []

    build()
    built_only = push()  # bake build: pushed by this target, never pulled
    assert target.release(built_only) == [f"{family}:1.0"]
    assert local_images_of(engine, family) == []

    local = build(("1.0", "production"))  # a local-mode build of the same name, promoted on this engine
    elsewhere = DockerTarget(engine, registry=parse_registry(registry_host))  # `bake test` of the pushed one
    assert elsewhere.release(pushed) == [] and target.release(built_only) == []
    assert engine.images.get(f"{family}:1.0").id == local
    assert engine.images.get(f"{family}:production").id == local

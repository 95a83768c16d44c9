"""Retention on the local Docker engine: the same rules on ``<family>:<version>`` images.

Images are built from the local base image with a label-only Dockerfile (never pulled). The family name
is unique per test, so nobody else's images are in scope; everything made here is removed afterwards.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator

import docker
import docker.errors
import pytest

from tests.e2e.conftest import Bake

pytestmark = pytest.mark.e2e

BASE = "bakery/debian:bookworm"
TEST_LABEL = "bakery-test.retention"


@pytest.fixture
def family(engine: docker.DockerClient) -> Iterator[str]:
    name = f"bakery-rt-{uuid.uuid4().hex[:8]}"
    yield name
    for container in engine.containers.list(all=True, filters={"label": f"{TEST_LABEL}={name}"}, ignore_removed=True):
        container.remove(force=True)
    for image in engine.images.list(name=name):
        for tag in image.tags:
            engine.images.remove(tag, force=True)


def build(engine: docker.DockerClient, family: str, version: str, managed: bool = True) -> str:
    labels = f'{TEST_LABEL}="{family}" version="{version}"' + (' managed-by="packer"' if managed else "")
    dockerfile = f"FROM {BASE}\nLABEL {labels}\n"
    image, _ = engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{family}:{version}", pull=False)
    return str(image.id)


def test_docker_retention_keeps_stages_and_used_images(engine: docker.DockerClient, bake: Bake, family: str) -> None:
    ids = {}
    ids["0.9"] = build(engine, family, "0.9", managed=False)
    for version in ("1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "1.7"):
        ids[version] = build(engine, family, version)
    engine.images.get(f"{family}:1.1").tag(family, "production")
    engine.images.get(f"{family}:1.1").tag(family, "latest")
    engine.images.get(f"{family}:1.2").tag(family, "superseded")
    engine.images.get(f"{family}:1.6").tag(family, "staging")
    engine.containers.create(f"{family}:1.3", command=["true"], labels={TEST_LABEL: family})  # stopped, still uses it

    dry = bake("--json", "retention", "--target", "docker", "--family", family, "--keep", "2")
    assert dry.returncode == 0, dry.stderr[-3000:]
    plan = {row["image"]: (row["decision"], row["reason"]) for row in json.loads(dry.stdout)["images"]}
    f = family
    assert plan == {
        f"{f}:1.7": ("keep", "newest 2 (#1)"),
        f"{f}:1.6": ("keep", "newest 2 (#2); current staging image"),
        f"{f}:1.5": ("delete", plan[f"{f}:1.5"][1]),
        f"{f}:1.4": ("delete", plan[f"{f}:1.4"][1]),
        f"{f}:1.3": ("keep", plan[f"{f}:1.3"][1]),
        f"{f}:1.2": ("keep", "rollback target (newest superseded)"),
        f"{f}:1.1": ("keep", "status production"),
        f"{f}:0.9": ("skip", "not managed by bakery (no ManagedBy)"),
    }
    assert plan[f"{f}:1.3"][1].startswith("in use: container ") and plan[f"{f}:1.3"][1].endswith("(created)")
    assert {t for i in engine.images.list(name=family) for t in i.tags} >= {f"{f}:{v}" for v in ids}

    applied = bake("retention", "--target", "docker", "--family", family, "--keep", "2", "--apply")
    assert applied.returncode == 0, applied.stderr[-3000:]
    assert (
        f"{f}: 7 images, keep 5 (newest 2, production 1, staging 1, rollback 1, in use 1), delete 2" in applied.stdout
    )
    assert "deleted 2/2 images" in applied.stdout
    left = {t for i in engine.images.list(name=family) for t in i.tags}
    assert left == {
        f"{f}:{t}" for t in ("0.9", "1.1", "production", "latest", "1.2", "superseded", "1.3", "1.6", "staging", "1.7")
    }
    for version in ("1.4", "1.5"):
        with pytest.raises(docker.errors.ImageNotFound):
            engine.images.get(ids[version])

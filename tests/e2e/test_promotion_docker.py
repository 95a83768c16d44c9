"""Promotion, soak and rollback of Docker images on the real engine, through `bake` as a user runs it."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import docker.errors
import pytest

from tasks import promotion
from tasks.targets.base import Image
from tasks.targets.docker.instances import DockerTarget
from tasks.targets.docker.stages import DockerStages, FamilyRecord
from tests.e2e.conftest import Bake
from tests.prefect_api import prefect_api

pytestmark = pytest.mark.e2e


def tag_id(engine: docker.DockerClient, reference: str) -> str | None:
    try:
        return str(engine.images.get(reference).id)
    except docker.errors.ImageNotFound:
        return None


@pytest.fixture
def family(engine: docker.DockerClient, base_image: str) -> Iterator[str]:
    name = f"promo-{uuid.uuid4().hex[:8]}"
    yield name
    for image in engine.images.list(name=name):
        for tag in image.tags:
            if tag.startswith(f"{name}:"):
                engine.api.remove_image(tag, force=True)


@pytest.fixture
def state(bake: Bake, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process and the `bake` subprocesses share one state dir (the promotion record)."""
    monkeypatch.setenv("BAKERY_STATE_DIR", str(bake.state_dir))
    return bake.state_dir


def make_image(engine: docker.DockerClient, base_image: str, family: str, version: str) -> Image:
    """A distinct image id quickly: a committed container with a label, tagged <family>:<version>."""
    container = engine.containers.create(base_image, command=["true"], labels={"bakery.family": family})
    try:
        committed = container.commit(repository=family, tag=version, conf={"Labels": {"version": version}})
    finally:
        container.remove(force=True)
    return Image(target="docker", id=committed.id, family=family, version=version, name=f"{family}:{version}")


def stage(engine: docker.DockerClient, image: Image, stage: str, ago: timedelta = timedelta(0)) -> None:
    """Stage as the pipeline does (DockerTarget.set_stage), then back-date the record's staged-at."""
    DockerTarget(engine).set_stage(image, stage, "test-run")
    if ago:
        with FamilyRecord(image.family).update() as data:
            data["images"][image.id]["staged_at"] = promotion.iso(datetime.now(UTC) - ago)


def test_soak_not_met_exits_1_and_changes_nothing(
    bake: Bake, state: Path, engine: docker.DockerClient, base_image: str, family: str
) -> None:
    old = make_image(engine, base_image, family, "1.0")
    stage(engine, old, "staging", ago=timedelta(days=3))
    first = bake("promote", "--family", family, "--to", "production")
    assert first.returncode == 0, first.stderr[-2000:]
    new = make_image(engine, base_image, family, "2.0")
    stage(engine, new, "staging", ago=timedelta(hours=2))
    record_before = (state / "docker" / f"{family}.json").read_text()

    result = bake("promote", "--family", family, "--to", "production")

    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "soak not met" in last and f"{family}:2.0" in last and "needs 1d 0h 0m" in last
    assert "Traceback" not in result.stderr
    assert tag_id(engine, f"{family}:production") == old.id
    assert tag_id(engine, f"{family}:latest") == old.id
    assert tag_id(engine, f"{family}:staging") == new.id
    assert (state / "docker" / f"{family}.json").read_text() == record_before


def test_promote_supersedes_and_rollback_restores(
    bake: Bake, state: Path, engine: docker.DockerClient, base_image: str, family: str, prefect_api_url: str
) -> None:
    v1 = make_image(engine, base_image, family, "1.0")
    stage(engine, v1, "staging", ago=timedelta(days=2))
    assert bake("promote", "--image", f"{family}:1.0", "--to", "production").returncode == 0
    v2 = make_image(engine, base_image, family, "2.0")
    stage(engine, v2, "staging", ago=timedelta(days=1, minutes=1))

    promoted = bake("--json", "promote", "--family", family, "--to", "production")

    assert promoted.returncode == 0, promoted.stderr[-2000:]
    record = json.loads(promoted.stdout)
    assert record["image"] == v2.id and record["previous_production"] == f"{family}:1.0"
    assert [(c["name"], c["before"], c["after"]) for c in record["changes"]] == [
        (f"{family}:1.0", "production", "superseded"),
        (f"{family}:2.0", "staging", "production"),
    ]
    assert tag_id(engine, f"{family}:production") == v2.id
    assert tag_id(engine, f"{family}:latest") == v2.id
    assert tag_id(engine, f"{family}:superseded") == v1.id
    assert tag_id(engine, f"{family}:staging") is None  # the staging pointer left with the image
    stages = {i.version: i.stage for i in DockerStages(engine).family_images(family)}
    assert stages == {"1.0": "superseded", "2.0": "production"}
    saved = json.loads((state / "docker" / f"{family}.json").read_text())
    assert saved["images"][v2.id]["promoted_at"] and saved["images"][v2.id]["run_id"] == record["run_id"]
    assert saved["images"][v1.id]["superseded_at"]

    back = bake("--json", "rollback", "--family", family)

    assert back.returncode == 0, back.stderr[-2000:]
    assert json.loads(back.stdout)["image"] == v1.id
    assert tag_id(engine, f"{family}:production") == v1.id
    assert tag_id(engine, f"{family}:latest") == v1.id
    assert tag_id(engine, f"{family}:superseded") == v2.id
    stages = {i.version: i.stage for i in DockerStages(engine).family_images(family)}
    assert stages == {"1.0": "production", "2.0": "superseded"}
    key = f"{family}-docker-promotion"  # the promotion record a person reads in the UI
    with prefect_api(prefect_api_url) as api:
        found = api.post("/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}}).json()
    texts = [a["data"] for a in found]
    assert any("# Rollback" in t and f"{family}:1.0" in t for t in texts), texts
    assert any("# Promotion to production" in t and "| superseded |" in t for t in texts), texts


def test_force_overrides_the_soak_and_is_recorded(
    bake: Bake, state: Path, engine: docker.DockerClient, base_image: str, family: str
) -> None:
    image = make_image(engine, base_image, family, "1.0")
    stage(engine, image, "staging")
    result = bake("--json", "promote", "--family", family, "--to", "production", "--force")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["forced"] is True
    assert tag_id(engine, f"{family}:production") == image.id
    assert json.loads((state / "docker" / f"{family}.json").read_text())["images"][image.id]["forced"] is True


def test_to_staging_then_rollback_without_history_fails(
    bake: Bake, state: Path, engine: docker.DockerClient, base_image: str, family: str
) -> None:
    image = make_image(engine, base_image, family, "1.0")
    DockerTarget(engine).set_stage(image, "testing", "test-run")
    staged = bake("promote", "--image", image.id, "--to", "staging")
    assert staged.returncode == 0, staged.stderr[-2000:]
    assert tag_id(engine, f"{family}:staging") == image.id
    nothing = bake("rollback", "--family", family)
    assert nothing.returncode == 1
    assert "no superseded image to roll back to" in nothing.stderr.strip().splitlines()[-1]
    unknown = bake("promote", "--image", f"{family}:9.9", "--to", "production")
    assert unknown.returncode == 2 and f"--image '{family}:9.9': no such image" in unknown.stderr


def test_racing_promotions_leave_exactly_one_production(
    state: Path, engine: docker.DockerClient, base_image: str, family: str
) -> None:
    images = [make_image(engine, base_image, family, f"{n}.0") for n in range(1, 5)]
    stage(engine, images[0], "staging", ago=timedelta(days=5))
    promotion.promote(DockerStages(engine), to="production", run_id="r0", family=family)
    for image in images[1:]:
        stage(engine, image, "staging", ago=timedelta(days=2))
    errors: list[BaseException] = []

    def promote(image: Image) -> None:
        try:
            promotion.promote(DockerStages(engine), to="production", run_id=image.version, image=image.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(image,)) for image in images[1:]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    stages = [i.stage for i in DockerStages(engine).family_images(family)]
    assert stages.count("production") == 1 and stages.count("superseded") == 3
    record = json.loads((state / "docker" / f"{family}.json").read_text())
    assert [e["stage"] for e in record["images"].values()].count("production") == 1

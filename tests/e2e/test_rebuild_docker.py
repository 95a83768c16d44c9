"""`bake rebuild` on the Docker target: a real packer build per family, compared with the current production."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import pytest

from tasks import promotion
from tasks.targets.docker.stages import DockerStages, FamilyRecord
from tests.e2e.conftest import REPO, Bake
from tests.prefect_api import prefect_api

pytestmark = pytest.mark.e2e


@pytest.fixture
def family(engine: docker.DockerClient) -> Iterator[str]:
    name = f"rebuild-{uuid.uuid4().hex[:6]}"
    yield name
    for image in engine.images.list(name=name):
        for tag in image.tags:
            if tag.startswith(f"{name}:"):
                engine.api.remove_image(tag, force=True)


def test_rebuild_stages_a_new_image_and_summarises_it_against_production(
    bake: Bake,
    engine: docker.DockerClient,
    base_image: str,
    family: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefect_api_url: str,
) -> None:
    monkeypatch.setenv("BAKERY_STATE_DIR", str(bake.state_dir))
    # the current production: the bare base image, committed as <family>:0.1 and promoted
    container = engine.containers.create(base_image, command=["true"])
    try:
        old = container.commit(repository=family, tag="0.1")
    finally:
        container.remove(force=True)
    stages = DockerStages(engine)
    stages.write_stage(old.id, family, "0.1", "staging", "setup")
    with FamilyRecord(family).update() as data:
        data["images"][old.id]["staged_at"] = promotion.iso(datetime.now(UTC) - timedelta(days=2))
    promotion.promote(stages, to="production", run_id="setup", family=family)
    families = tmp_path / "families.yaml"
    families.write_text(f"families:\n  - family: {family}\n    targets: [docker]\n")

    result = bake("--json", "rebuild", "--families", str(families), "--target", "docker", timeout=900)

    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout)["families"][0]
    assert summary["family"] == family and summary["result"] == "staged"
    assert "has no recorded build inputs (built by an older bakery)" in summary["decision"]["text"]
    new = engine.images.get(f"{family}:{summary['version']}")
    assert summary["image"] == new.id
    assert engine.images.get(f"{family}:staging").id == new.id
    assert engine.images.get(f"{family}:production").id == old.id  # a rebuild never promotes
    assert summary["production"] == f"{family}:0.1"
    assert summary["production_age_days"] < 1 and summary["stale"] is False
    assert summary["base_changed"] is False  # built from the same local base image
    assert "nginx" in summary["packages"]["added"]  # the template installs it; the base has none
    key = f"{family}-docker-rebuild"
    with prefect_api(prefect_api_url) as api:
        artifacts = api.post("/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}}).json()
    assert artifacts and "Weekly rebuild" in artifacts[0]["data"] and "base image**: unchanged" in artifacts[0]["data"]


def test_rebuild_skips_an_unchanged_family_and_builds_one_whose_template_changed(
    bake: Bake, engine: docker.DockerClient, family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAKERY_STATE_DIR", str(bake.state_dir))
    templates = tmp_path / "packer"
    shutil.copytree(REPO / "packer", templates, ignore=shutil.ignore_patterns("packer_cache", "*manifest.json"))
    families = tmp_path / "families.yaml"
    families.write_text(f"families:\n  - family: {family}\n    template_dir: {templates}\n")

    def rebuild() -> dict[str, Any]:
        result = bake("--json", "rebuild", "--families", str(families), "--target", "docker", timeout=900)
        assert result.returncode == 0, result.stderr[-4000:]
        return dict(json.loads(result.stdout)["families"][0])

    first = rebuild()
    assert first["result"] == "staged"
    assert first["decision"]["reasons"] == ["no staging or production image to compare with"]
    staged = engine.images.get(f"{family}:staging").id

    second = rebuild()
    assert second["result"] == "skipped", second["decision"]
    assert second["decision"]["text"].startswith(f"skipped: unchanged since version {first['version']} (checked base")
    assert "0 pending updates" in second["decision"]["checked"]  # an apt-get simulation in the image, just now
    assert engine.images.get(f"{family}:staging").id == staged

    build = templates / "build.pkr.hcl"
    build.write_text(build.read_text() + "\n# touched\n")
    third = rebuild()
    assert third["result"] == "staged"
    assert third["decision"]["reasons"] == ["templates, var files or variables changed"]
    assert engine.images.get(f"{family}:staging").id != staged


def test_rebuild_with_a_bad_families_file_exits_2(bake: Bake, tmp_path: Path) -> None:
    families = tmp_path / "families.yaml"
    families.write_text("families:\n  - family: Bad Name\n")
    result = bake("rebuild", "--families", str(families))
    assert result.returncode == 2
    assert f"{families}: families[0].family 'Bad Name'" in result.stderr

"""A worker killed mid-pipeline, and a promotion killed between its writes, with a registry (issue 12): `bake
sweep` on another machine finds the run's container (removed once expired) and its image left at `testing` in
the registry (named), and resumes the killed promotion from the registry's stage record (undone), as the local
Docker mode does with its record on disk."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tasks.promotion import Intent
from tasks.targets.docker.image_registry import parse_registry
from tasks.targets.docker.registry_stages import RegistryStages
from tests.e2e.conftest import REPO, Bake
from tests.support import first_line_then_sigkill
from tests.unit.test_image_registry import push_artifact
from tests.unit.test_registry_faults import image_config

pytestmark = pytest.mark.e2e

# The pipeline's steps with a registry, without packer: the built image adopted (labels, pushed, recorded),
# staged `testing`, its test container launched; then the process is SIGKILLed (no hook runs).
KILLED_PIPELINE = """
import sys, time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tasks import keys
from tasks.targets.docker.image_registry import parse_registry
from tasks.targets.base import Run
from tasks.targets.docker.instances import DockerTarget

registry, family, base, run_id = sys.argv[1:5]
target = DockerTarget(registry=parse_registry(registry))
image = target.adopt_build(base, family, "1.0", run_id)
target.set_stage(image, "testing", run_id)
with keys.run_keypair(run_id) as key:
    run = Run(run_id, family, Path("."), datetime.now(UTC) + timedelta(seconds=3), key.private_key, key.public_key)
    instance = target.launch(image, run)
    print(instance.id, flush=True)
    time.sleep(600)
"""


@pytest.fixture
def families(engine: docker.DockerClient) -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:6]
    built, promoted = f"swept-{tag}", f"swept-{tag}-p"
    yield built, promoted
    for container in engine.containers.list(all=True, filters={"label": f"bakery.family={built}"}, ignore_removed=True):
        container.remove(force=True)
    for image in engine.images.list():
        if any(built in reference for reference in (image.tags or []) + (image.attrs.get("RepoDigests") or [])):
            with contextlib.suppress(docker.errors.APIError):
                engine.images.remove(image.id, force=True)


def killed_pipeline(registry: str, family: str, base: str, machine: Path, api_url: str) -> tuple[str, str]:
    """(run id, container id) of a pipeline SIGKILLed while its test container ran."""
    run_id = str(uuid.uuid4())
    env = {
        **os.environ,
        "BAKERY_STATE_DIR": str(machine / "state"),
        "BAKERY_KEYS_DIR": str(machine / "keys"),
        "PREFECT_API_URL": api_url,
    }
    container_id = first_line_then_sigkill(
        [sys.executable, "-c", KILLED_PIPELINE, registry, family, base, run_id], REPO, env
    )
    return run_id, container_id


def test_sweep_finds_what_a_killed_worker_left_in_the_engine_and_the_registry(
    bake: Bake,
    engine: docker.DockerClient,
    base_image: str,
    registry_host: str,
    families: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built, promoted = families
    stages = RegistryStages(parse_registry(registry_host), locks=tmp_path / "locks")
    run_id, container = killed_pipeline(registry_host, built, base_image, tmp_path / "machine-1", bake.api_url)
    digest = stages.client.digest_of(built, "1.0")
    assert digest and stages.stage_of(digest, built) == "testing"
    # another worker's promotion of another family, killed after writing its intent
    staged = push_artifact(stages.client, promoted, "1.0", image_config(promoted))
    stages.write_stage(staged, promoted, "1.0", "staging", "build")
    stages.write_intent(promoted, Intent("killed-promote", "promote", promoted, staged, "staging", (), "2026-12-07"))
    time.sleep(4)  # the killed run's container expires 3 s after its launch

    monkeypatch.setenv("BAKERY_REGISTRY", registry_host)
    elsewhere = Bake(bake.api_url, tmp_path / "machine-2" / "state")
    swept = elsewhere("--json", "sweep", "--apply")

    assert swept.returncode == 0, swept.stderr[-3000:]
    doc = json.loads(swept.stdout)
    row = next(r for r in doc["resources"] if r["id"] == container)
    assert (row["run_id"], row["decision"], row["result"]) == (run_id, "remove", "removed")
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(container)
    notes = "\n".join(doc["notes"])
    assert f"{built}:1.0 ({digest[:19]}) is still at testing, left by run {run_id}" in notes, notes
    assert f"found an unfinished promote of {promoted} (run killed-promote" in notes, notes
    assert stages.read_intent(promoted) is None
    assert stages.stage_of(staged, promoted) == "staging"
    assert stages.client.digest_of(promoted, "production") is None
    assert stages.stage_of(digest, built) == "testing"  # named, not moved: a test or retention decides

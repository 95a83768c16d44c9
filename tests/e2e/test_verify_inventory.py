"""The pipeline's verify task keeps each image's package inventory and diffs it against production.

Two images of one family: the known-state image (bakery-dummy 1.0) as ``<family>:production`` and one
built FROM it with bakery-dummy 1.1 installed. The real ``verify_instance`` Prefect task runs against a
container of each; the second's markdown artifact must show the upgrade.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from tasks.request import prepare
from tasks.steps.pipeline import verify_instance
from tasks.targets.base import Image
from tasks.verify import VerifyResult
from tests.e2e.conftest import REPO
from tests.support.verify_host import LABELS, StartHost, write_spec

pytest_plugins = ("tests.support.verify_host",)
pytestmark = pytest.mark.e2e

UPGRADED = "RUN dpkg -i /srv/apt/security/bakery-dummy_1.1_all.deb\n"


@pytest.fixture(scope="module")
def family(docker_engine: docker.DockerClient, test_image: str) -> Iterator[str]:
    """``<family>:1`` = the known-state image (tagged production), ``<family>:2`` = it with bakery-dummy 1.1."""
    name = f"bakery-test-inventory-{uuid.uuid4().hex[:6]}"
    docker_engine.images.get(test_image).tag(name, "1")
    docker_engine.images.get(test_image).tag(name, "production")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = f"FROM {test_image}\n{UPGRADED}".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    docker_engine.images.build(
        fileobj=buffer, custom_context=True, tag=f"{name}:2", labels=LABELS, pull=False, rm=True, forcerm=True
    )
    try:
        yield name
    finally:
        # start_host's containers outlive this fixture (torn down later): remove those of these images first
        for container in docker_engine.containers.list(
            all=True, filters={"label": "bakery.test=1"}, ignore_removed=True
        ):
            if container.attrs.get("Config", {}).get("Image", "").startswith(f"{name}:"):
                container.remove(force=True)
        for tag in ("1", "production", "2"):
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_engine.images.remove(f"{name}:{tag}")


def image(engine: docker.DockerClient, family: str, version: str) -> Image:
    found = engine.images.get(f"{family}:{version}")
    return Image("docker", found.id, family, version, f"{family}:{version}")


def test_inventory_is_kept_and_diffed_against_production(
    docker_engine: docker.DockerClient,
    start_host: StartHost,
    family: str,
    prefect_api_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BAKERY_STATE_DIR", str(tmp_path / "state"))
    spec = write_spec(tmp_path, "package:\n  bakery-dummy: {installed: true}\n")
    request = prepare(spec=str(spec), template_dir=str(REPO / "packer"), ssh_timeout="30s")
    production, candidate = image(docker_engine, family, "1"), image(docker_engine, family, "2")
    assert production.id != candidate.id

    @flow(name="bakery-test-verify-inventory")
    def verify_both(workdir: Path) -> tuple[VerifyResult, VerifyResult]:
        first = start_host(image=f"{family}:1")
        second = start_host(image=f"{family}:2")
        (workdir / "1").mkdir(parents=True)
        (workdir / "2").mkdir(parents=True)
        return (
            verify_instance(first.endpoint(), request, production, workdir / "1"),
            verify_instance(second.endpoint(), request, candidate, workdir / "2"),
        )

    first, second = verify_both(tmp_path / "runs")
    assert first.passed and second.passed

    written = json.loads((tmp_path / "runs" / "2" / "inventory.json").read_text())
    assert (written["target"], written["image_id"], written["image"]) == ("docker", candidate.id, f"{family}:2")
    assert written["manager"] == "dpkg" and written["packages"]["bakery-dummy"] == ["1.1"]
    kept = tmp_path / "state" / "inventories" / "docker"
    assert {p.name for p in kept.iterdir()} == {
        f"{production.id.replace(':', '_')}.json",
        f"{candidate.id.replace(':', '_')}.json",
    }

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"{family}-packages"])),
        )
    texts = [str(a.data) for a in artifacts]
    diffed = [t for t in texts if f"## Packages of {family}:2" in t]
    assert diffed, texts
    assert f"Compared with the production image **{family}:1**" in diffed[0]
    assert "| `bakery-dummy` | 1.0 | 1.1 |" in diffed[0]
    assert "| 1 | 0 | 0 | 0 | 0 |" in diffed[0]  # 1 upgraded, nothing added, removed, downgraded, changed
    own = [t for t in texts if f"## Packages of {family}:1" in t]
    assert own and "this image is the production image" in own[0]

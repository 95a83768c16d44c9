"""Registry faults through `bake` (issue 12): one line each, exit 1, nothing half-written. Unreachable, refused
credentials (Distribution's htpasswd auth), a tag naming another family's image, a registry without deletes.
Registries: Debian's docker-registry on 127.0.0.1 (tests/registry_server.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import docker
import pytest

from tasks.targets.docker.image_registry import RegistryClient, parse_registry
from tasks.targets.docker.registry_stages import RegistryStages
from tests.e2e.conftest import Bake
from tests.registry_server import free_port, running_registry
from tests.unit.test_image_registry import push_artifact
from tests.unit.test_registry_faults import image_config, login

pytestmark = pytest.mark.e2e


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


@pytest.fixture
def family() -> str:
    return f"fault-{uuid.uuid4().hex[:6]}"


def test_an_unreachable_registry_is_one_line(bake: Bake, family: str) -> None:
    host = f"127.0.0.1:{free_port()}"
    promoted = bake("promote", "--family", family, "--to", "production", "--force", "--registry", host)
    assert promoted.returncode == 1, promoted.stderr[-3000:]
    line = last_line(promoted.stderr)
    assert line.startswith(f"bake promote: registry {host}: ") and f"unreachable at http://{host}" in line, line


def test_refused_credentials_stop_a_build_before_it_builds(
    bake: Bake, engine: docker.DockerClient, family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_registry(tmp_path / "registry", users={"bakery": "right"}) as host:
        monkeypatch.setenv("DOCKER_CONFIG", str(login(tmp_path / "wrong", host, "bakery", "wrong")))
        built = bake("build", "--family", family, "--version", "1.0", "--registry", host, timeout=600)

        assert built.returncode == 1, built.stderr[-3000:]
        assert last_line(built.stderr) == (
            f"bake build: registry {host}: checking the API: the stored login for {host} was refused "
            f"(docker login {host} again)"
        )
        assert engine.images.list(name=family) == []  # nothing was built, so nothing pushed or staged
        monkeypatch.setenv("DOCKER_CONFIG", str(login(tmp_path / "right", host, "bakery", "right")))
        assert RegistryClient(parse_registry(host)).tags(family) == []


def test_a_tag_naming_another_familys_image_is_not_promoted(
    bake: Bake, registry_host: str, family: str, tmp_path: Path
) -> None:
    stages = RegistryStages(parse_registry(registry_host), locks=tmp_path)
    ours = push_artifact(stages.client, family, "1.0", image_config(family))
    stages.write_stage(ours, family, "1.0", "staging", "build-1")
    foreign = push_artifact(stages.client, family, "2.0", image_config("someone-else"))

    promoted = bake("promote", "--image", f"{family}:2.0", "--to", "production", "--force", "--registry", registry_host)

    assert promoted.returncode == 1, promoted.stderr[-3000:]
    assert last_line(promoted.stderr) == (
        f"bake promote: registry {registry_host}: {family}:2.0 points at {foreign[:19]}, an image of family "
        f"someone-else (its label name=someone-else), not {family}: nothing changed (retag or delete {family}:2.0)"
    )
    assert stages.client.digest_of(family, "production") is None
    assert stages.read_intent(family) is None


def test_retention_on_a_registry_without_deletes_says_so_and_keeps_every_tag(
    bake: Bake, family: str, tmp_path: Path
) -> None:
    with running_registry(tmp_path / "registry", delete_enabled=False) as host:
        stages = RegistryStages(parse_registry(host), locks=tmp_path)
        for n in (1, 2, 3):
            digest = push_artifact(stages.client, family, f"{n}.0", image_config(family, f"{n}.0"))
            stages.record_push(digest, family, f"{n}.0", f"build-{n}")
        before = stages.read_record(family)

        kept = bake("retention", "--family", family, "--keep", "1", "--apply", "--registry", host)

        assert kept.returncode == 1, kept.stderr[-3000:]
        assert last_line(kept.stderr) == (
            f"bake retention: registry {host}: deleting from {family}: the registry does not allow deletes "
            "(Distribution: storage: delete: enabled: true); nothing was deleted"
        )
        assert sorted(stages.client.tags(family)) == ["1.0", "2.0", "3.0", "bakery-stages"]
        assert stages.read_record(family) == before

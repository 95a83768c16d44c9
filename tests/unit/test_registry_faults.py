"""Registry faults, each one line and nothing half-written (issue 12): refused credentials, a tag of one family
naming another family's image. Against Debian's docker-registry on 127.0.0.1 (tests/registry_server.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tasks import promotion
from tasks.errors import JobFailed
from tasks.targets.docker.image_registry import RegistryClient, RegistryError, parse_registry
from tasks.targets.docker.registry_stages import RegistryStages
from tests.registry_server import running_registry
from tests.unit.test_image_registry import push_artifact


def login(directory: Path, host: str, user: str, password: str) -> Path:
    """A ``config.json`` as ``docker login`` writes it, in ``directory`` (for ``DOCKER_CONFIG``)."""
    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return directory


def image_config(family: str, version: str = "1.0") -> bytes:
    """The config of an image bakery built for ``family`` (what its labels say; one digest per version)."""
    return json.dumps({"config": {"Labels": {"managed-by": "bakery", "name": family, "version": version}}}).encode()


def test_refused_or_missing_credentials_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_registry(tmp_path / "registry", users={"alice": "right"}) as host:
        registry = parse_registry(host)
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nobody"))
        with pytest.raises(RegistryError) as raised:
            RegistryClient(registry).check()
        assert str(raised.value) == (
            f"registry {host}: checking the API: authentication required and no login stored for {host} "
            "(docker login, or DOCKER_CONFIG)"
        )
        monkeypatch.setenv("DOCKER_CONFIG", str(login(tmp_path / "wrong", host, "alice", "wrong")))
        with pytest.raises(RegistryError) as raised:
            RegistryStages(registry, locks=tmp_path).family_images("app")
        assert str(raised.value) == (
            f"registry {host}: reading app:bakery-stages: the stored login for {host} was refused "
            f"(docker login {host} again)"
        )
        monkeypatch.setenv("DOCKER_CONFIG", str(login(tmp_path / "right", host, "alice", "right")))
        RegistryClient(registry).check()
        assert RegistryStages(registry, locks=tmp_path).family_images("app") == []


def test_a_tag_naming_another_familys_image_moves_no_stage(registry_host: str, tmp_path: Path) -> None:
    registry = parse_registry(registry_host)
    stages = RegistryStages(registry, locks=tmp_path)
    ours = push_artifact(stages.client, "app", "1.0", image_config("app"))
    stages.write_stage(ours, "app", "1.0", "staging", "build-1")
    foreign = push_artifact(stages.client, "app", "2.0", image_config("other"))  # someone pushed other's image
    before = stages.read_record("app")

    with pytest.raises(JobFailed) as raised:
        stages.write_stage(foreign, "app", "2.0", "staging", "build-2")
    line = str(raised.value)
    assert line == (
        f"registry {registry_host}: app:2.0 points at {foreign[:19]}, an image of family other (its label "
        "name=other), not app: nothing changed (retag or delete app:2.0)"
    )
    for attempt in (
        lambda: promotion.promote(stages, to="production", run_id="p", image="app:2.0", force=True),
        lambda: promotion.promote(stages, to="production", run_id="p", family="app", force=True),
    ):
        with pytest.raises(JobFailed, match=r"an image of family other"):
            attempt()
    assert stages.client.digest_of("app", "staging") == ours
    assert stages.client.digest_of("app", "production") is None
    assert stages.read_record("app") == before  # no intent, no history line


def test_retention_asks_whether_the_registry_takes_deletes_before_deleting_anything(
    registry_host: str, tmp_path: Path
) -> None:
    from tasks.targets.docker.registry_images import RegistryImages

    RegistryImages(parse_registry(registry_host), ["app"], locks=tmp_path).before_deletes("app")
    with running_registry(tmp_path / "no-delete", delete_enabled=False) as host, pytest.raises(RegistryError) as raised:
        RegistryImages(parse_registry(host), ["app"], locks=tmp_path).before_deletes("app")
    assert str(raised.value) == (
        f"registry {host}: deleting from app: the registry does not allow deletes (Distribution: storage: delete: "
        "enabled: true); nothing was deleted"
    )

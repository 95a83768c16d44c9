"""Fixtures for the reliability suite: real engine and Prefect server, leaks counted from Docker itself."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from tasks.request import keys_root
from tests.e2e.conftest import Bake, base_image, engine, prefect_api_url  # noqa: F401  (shared fixtures)

IMAGE_FAMILY = "reliability"


@dataclass
class Leaks:
    """What exists now that did not before: containers of bakery runs or of the family's images, key dirs."""

    engine: docker.DockerClient
    containers_before: set[str]
    keys_before: set[str]

    def containers(self) -> list[str]:
        found = []
        for container in self.engine.containers.list(all=True):
            labels = container.labels or {}
            tags = container.image.tags if container.image else []
            ours = "bakery.run-id" in labels or any(t.startswith(f"{IMAGE_FAMILY}:") for t in tags)
            if ours and container.id not in self.containers_before:
                found.append(f"{container.name} ({container.status})")
        return found

    def key_dirs(self) -> list[str]:
        root = keys_root()
        now = set(os.listdir(root)) if root.exists() else set()
        return sorted(now - self.keys_before)

    def assert_none(self) -> None:
        assert self.containers() == [], "leaked containers"
        assert self.key_dirs() == [], "leaked private key directories"


@pytest.fixture
def leaks(engine: docker.DockerClient) -> Leaks:  # noqa: F811
    root = keys_root()
    return Leaks(
        engine,
        {c.id for c in engine.containers.list(all=True)},
        set(os.listdir(root)) if root.exists() else set(),
    )


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def session_bake(prefect_api_url: str, state_dir: Path) -> Bake:  # noqa: F811
    return Bake(prefect_api_url, state_dir)


@pytest.fixture(scope="session")
def built_image(session_bake: Bake, engine: docker.DockerClient) -> Iterator[str]:  # noqa: F811
    """One image of the reliability family, built once; removed at the end."""
    version = f"0.0.0-rel.{uuid.uuid4().hex[:6]}"
    result = session_bake("build", "--family", IMAGE_FAMILY, "--version", version)
    assert result.returncode == 0, result.stderr[-3000:]
    reference = f"{IMAGE_FAMILY}:{version}"
    yield reference
    for tag in (reference, f"{IMAGE_FAMILY}:staging"):
        with contextlib.suppress(docker.errors.APIError):
            engine.images.remove(tag)


@pytest.fixture
def in_process(prefect_api_url: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., int]:  # noqa: F811
    """`bake` in this process, so a fault can be injected at a seam with monkeypatch."""
    from flows.cli import main

    monkeypatch.setenv("BAKERY_STATE_DIR", str(state_dir))
    monkeypatch.setenv("PREFECT_API_URL", prefect_api_url)
    return lambda *argv: main(list(argv))

"""Real parts for the end-to-end tests: the Docker engine, a Prefect server, the `bake` command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

REPO = Path(__file__).resolve().parents[2]
BAKE = str(Path(sys.executable).parent / "bake")


@pytest.fixture(scope="session")
def engine() -> docker.DockerClient:
    return docker.from_env()


@pytest.fixture(scope="session", autouse=True)
def base_image(engine: docker.DockerClient) -> str:
    """The local base image every e2e image builds from (made once with debootstrap when missing)."""
    from tasks.baseimage import DEFAULT_BASE_IMAGE, ensure_base_image

    ensure_base_image(engine)
    return DEFAULT_BASE_IMAGE


@pytest.fixture(scope="session")
def prefect_api_url() -> Iterator[str]:
    """One temporary Prefect server for the whole session (as a team's server would be)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield str(PREFECT_API_URL.value())


@dataclass
class Bake:
    """`bake` as a user runs it: a subprocess in the repository, against the session's Prefect server."""

    api_url: str
    state_dir: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "PREFECT_API_URL": self.api_url, "BAKERY_STATE_DIR": str(self.state_dir)}

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BAKE, *args], cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )


@pytest.fixture
def bake(prefect_api_url: str, tmp_path: Path) -> Bake:
    return Bake(prefect_api_url, tmp_path / "state")


def labelled_containers(engine: docker.DockerClient, label: str = "bakery.run-id") -> list[str]:
    return [c.name for c in engine.containers.list(all=True, filters={"label": label})]

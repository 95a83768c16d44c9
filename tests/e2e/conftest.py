"""The `bake` command as a user runs it, for the end-to-end tests (engine and Prefect fixtures: tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BAKE = str(Path(sys.executable).parent / "bake")


@pytest.fixture(scope="session", autouse=True)
def _base_image(base_image: str) -> str:
    """Every e2e test may build or run from the local base image: make it once, first."""
    return base_image


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

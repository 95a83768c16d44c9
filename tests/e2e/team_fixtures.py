"""scripts/team-up.sh for the tests: PostgreSQL, `prefect server start` on it, the pool and the deployments.

The fixtures ``server``, ``deployments`` and ``families`` serve a module that imports them, with
``pytest_plugins = ("tests.e2e.deployment_fixtures",)`` for ``api``; ``server`` and ``deployments`` are
module-scoped (each such module its own team server) and ``families`` names its families after the module's
``FAMILY_PREFIX``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.e2e.conftest import REPO
from tests.support.servers import PrefectServer, free_port

SCRIPT = REPO / "scripts" / "team-up.sh"


def team_up(team_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "--dir", str(team_dir), *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


def reachable_team_dir() -> tempfile.TemporaryDirectory[str]:
    """A directory PostgreSQL's own user can reach (pytest's tmp_path is closed to all but root)."""
    tmp = tempfile.TemporaryDirectory(prefix="bakery-team-")
    os.chmod(tmp.name, 0o711)
    return tmp


def team_env(home: Path, server_port: int, pg_port: int) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "BAKERY_SERVER_PORT": str(server_port),
        "BAKERY_PG_PORT": str(pg_port),
        "PREFECT_HOME": str(home),
    }


@contextmanager
def running_team() -> Iterator[PrefectServer]:
    """`scripts/team-up.sh --workers 0` in a temporary directory, `--down` on exit; the server as PrefectServer."""
    with reachable_team_dir() as tmp:
        team_dir, home = Path(tmp) / "team", Path(tmp) / "prefect-home"
        port = free_port()
        env = team_env(home, port, free_port())
        try:
            up = team_up(team_dir, env, "--workers", "0")
            assert up.returncode == 0, up.stdout + up.stderr
            pid = int((team_dir / "run" / "server.pid").read_text())
            yield PrefectServer(
                f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}", home, pid, team_dir / "server.log"
            )
        finally:
            team_up(team_dir, env, "--down")


@pytest.fixture(scope="module")
def server() -> Iterator[PrefectServer]:
    """The team's server as scripts/team-up.sh brings it up: on PostgreSQL, with the pool and deployments."""
    with running_team() as running:
        yield running


@pytest.fixture(scope="module")
def deployments(server: PrefectServer, api: httpx.Client) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in api.post("/deployments/filter", json={}).json()}


@pytest.fixture
def families(request: pytest.FixtureRequest, engine: docker.DockerClient, base_image: str) -> Iterator[list[str]]:
    """Two families of the test's own, ``<FAMILY_PREFIX>-<tag>-a`` and ``-b``; afterwards every image one of
    them names (a tag or a registry digest) is removed."""
    tag = uuid.uuid4().hex[:6]
    names = [f"{request.module.FAMILY_PREFIX}-{tag}-a", f"{request.module.FAMILY_PREFIX}-{tag}-b"]
    yield names
    for image in engine.images.list():
        references = (image.tags or []) + (image.attrs.get("RepoDigests") or [])
        if any(name in reference for name in names for reference in references):
            with contextlib.suppress(docker.errors.APIError):
                engine.images.remove(image.id, force=True)

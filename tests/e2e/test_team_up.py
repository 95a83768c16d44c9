"""scripts/team-up.sh on this machine (issue 12): PostgreSQL as a non-root user on 127.0.0.1 in a temporary
directory, `prefect server start` on it, the pool and the deployments; run twice (idempotent), then --down."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.team_fixtures import reachable_team_dir, team_env, team_up
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def team_dir() -> Iterator[Path]:
    with reachable_team_dir() as tmp:
        yield Path(tmp) / "team"


def test_team_up_brings_up_postgres_the_server_and_the_deployments_and_down_stops_them(
    team_dir: Path, tmp_path: Path
) -> None:
    server_port, pg_port = free_port(), free_port()
    env = team_env(tmp_path / "prefect-home", server_port, pg_port)
    try:
        first = team_up(team_dir, env, "--workers", "0")
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"started PostgreSQL on 127.0.0.1:{pg_port}" in first.stdout
        assert "created the database prefect" in first.stdout
        password = (team_dir / "postgres" / "password").read_text().strip()
        assert (team_dir / "postgres" / "password").stat().st_mode & 0o077 == 0
        assert password not in first.stdout + first.stderr
        api = f"http://127.0.0.1:{server_port}/api"
        names = {d["name"] for d in httpx.post(f"{api}/deployments/filter", json={}).json()}
        assert {"image-pipeline", "weekly-rebuild"} <= names
        assert httpx.get(f"{api}/work_pools/bakery-process").status_code == 200
        if os.getuid() == 0:  # PostgreSQL refuses root: it runs as another user
            assert (team_dir / "postgres" / "data").stat().st_uid != 0

        again = team_up(team_dir, env, "--workers", "0")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "PostgreSQL already runs" in again.stdout
        assert "the Prefect server already runs" in again.stdout
        assert "work pool bakery-process exists" in again.stdout
    finally:
        down = team_up(team_dir, env, "--down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped the Prefect server" in down.stdout and "stopped PostgreSQL" in down.stdout
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{server_port}/api/health", timeout=5)


@pytest.mark.skipif(os.getuid() != 0, reason="as root, PostgreSQL runs as another user")
def test_team_up_as_root_names_a_directory_postgres_cannot_reach(tmp_path: Path) -> None:
    result = team_up(tmp_path / "team", dict(os.environ), "--workers", "0")
    assert result.returncode == 2
    assert result.stderr.strip().endswith("cannot reach it (a parent directory is closed to it): choose another --dir")


def test_team_up_refuses_a_bad_worker_count(tmp_path: Path) -> None:
    result = team_up(tmp_path / "team", dict(os.environ), "--workers", "two")
    assert result.returncode == 2
    assert result.stderr.strip() == "team-up.sh: --workers two: expected a number (0 or more)"

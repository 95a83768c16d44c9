"""scripts/team-up.sh for the tests: PostgreSQL, `prefect server start` on it, the pool and the deployments."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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

"""bakery's local Prefect server (flows/local_server.py), as a user without PREFECT_API_URL meets it.

Real `bake` subprocesses and real `prefect server start` processes, each test in its own temporary state dir;
the fixture stops what a test started (by the pid in its record), so the suite leaves no server behind.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.local_server import ServerRecord
from tests.e2e.conftest import BAKE, REPO
from tests.prefect_api import prefect_api

pytestmark = pytest.mark.e2e
ANNOUNCEMENT = "bake: started a local Prefect server in the background"


class User:
    """`bake` with no PREFECT_API_URL and its own BAKERY_STATE_DIR."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.home = state_dir / "prefect-server"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "BAKERY_LOCAL_SERVER")}
        env.update(BAKERY_STATE_DIR=str(self.state_dir), PREFECT_HOME=str(self.state_dir / "client-prefect-home"))
        return env

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [BAKE, *args], cwd=REPO, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BAKE, *args], cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )

    def record(self) -> ServerRecord:
        data = json.loads((self.home / "server.json").read_text())
        return ServerRecord(pid=data["pid"], port=data["port"])


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and b"server" in Path(f"/proc/{pid}/cmdline").read_bytes()


@pytest.fixture
def user(tmp_path: Path) -> Iterator[User]:
    someone = User(tmp_path / "state")
    try:
        yield someone
    finally:
        stopped = someone("server", "stop")
        assert stopped.returncode == 0, stopped.stderr
        if (someone.home / "port").exists():
            port = (someone.home / "port").read_text().strip()
            pgrep = ["pgrep", "-f", "--", f"--port {port}"]
            leftover = subprocess.run(pgrep, capture_output=True, text=True, check=False)
            assert leftover.stdout == "", f"a server on port {port} outlived `bake server stop`"


def test_first_command_starts_one_server_later_ones_reuse_it_and_the_runs_stay(user: User) -> None:
    family = f"ls-{uuid.uuid4().hex[:6]}"
    first = user("retention", "--target", "docker", "--family", family)
    assert first.returncode == 0, first.stderr
    record = user.record()
    assert first.stderr.count(ANNOUNCEMENT) == 1 and record.ui_url in first.stderr, first.stderr
    assert "bake server stop" in first.stderr

    started = time.monotonic()
    second = user("retention", "--target", "docker", "--family", family)
    second_took = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    assert ANNOUNCEMENT not in second.stderr, second.stderr  # announced once
    assert user.record() == record  # the same server, not a second one
    assert "Starting temporary server" not in second.stderr + first.stderr

    # The runs of both commands are visible afterwards, on the server the UI shows.
    with prefect_api(record.api_url) as api:
        runs = api.post("/flow_runs/filter", json={"flows": {"name": {"any_": ["retention"]}}}).json()
    assert len(runs) == 2 and {r["state_type"] for r in runs} == {"COMPLETED"}, runs

    # Private, on loopback, and reported by `bake server status`.
    assert stat.S_IMODE(user.home.stat().st_mode) == 0o700
    assert record.api_url.startswith("http://127.0.0.1:")
    status = user("--json", "server", "status")
    assert json.loads(status.stdout) == {
        "running": True,
        "home": str(user.home),
        "pid": record.pid,
        "ui": record.ui_url,
        "api": record.api_url,
    }
    print(f"second command took {second_took:.1f} s")  # bench/startup.py measures it properly

    stopped = user("server", "stop")
    assert stopped.returncode == 0 and not alive(record.pid), stopped.stderr
    assert json.loads(user("--json", "server", "status").stdout)["running"] is False


def test_racing_starts_start_one_server_and_a_stale_record_is_replaced(user: User) -> None:
    racers = [user.start("--json", "server", "start") for _ in range(2)]
    outcomes = [(r.wait(300), *r.communicate()) for r in racers]
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    docs = [json.loads(out) for _, out, _ in outcomes]
    assert sorted(d["started"] for d in docs) == [False, True], docs  # one started it, the other found it
    assert docs[0]["pid"] == docs[1]["pid"] and docs[0]["api"] == docs[1]["api"]
    assert sum(err.count(ANNOUNCEMENT) for _, _, err in outcomes) == 1
    first = user.record()

    # The server dies without `bake server stop` (a reboot, a kill): its record is stale.
    os.killpg(first.pid, 9)
    for _ in range(50):
        if not alive(first.pid):
            break
        time.sleep(0.2)
    assert json.loads(user("--json", "server", "status").stdout)["running"] is False
    again = user("--json", "server", "start")
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["started"] is True and doc["pid"] != first.pid
    assert doc["ui"] == first.ui_url  # the same address as before, the port being free again


def test_bake_verify_and_validate_start_no_server(user: User) -> None:
    validate = user("validate")
    assert validate.returncode == 0, validate.stderr
    verify = user(
        "verify", "--host", "127.0.0.1", "--user", "x", "--key", "/nonexistent", "--host-key", "x", "--spec", "x"
    )
    assert verify.returncode == 2
    assert not (user.home / "server.json").exists()

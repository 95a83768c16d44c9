"""A real `prefect server start` with bakery's deployments and a process worker, for the tests that need them.

Use with ``pytest_plugins = ("tests.e2e.deployment_fixtures",)``; the fixtures are module-scoped.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import REPO
from tests.prefect_api import prefect_api
from tests.support.servers import (
    PREFECT,
    PrefectServer,
    running_prefect_server,
    running_process_worker,
    without_checkout,
)


@pytest.fixture(scope="module")
def server() -> Iterator[PrefectServer]:
    with running_prefect_server(ui=True) as running:
        yield running


@pytest.fixture(scope="module")
def api(server: PrefectServer) -> Iterator[httpx.Client]:
    with prefect_api(server.url) as client:
        yield client


def prefect(server: PrefectServer, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`prefect ...` from the checkout, as a user runs it (no BAKERY_CHECKOUT: the registered directory is used)."""
    return subprocess.run(
        [PREFECT, *args],
        cwd=REPO,
        env=without_checkout(server.client_env()),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def deployments(server: PrefectServer, api: httpx.Client) -> dict[str, dict[str, Any]]:
    """`prefect work-pool create` + `prefect --no-prompt deploy --all`, as deployments/README.md says."""
    pool = prefect(server, "work-pool", "create", "bakery-process", "--type", "process")
    assert pool.returncode == 0, pool.stdout[-2000:] + pool.stderr[-2000:]
    deployed = prefect(server, "--no-prompt", "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    found = api.post("/deployments/filter", json={}).json()
    return {d["name"]: d for d in found}


def wait_for_final_state(api: httpx.Client, run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state: dict[str, Any] = api.get(f"/flow_runs/{run_id}").json()["state"]
        if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return state
        if time.monotonic() > deadline:
            return state
        time.sleep(2)


@contextmanager
def process_worker(server: PrefectServer, tmp_path: Path, limit: int | None = None, **env: str) -> Iterator[Path]:
    """A process worker on the pool in ``tmp_path`` (:func:`running_process_worker`), once the scheduled
    deployments are paused: only the runs a test makes may execute. Yields its log file."""
    with prefect_api(server.url) as api:
        for deployment in api.post("/deployments/filter", json={}).json():
            if deployment["schedules"]:
                paused = api.patch(f"/deployments/{deployment['id']}", json={"paused": True})
                assert paused.status_code == 204, paused.text
    with running_process_worker(server, tmp_path, limit, **env) as log:
        yield log

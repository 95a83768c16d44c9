"""A flow run cancelled through Prefect (the UI's Cancel button, the API) while its instance is being verified:
the worker stops the run and the run's cancellation handling removes the test container and its key."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.e2e.deployment_fixtures import process_worker, wait_for_final_state
from tests.support import containers_of, wait_for_command_in_test_container
from tests.support.servers import PrefectServer

pytestmark = pytest.mark.e2e
pytest_plugins = ("tests.e2e.deployment_fixtures",)  # server, api, deployments


def test_cancelling_a_run_through_prefect_tears_down_its_instance(
    server: PrefectServer,
    api: httpx.Client,
    deployments: dict[str, dict[str, Any]],
    engine: docker.DockerClient,
    tmp_path: Path,
) -> None:
    spec = tmp_path / "slow.yaml"
    spec.write_text("command:\n  slow:\n    exec: sleep 120\n    exit-status: 0\n    timeout: 150000\n")
    pipeline = deployments["image-pipeline"]
    created = api.post(
        f"/deployments/{pipeline['id']}/create_flow_run",
        json={"name": "to-be-cancelled", "parameters": {"family": "cancelled", "spec": str(spec)}},
    )
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    with process_worker(server, tmp_path, BAKERY_KEYS_DIR=str(tmp_path / "bakery-keys")) as log:

        def still_going() -> str:
            state = api.get(f"/flow_runs/{run_id}").json()["state"]["type"]
            running = state in ("SCHEDULED", "PENDING", "RUNNING")
            return "" if running else f"{state}\n{log.read_text()[-4000:]}"

        # well into the verify step: the slow check is running in the run's container
        wait_for_command_in_test_container(engine, "sleep 120", run_id=run_id, timeout=600, alive=still_going)
        cancelled = api.post(
            f"/flow_runs/{run_id}/set_state",
            json={"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True},
        )
        assert cancelled.status_code in (200, 201), cancelled.text
        state = wait_for_final_state(api, run_id, timeout=180)
        assert state["type"] == "CANCELLED", f"{state}\n{log.read_text()[-4000:]}"
        deadline = time.monotonic() + 60  # the worker's on_cancellation hooks finish after the state is set
        while containers_of(engine, run_id=run_id) and time.monotonic() < deadline:
            time.sleep(1)
    assert containers_of(engine, run_id=run_id) == [], log.read_text()[-4000:]
    assert not (tmp_path / "bakery-keys" / run_id).exists()
    tags = [t for image in engine.images.list(name="cancelled") for t in image.tags]
    assert "cancelled:staging" not in tags
    for tag in tags:
        engine.images.remove(tag)

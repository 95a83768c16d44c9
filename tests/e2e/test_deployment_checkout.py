"""Deployments run from any checkout: registered as a Prefect user would (`prefect deploy --all` without
BAKERY_CHECKOUT, then `prefect worker start` elsewhere), a run starts in the checkout it was registered from;
BAKERY_CHECKOUT on the worker overrides it; a worker pointed at a directory without the project ends the run
in one line saying what to set. Real `prefect server start` and process worker (tests/e2e/deployment_fixtures.py).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import REPO
from tests.e2e.deployment_fixtures import process_worker, wait_for_final_state
from tests.support.servers import PrefectServer

pytestmark = pytest.mark.e2e
pytest_plugins = ("tests.e2e.deployment_fixtures",)  # server, api, deployments


def start_retention_plan(api: httpx.Client, deployments: dict[str, dict[str, Any]]) -> str:
    """A dry-run retention plan for a family nobody has: a quick run that needs the checkout's flow code."""
    created = api.post(
        f"/deployments/{deployments['retention']['id']}/create_flow_run",
        json={
            "name": f"checkout-{uuid.uuid4().hex[:6]}",
            "parameters": {"target": "docker", "family": f"checkout-{uuid.uuid4().hex[:6]}", "apply": False},
        },
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_deploy_records_the_checkout_it_ran_in(deployments: dict[str, dict[str, Any]]) -> None:
    for name, deployment in deployments.items():
        assert deployment["pull_steps"] == [{"flows.checkout.enter_checkout": {"directory": str(REPO)}}], name


def test_a_worker_started_elsewhere_runs_the_flow_from_the_registered_checkout(
    server: PrefectServer, api: httpx.Client, deployments: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    run_id = start_retention_plan(api, deployments)
    with process_worker(server, tmp_path) as log:  # cwd tmp_path, no BAKERY_CHECKOUT
        state = wait_for_final_state(api, run_id, timeout=300)
    assert state["type"] == "COMPLETED", f"{state}\n{log.read_text()[-4000:]}"


def test_bakery_checkout_on_the_worker_overrides_and_a_directory_without_the_project_is_one_line(
    server: PrefectServer, api: httpx.Client, deployments: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    elsewhere = tmp_path / "not-a-checkout"
    elsewhere.mkdir()
    run_id = start_retention_plan(api, deployments)
    with process_worker(server, tmp_path, BAKERY_CHECKOUT=str(elsewhere)) as log:
        state = wait_for_final_state(api, run_id, timeout=300)
    assert state["type"] == "CRASHED", f"{state}\n{log.read_text()[-4000:]}"
    message = state["message"]
    assert "\n" not in message and "Traceback" not in message, message
    assert f"BAKERY_CHECKOUT={elsewhere}" in message and "flows/pipeline.py missing" in message, message
    assert "set BAKERY_CHECKOUT" in message, message

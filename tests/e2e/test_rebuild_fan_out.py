"""The weekly rebuild fanned out over a team's workers (issue 12): scripts/team-up.sh's server on PostgreSQL, the
deployments of prefect.yaml, two process workers with their own working directory and BAKERY_STATE_DIR (two
"machines"), and a weekly-rebuild run started through the API that runs each family as an image-pipeline
deployment run, waits for them and summarises each with its child run."""

from __future__ import annotations

import json
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.e2e.deployment_fixtures import process_worker, wait_for_final_state
from tests.e2e.team_fixtures import deployments, families, server  # noqa: F401  (fixtures)
from tests.support.servers import PrefectServer

pytestmark = pytest.mark.e2e
pytest_plugins = ("tests.e2e.deployment_fixtures",)  # api (server and deployments: team_fixtures)
FAMILY_PREFIX = "team"  # team_fixtures.families


def test_a_rebuild_started_through_the_api_runs_each_family_as_a_pipeline_deployment_run(
    server: PrefectServer,  # noqa: F811  (fixture)
    api: httpx.Client,
    deployments: dict[str, dict[str, Any]],  # noqa: F811  (fixture)
    engine: docker.DockerClient,
    families: list[str],  # noqa: F811  (fixture)
    tmp_path: Path,
) -> None:
    families_file = tmp_path / "families.yaml"
    families_file.write_text(
        "families:\n" + "".join(f"  - family: {name}\n    targets: [docker]\n" for name in families)
    )
    rebuild = deployments["weekly-rebuild"]
    created = api.post(
        f"/deployments/{rebuild['id']}/create_flow_run",
        json={"name": f"team-{uuid.uuid4().hex[:6]}", "parameters": {"families_file": str(families_file)}},
    )
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]

    machines = [tmp_path / "machine-1", tmp_path / "machine-2"]
    with ExitStack() as workers:
        logs = []
        for machine in machines:
            machine.mkdir()
            logs.append(workers.enter_context(process_worker(server, machine)))
        state = wait_for_final_state(api, run_id, timeout=1500)
    worker_logs = "\n".join(log.read_text()[-3000:] for log in logs)
    assert state["type"] == "COMPLETED", f"{state}\n{worker_logs}"

    run = api.get(f"/flow_runs/{run_id}").json()
    summary = run_result(api, run_id)
    assert [row["family"] for row in summary] == families
    children = api.post("/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}}).json()
    by_name = {child["name"]: child for child in children}
    for row, family in zip(summary, families, strict=True):
        assert row["result"] == "staged", row
        assert row["pipeline run"] == f"{family}-docker-of-rebuild-{run['name']}", row
        child = by_name[row["pipeline run"]]
        assert child["state_type"] == "COMPLETED"
        assert child["deployment_id"] == deployments["image-pipeline"]["id"]
        assert child["parameters"]["family"] == family
        assert engine.images.get(f"{family}:staging").id.startswith("sha256:")
        result = artifact(api, child["id"], f"{family}-pipeline-result")
        assert json.loads(result["data"])[0]["stage"] == "staging"
    states = {machine.name: list((machine / "state").glob("**/*")) for machine in machines}
    assert any(states.values()), states  # the pipelines kept their state on the worker that ran them


def artifact(api: httpx.Client, flow_run_id: str, key: str) -> dict[str, Any]:
    found = api.post(
        "/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}, "key": {"any_": [key]}}},
    ).json()
    assert found, f"no artifact {key} on run {flow_run_id}"
    return dict(found[0])


def run_result(api: httpx.Client, run_id: str) -> list[dict[str, str]]:
    """The rows of the rebuild's summary table (the result itself stays on the worker)."""
    table = artifact(api, run_id, "rebuild-summary")
    rows: list[dict[str, str]] = json.loads(table["data"])
    return rows

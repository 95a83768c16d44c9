"""A team's bakery on this machine, end to end (issue 12): PostgreSQL as a non-root user in a temporary
directory on 127.0.0.1 and `prefect server start` on it (scripts/team-up.sh), two process workers with their
own working directory and BAKERY_STATE_DIR (two "machines"), and a registry (Debian's docker-registry).

A weekly-rebuild run over two families, started through the API, fans out one image-pipeline run per family;
each worker runs one family's pipeline (the first worker, at most two runs at once, takes the rebuild and one
pipeline; the second starts once that pipeline runs and takes the other). Both families end `staging` in the
registry. Then, with the first worker gone, a run of the promote deployment for the family it built is taken
by the other worker and promotes it to production from the registry alone.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tasks.targets.docker.image_registry import parse_registry
from tasks.targets.docker.registry_stages import RegistryStages
from tests.e2e.deployment_fixtures import process_worker, wait_for_final_state
from tests.e2e.team_fixtures import deployments, families, server  # noqa: F401  (fixtures)
from tests.e2e.test_rebuild_fan_out import run_result
from tests.support.servers import PrefectServer

pytestmark = pytest.mark.e2e
pytest_plugins = ("tests.e2e.deployment_fixtures",)  # api (server and deployments: team_fixtures)
FAMILY_PREFIX = "teamreg"  # team_fixtures.families
POLL = {"PREFECT_WORKER_QUERY_SECONDS": "2"}


def children(api: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api.post(
        "/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}}
    ).json()
    return found


def wait_until(what: str, check: Any, timeout: float, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n" + "\n".join(log.read_text()[-3000:] for log in logs))


def submitted_by(log: Path, flow_run_id: str) -> bool:
    return f"submitting flow run '{flow_run_id}'" in log.read_text()


def test_a_team_rebuilds_into_a_registry_on_two_workers_and_promotes_from_the_other(
    server: PrefectServer,  # noqa: F811  (fixture)
    api: httpx.Client,
    deployments: dict[str, dict[str, Any]],  # noqa: F811  (fixture)
    registry_host: str,
    families: list[str],  # noqa: F811  (fixture)
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    families_file = tmp_path / "families.yaml"
    families_file.write_text(
        "families:\n"
        + "".join(f"  - family: {name}\n    targets: [docker]\n    registry: {registry_host}\n" for name in families)
    )
    machines = [tmp_path / "machine-1", tmp_path / "machine-2"]
    for machine in machines:
        machine.mkdir()
    rebuild = api.post(
        f"/deployments/{deployments['weekly-rebuild']['id']}/create_flow_run",
        json={"name": f"team-{uuid.uuid4().hex[:6]}", "parameters": {"families_file": str(families_file)}},
    )
    assert rebuild.status_code == 201, rebuild.text
    rebuild_id = rebuild.json()["id"]

    with ExitStack() as first_worker, ExitStack() as second_worker:
        first_log = first_worker.enter_context(process_worker(server, machines[0], limit=2, **POLL))
        logs = [first_log]
        taken = wait_until(
            "the first worker takes the rebuild and one pipeline",
            lambda: [c for c in children(api, rebuild_id) if submitted_by(first_log, c["id"])],
            600,
            logs,
        )
        second_log = second_worker.enter_context(process_worker(server, machines[1], **POLL))
        logs.append(second_log)
        state = wait_for_final_state(api, rebuild_id, timeout=1800)
        assert state["type"] == "COMPLETED", f"{state}\n" + "\n".join(log.read_text()[-3000:] for log in logs)
        built = time.monotonic() - started

        pipelines = children(api, rebuild_id)
        assert sorted(c["parameters"]["family"] for c in pipelines) == families
        assert all(c["state_type"] == "COMPLETED" and c["parameters"]["registry"] == registry_host for c in pipelines)
        by_worker = [[c["parameters"]["family"] for c in pipelines if submitted_by(log, c["id"])] for log in logs]
        assert sorted(by_worker[0] + by_worker[1]) == families and by_worker[0] and by_worker[1], by_worker
        assert by_worker[0] == [taken[0]["parameters"]["family"]]
        assert [row["result"] for row in run_result(api, rebuild_id)] == ["staged", "staged"]
        stages = RegistryStages(parse_registry(registry_host), locks=tmp_path / "locks")
        staged = {}
        for family in families:
            staged[family] = stages.client.digest_of(family, "staging")
            assert staged[family] and stages.stage_of(staged[family], family) == "staging"
        assert all((machine / "state").is_dir() for machine in machines)  # each kept its runs' state

        # the first machine goes away; the other promotes the family the first one built
        first_worker.close()
        family = by_worker[0][0]
        promote = api.post(
            f"/deployments/{deployments['promote']['id']}/create_flow_run",
            json={
                "name": f"promote-{uuid.uuid4().hex[:6]}",
                "parameters": {"family": family, "to": "production", "force": True, "registry": registry_host},
            },
        )
        assert promote.status_code == 201, promote.text
        promote_id = promote.json()["id"]
        promoted = wait_for_final_state(api, promote_id, timeout=600)
        assert promoted["type"] == "COMPLETED", f"{promoted}\n{second_log.read_text()[-3000:]}"
        assert submitted_by(second_log, promote_id)

    assert stages.client.digest_of(family, "production") == staged[family]
    assert stages.client.digest_of(family, "latest") == staged[family]
    assert stages.stage_of(staged[family], family) == "production"
    history = stages.read_record(family)["history"]
    assert [h["stage"] for h in history] == ["testing", "staging", "production"]
    print(json.dumps({"rebuild_seconds": round(built), "total_seconds": round(time.monotonic() - started)}))

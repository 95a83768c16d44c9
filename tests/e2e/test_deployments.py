"""prefect.yaml against a real `prefect server start`: deploy, schedules, a run on a process worker, the UI form.

One server (UI on, temporary PREFECT_HOME, 127.0.0.1) for the module. The worker is started by the test and
stopped by its PID; scheduled deployments are paused before it starts so only the run we make executes.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import docker
import httpx
import pytest

from bench._servers import PREFECT, PrefectServer, running_prefect_server, stop_process
from tests.e2e.conftest import REPO, labelled_containers

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = REPO / "docs" / "ui-pipeline-form.png"
SCHEDULES = {
    "weekly-rebuild": {"cron": "0 4 * * 1", "timezone": "UTC"},
    "retention": {"cron": "30 3 * * *", "timezone": "UTC"},
    "sweep": {"cron": "0 * * * *", "timezone": "UTC"},
}


@pytest.fixture(scope="module")
def server() -> Iterator[PrefectServer]:
    with running_prefect_server(ui=True) as running:
        yield running


class RetryingTransport(httpx.HTTPTransport):
    """The server answers 503 while its SQLite database is busy (a loaded 2-core machine): retry a while."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(20):
            response = super().handle_request(request)
            if response.status_code != 503:
                return response
            response.close()
            time.sleep(min(0.25 * 2**attempt, 3))
        return super().handle_request(request)


@pytest.fixture(scope="module")
def api(server: PrefectServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, transport=RetryingTransport()) as client:
        yield client


def prefect(server: PrefectServer, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PREFECT, *args],
        cwd=REPO,
        env=server.client_env(BAKERY_CHECKOUT=str(REPO)),
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


def test_deploy_all_registers_the_deployments_with_their_schedules(deployments: dict[str, dict[str, Any]]) -> None:
    assert {"image-pipeline", "weekly-rebuild", "retention", "sweep"} <= set(deployments)
    for name, deployment in deployments.items():
        assert deployment["work_pool_name"] == "bakery-process", name
        schedules = [{k: s["schedule"].get(k) for k in ("cron", "timezone")} for s in deployment["schedules"]]
        assert schedules == ([SCHEDULES[name]] if name in SCHEDULES else []), name
    assert deployments["image-pipeline"]["schedules"] == []
    rebuild = deployments["weekly-rebuild"]
    assert rebuild["global_concurrency_limit"]["limit"] == 1
    assert rebuild["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    target = deployments["image-pipeline"]["parameter_openapi_schema"]["properties"]["target"]
    assert target["enum"] == ["docker", "aws"] and target["default"] == "docker"
    assert deployments["retention"]["entrypoint"] == "flows/retention.py:image_retention"
    assert deployments["sweep"]["entrypoint"] == "flows/sweep.py:sweep_leftovers"


def test_pipeline_run_started_through_the_api_completes_on_a_process_worker(
    server: PrefectServer,
    api: httpx.Client,
    deployments: dict[str, dict[str, Any]],
    engine: docker.DockerClient,
    tmp_path: Path,
) -> None:
    for deployment in deployments.values():
        if deployment["schedules"]:
            assert api.patch(f"/deployments/{deployment['id']}", json={"paused": True}).status_code == 204
    pipeline = deployments["image-pipeline"]
    created = api.post(f"/deployments/{pipeline['id']}/create_flow_run", json={"name": f"e2e-{uuid.uuid4().hex[:6]}"})
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    assert created.json()["parameters"] == {"target": "docker"}

    log = tmp_path / "worker.log"
    env = server.client_env(BAKERY_CHECKOUT=str(REPO), BAKERY_STATE_DIR=str(tmp_path / "state"))
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "bakery-process", "--type", "process"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        state = wait_for_final_state(api, run_id, timeout=600)
    finally:
        stop_process(worker)
    assert state["type"] == "COMPLETED", f"{state}\n{log.read_text()[-4000:]}"

    run = api.get(f"/flow_runs/{run_id}").json()
    artifacts = api.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()
    keys = {a["key"] for a in artifacts if a["key"]}
    assert {"app-base-manifest", "app-base-verification", "app-base-build-progress"} <= keys, keys
    progress = [a for a in artifacts if a["type"] == "progress"]
    assert progress and progress[0]["data"] == 100.0
    manifest = next(a for a in artifacts if a["key"] == "app-base-manifest")
    assert "docker.base" in str(manifest["data"])
    assert run["work_pool_name"] == "bakery-process"
    assert labelled_containers(engine, f"bakery.run-id={run_id}") == []  # torn down


def wait_for_final_state(api: httpx.Client, run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state: dict[str, Any] = api.get(f"/flow_runs/{run_id}").json()["state"]
        if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return state
        if time.monotonic() > deadline:
            return state
        time.sleep(2)


def test_ui_shows_the_pipeline_form_with_the_target_choice(
    server: PrefectServer, deployments: dict[str, dict[str, Any]]
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; scripts/setup.sh does it)")
    from playwright.sync_api import Route, sync_playwright

    blocked: list[str] = []

    def loopback_only(route: Route) -> None:
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    pipeline = deployments["image-pipeline"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.route("**/*", loopback_only)
            page.goto(f"{server.ui_url}/deployments/deployment/{pipeline['id']}/run", wait_until="networkidle")
            page.get_by_text("target (Optional)").wait_for(timeout=30_000)
            for name in ("family", "version", "spec", "keep_on_failure"):
                assert page.get_by_text(f"{name} (Optional)", exact=True).count() == 1, name
            target = page.locator(".schema-form-property").filter(has_text="target (Optional)").first
            choice = target.locator(".p-select-button__control")
            assert choice.inner_text().strip() == "docker"
            choice.press(" ")  # opens the select's options (a plain click only focuses it, headless)
            options = page.get_by_role("option")
            options.filter(has_text="aws").first.wait_for(timeout=10_000)
            texts = [t.strip() for t in options.all_inner_texts()]
            assert "docker" in texts and "aws" in texts, texts
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
    assert blocked == []

"""prefect.yaml against a real `prefect server start`: deploy, schedules, a run on a process worker, the UI form.

One server (UI on, temporary PREFECT_HOME, 127.0.0.1) for the module. The worker is started by the test and
stopped by its PID; scheduled deployments are paused before it starts so only the run we make executes.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import docker
import httpx
import pytest

from tests.e2e.conftest import REPO
from tests.e2e.deployment_fixtures import process_worker, wait_for_final_state
from tests.support import containers_of, new_family, remove_family
from tests.support.servers import PrefectServer

pytestmark = pytest.mark.e2e
pytest_plugins = ("tests.e2e.deployment_fixtures",)  # server, api, deployments
CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = REPO / "docs" / "ui-pipeline-form.png"
SCHEDULES = {
    "weekly-rebuild": {"cron": "0 4 * * 1", "timezone": "UTC"},
    "retention": {"cron": "30 3 * * *", "timezone": "UTC"},
    "sweep": {"cron": "0 * * * *", "timezone": "UTC"},
}


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
    pipeline = deployments["image-pipeline"]
    family = new_family("e2e-deployed")  # its own: never the user's app-base tags
    created = api.post(
        f"/deployments/{pipeline['id']}/create_flow_run",
        json={"name": f"e2e-{uuid.uuid4().hex[:6]}", "parameters": {"family": family}},
    )
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    assert created.json()["parameters"] == {"target": "docker", "family": family}  # the deployment's default too

    try:
        with process_worker(server, tmp_path) as log:
            state = wait_for_final_state(api, run_id, timeout=600)
    finally:
        remove_family(engine, family)
    assert state["type"] == "COMPLETED", f"{state}\n{log.read_text()[-4000:]}"

    run = api.get(f"/flow_runs/{run_id}").json()
    artifacts = api.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()
    keys = {a["key"] for a in artifacts if a["key"]}
    assert {f"{family}-manifest", f"{family}-verification", f"{family}-build-progress"} <= keys, keys
    progress = [a for a in artifacts if a["type"] == "progress"]
    assert progress and progress[0]["data"] == 100.0
    manifest = next(a for a in artifacts if a["key"] == f"{family}-manifest")
    assert "docker.base" in str(manifest["data"])
    assert run["work_pool_name"] == "bakery-process"
    assert containers_of(engine, run_id=run_id) == []  # torn down


def test_ui_shows_the_pipeline_form_with_the_target_choice(
    server: PrefectServer, deployments: dict[str, dict[str, Any]]
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh --test installs it)")
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

"""Alerts end to end: `bake alerts apply` on a real `prefect server start` (its triggers and actions services
running), a webhook receiver on 127.0.0.1, then a failed image-pipeline run and a stale-production event:
each reaches the receiver within a bounded time."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.e2e.conftest import BAKE, REPO
from tests.support.servers import PREFECT, PrefectServer, running_prefect_server

pytestmark = pytest.mark.e2e
DELIVERY_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def server() -> Iterator[PrefectServer]:
    with running_prefect_server() as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A tiny webhook receiver on 127.0.0.1: every JSON body posted to it, in order."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            received.append(json.loads(self.rfile.read(length) or b"{}"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", received
    finally:
        httpd.shutdown()
        httpd.server_close()


def wait_for(received: list[dict[str, Any]], text: str) -> dict[str, Any]:
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while time.monotonic() < deadline:
        for message in list(received):
            if text in message.get("subject", "") + message.get("body", ""):
                return message
        time.sleep(1)
    raise AssertionError(f"no notification mentioning {text!r} within {DELIVERY_TIMEOUT:.0f} s: {received}")


def python(server: PrefectServer, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=server.client_env(), capture_output=True, text=True, timeout=300
    )


def test_failed_pipeline_run_and_stale_production_reach_the_webhook(
    server: PrefectServer, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = receiver
    applied = subprocess.run(
        [BAKE, "--json", "alerts", "apply", "--notify-block", "t-alerts-hook"],
        cwd=REPO,
        env=server.client_env(BAKERY_ALERT_WEBHOOK_URL=url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert applied.returncode == 0, applied.stderr[-3000:]
    names = sorted(a["name"] for a in json.loads(applied.stdout)["automations"])
    assert names == ["bakery-production-stale", "bakery-run-failed"]
    again = subprocess.run(  # idempotent: replaced by name, not duplicated
        [BAKE, "alerts", "apply", "--notify-block", "t-alerts-hook"],
        cwd=REPO,
        env=server.client_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    listed = subprocess.run(
        [PREFECT, "automation", "ls"],
        env=server.client_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.stdout.count("bakery-run-failed") == 1, listed.stdout

    # The real image-pipeline flow with an input that fails at run time (no such template directory).
    failed = python(
        server,
        "from flows.pipeline import image_pipeline\n"
        "image_pipeline(family='t-alerts-fail', template_dir='/nonexistent/t-alerts', return_state=True)",
    )
    assert failed.returncode == 0, failed.stderr[-3000:]
    message = wait_for(received, "image-pipeline")
    assert "Failed" in message["subject"] and "/nonexistent/t-alerts" in message["body"]

    # The stale-production event as the weekly rebuild emits it.
    stale = python(
        server,
        "from datetime import UTC, datetime\n"
        "from flows.rebuild import emit_stale_production\n"
        "from tasks.rebuild import FamilySummary\n"
        "s = FamilySummary(family='t-alerts-old', target='docker', result='failed', now=datetime.now(UTC))\n"
        "s.production, s.production_age_days = 't-alerts-old:1.0', 123.4\n"
        "emit_stale_production(s)\n",
    )
    assert stale.returncode == 0, stale.stderr[-3000:]
    message = wait_for(received, "t-alerts-old")
    assert "123.4 days" in message["body"] and "stale production" in message["subject"]

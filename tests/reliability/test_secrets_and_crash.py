"""Secrets never reach a log line, an artifact or a report; a SIGKILLed run is cleaned up by the sweep."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path

import docker
import pytest

from tests.e2e.conftest import BAKE, REPO, Bake
from tests.reliability.conftest import IMAGE_FAMILY, Leaks
from tests.support import wait_for_command_in_test_container

pytestmark = pytest.mark.e2e
TARGET = "docker"


def everything_prefect_recorded() -> str:
    """Flow run parameters, logs and artifacts of every run on the session's server, as one text."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        logs = client.read_logs()
        artifacts = client.read_artifacts()
    parts = [json.dumps(r.parameters, default=str) for r in runs]
    parts += [log.message for log in logs]
    parts += [json.dumps(a.data, default=str) + str(a.description) for a in artifacts]
    return "\n".join(parts)


def files_text(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


def watch_key_files(root: Path, stop: threading.Event, seen: dict[str, int]) -> None:
    while not stop.is_set():
        for path in root.rglob("*"):
            with contextlib.suppress(FileNotFoundError):
                seen[str(path)] = stat.S_IMODE(path.stat().st_mode)
        time.sleep(0.05)


def test_secrets_stay_out_of_logs_artifacts_and_reports(
    session_bake: Bake, leaks: Leaks, tmp_path: Path, engine: docker.DockerClient
) -> None:
    """Cloud credentials and a registry password reach no log, artifact, report or flow parameter; the
    run's private key is 0600 in a 0700 directory, gone afterwards."""
    aws_secret, registry_password = (f"S3cr3t-{secrets.token_hex(12)}" for _ in range(2))
    version = f"0.0.0-sec.{uuid.uuid4().hex[:6]}"
    env = {
        **session_bake.env(),
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": aws_secret,
        "BAKERY_KEYS_DIR": str(tmp_path / "bakery-keys"),
    }
    keys_root = tmp_path / "bakery-keys"
    stop, seen = threading.Event(), dict[str, int]()
    watcher = threading.Thread(target=watch_key_files, args=(keys_root, stop, seen), daemon=True)
    watcher.start()
    try:
        result = subprocess.run(
            [
                BAKE,
                "--json",
                "run",
                "--family",
                IMAGE_FAMILY,
                "--version",
                version,
                "--var",
                "registry_username=bob",
                "--var",
                f"registry_password={registry_password}",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        stop.set()
        watcher.join()
    try:
        assert result.returncode == 0, result.stderr[-3000:]
        recorded = "\n".join(
            [result.stdout, result.stderr, files_text(session_bake.state_dir), everything_prefect_recorded()]
        )
        assert "bob" in recorded  # the non-secret variable did reach the record: the check can see
        for secret in (aws_secret, registry_password):
            assert secret not in recorded
        private = [p for p in seen if p.endswith("id_ed25519")]
        assert private, "the run's private key was never seen"
        assert {seen[p] for p in private} == {0o600}
        assert {seen[str(Path(p).parent)] for p in private} == {0o700}
        assert not any(keys_root.iterdir())  # the per-run key directory is gone
        leaks.assert_none()
    finally:
        engine.images.remove(f"{IMAGE_FAMILY}:{version}")


def test_sigkill_during_verify_then_sweep_leaves_nothing(
    session_bake: Bake, built_image: str, leaks: Leaks, engine: docker.DockerClient, tmp_path: Path
) -> None:
    """SIGKILL runs no hook: the container and key stay until `bake sweep` removes them; nothing is staged.

    The run is killed while its slow check runs (seen in the container, not guessed by a sleep). Its TTL is
    one second, so the sweep removes it as expired: a ``--max-age 0s`` sweep would also take every other
    suite's running containers and keys on this engine."""
    spec = tmp_path / "slow.yaml"
    spec.write_text("command:\n  slow:\n    exec: sleep 61\n    exit-status: 0\n    timeout: 90000\n")
    staged_before = [i.id for i in engine.images.list(name=IMAGE_FAMILY) if f"{IMAGE_FAMILY}:staging" in i.tags]
    proc = subprocess.Popen(
        [BAKE, "test", "--image", built_image, "--spec", str(spec), "--ttl", "1s"],
        cwd=REPO,
        env=session_bake.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_command_in_test_container(
            engine,
            "sleep 61",
            family=IMAGE_FAMILY,
            alive=lambda: "" if proc.poll() is None else f"the run ended ({proc.returncode}) before its check ran",
        )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert leaks.containers(), "SIGKILL runs no hook: the container must still be there before the sweep"
    sweep = session_bake("sweep", "--target", "docker", "--apply")
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    leaks.assert_none()
    staged_after = [i.id for i in engine.images.list(name=IMAGE_FAMILY) if f"{IMAGE_FAMILY}:staging" in i.tags]
    assert staged_after == staged_before

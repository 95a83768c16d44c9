"""A fault at each stage of a Docker run: the original error shows, the exit code is the contract's,
and afterwards Docker itself shows no container of the run and no private key is left.

Faults are injected at seams (monkeypatch on the target, a broken template copy, a signal), never
through switches in product code.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from tasks.targets.docker.instances import DockerTarget
from tests.e2e.conftest import BAKE, REPO, Bake
from tests.reliability.conftest import IMAGE_FAMILY, Leaks
from tests.support import wait_for_command_in_test_container

pytestmark = pytest.mark.e2e
TARGET = "docker"

SPEC = str(REPO / "packer/test/image_spec.yaml")


def staged(engine: docker.DockerClient) -> str | None:
    try:
        return str(engine.images.get(f"{IMAGE_FAMILY}:staging").id)
    except docker.errors.ImageNotFound:
        return None


def last_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The final line `bake` printed. (In-process runs share Prefect's log handlers across tests, so
    "no traceback" is asserted by the subprocess scenarios, which see exactly what a user sees.)"""
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_packer_fails_mid_build(
    in_process: Callable[..., int], leaks: Leaks, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A provisioner fails: packer's builder container goes (-on-error=cleanup), exit 1, packer's error shown."""
    templates = tmp_path / "packer"
    shutil.copytree(REPO / "packer", templates)
    build = templates / "build.pkr.hcl"
    build.write_text(
        build.read_text().replace('"sudo install -d -m 0755 /run/sshd",', '"echo injected-fault >&2; exit 7",', 1)
    )
    code = in_process("run", "--family", IMAGE_FAMILY, "--version", "0.0.0-broken", "--template-dir", str(templates))
    assert code == 1
    line = last_line(capsys)
    assert "packer build failed" in line
    assert "exit status: 7" in line or "exit status 7" in line or "injected-fault" in line
    leaks.assert_none()


def test_launch_fails(
    in_process: Callable[..., int],
    built_image: str,
    leaks: Leaks,
    engine: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The container starts but preparing it fails: launch removes it itself, retries, then exit 1."""
    before = staged(engine)

    def broken_exec(self: DockerTarget, container: Any, script: str, environment: Any = None) -> str:
        raise RuntimeError("injected: docker exec failed")

    monkeypatch.setattr(DockerTarget, "_exec", broken_exec)
    code = in_process("test", "--image", built_image, "--spec", SPEC)
    assert code == 1
    assert "failed: RuntimeError: injected: docker exec failed" in last_line(capsys)
    assert staged(engine) == before
    leaks.assert_none()


def test_ssh_wait_times_out(
    in_process: Callable[..., int],
    built_image: str,
    leaks: Leaks,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """sshd never answers: the wait is bounded by --ssh-timeout, says why, and the container goes."""
    real_endpoint = DockerTarget.endpoint

    def unreachable(self: DockerTarget, instance: Any, run: Any) -> Any:
        endpoint = real_endpoint(self, instance, run)
        self._exec(self.engine.containers.get(instance.id), "systemctl mask --now ssh.service ssh.socket")
        return endpoint

    monkeypatch.setattr(DockerTarget, "endpoint", unreachable)
    started = time.monotonic()
    code = in_process("test", "--image", built_image, "--spec", SPEC, "--ssh-timeout", "5s")
    assert code == 1
    assert time.monotonic() - started < 60
    line = last_line(capsys)
    assert "gave up after" in line
    assert any(kind in line for kind in ("connection refused", "closed before", "timed out"))
    leaks.assert_none()


def test_verify_fails(
    session_bake: Bake, built_image: str, leaks: Leaks, engine: docker.DockerClient, tmp_path: Path
) -> None:
    """A failing check, as a user sees it: exit 1, the check named with expected vs found, no traceback."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("service:\n  nginx:\n    running: false\n")
    before = staged(engine)
    result = session_bake("test", "--image", built_image, "--spec", str(spec))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "service nginx running (expected false, found true" in result.stderr.strip().splitlines()[-1]
    assert staged(engine) == before
    leaks.assert_none()


def test_ssh_connection_drops_mid_check(
    in_process: Callable[..., int],
    built_image: str,
    leaks: Leaks,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A check kills the session's own sshd: the run fails cleanly instead of hanging."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "command:\n"
        "  drop the connection:\n"
        "    exec: \"pkill -KILL -f 'sshd: bakery' ; sleep 5\"\n"
        "    exit-status: 0\n"
        "    timeout: 20000\n"
    )
    started = time.monotonic()
    code = in_process("test", "--image", built_image, "--spec", str(spec))
    assert code == 1
    assert time.monotonic() - started < 90
    assert "drop the connection" in last_line(capsys) or "ssh" in last_line(capsys)
    leaks.assert_none()


def test_teardown_fails_once_and_is_retried(
    in_process: Callable[..., int],
    built_image: str,
    leaks: Leaks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Removing the container fails once: the teardown task retries it, the run passes, nothing is left."""
    calls: list[str] = []
    real_teardown = DockerTarget.teardown

    def flaky(self: DockerTarget, instance: Any) -> None:
        calls.append(instance.id)
        if len(calls) == 1:
            raise RuntimeError("injected: engine busy")
        real_teardown(self, instance)

    monkeypatch.setattr(DockerTarget, "teardown", flaky)
    assert in_process("test", "--image", built_image, "--spec", SPEC) == 0
    assert len(calls) == 2
    leaks.assert_none()


def launch_then(first: str, then: str) -> Callable[[DockerTarget, Any, Any], Any]:
    """``DockerTarget.launch``, then ``first`` in the new container (waited for) and ``then`` (left running):
    a seam that changes the booting instance. Its own failure (systemd still booting) must not leak the
    container it was given: a failed launch is not a crash, no hook removes it."""
    real_launch = DockerTarget.launch

    def launch(self: DockerTarget, image: Any, run: Any) -> Any:
        instance = real_launch(self, image, run)
        try:
            container = self.engine.containers.get(instance.id)
            self._exec(container, first)
            container.exec_run(["/bin/sh", "-c", then], detach=True)
        except BaseException:
            self.teardown(instance)
            raise
        return instance

    return launch


def test_sshd_late_by_20s_still_passes(
    in_process: Callable[..., int],
    built_image: str,
    leaks: Leaks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sshd comes up 20 s after the container: the bounded SSH wait gets in, the run passes."""
    slow_sshd = launch_then(
        "systemctl mask --now ssh.service", "sleep 20; systemctl unmask ssh.service; systemctl start ssh.service"
    )
    monkeypatch.setattr(DockerTarget, "launch", slow_sshd)
    started = time.monotonic()
    assert in_process("test", "--image", built_image, "--spec", SPEC, "--ssh-timeout", "60s") == 0
    assert time.monotonic() - started >= 20
    leaks.assert_none()


def test_logins_turned_away_while_booting_are_retried(
    in_process: Callable[..., int],
    built_image: str,
    leaks: Leaks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Boot not finished when sshd answers: pam_nologin turns the login away (sshd sends /run/nologin's
    text, then hangs up) for 8 s; the run retries and passes. (CI, two pipelines booting at once: one was
    failed as "authentication failed" with a good key.) The seam keeps /run/nologin in place for 8 s,
    rewriting it in case systemd-user-sessions removes it meanwhile, then removes it as the end of boot does."""
    still_booting = launch_then(
        "echo 'System is booting up.' > /run/nologin",
        "for i in $(seq 40); do echo 'System is booting up.' > /run/nologin; sleep 0.2; done; rm -f /run/nologin",
    )
    monkeypatch.setattr(DockerTarget, "launch", still_booting)
    started = time.monotonic()
    assert in_process("test", "--image", built_image, "--spec", SPEC, "--ssh-timeout", "60s") == 0
    assert time.monotonic() - started >= 8
    leaks.assert_none()


SLOW_CHECK_SECONDS = 45


def sigterm_during_a_check(
    session_bake: Bake, built_image: str, engine: docker.DockerClient, spec: Path
) -> tuple[float, int, str]:
    """`bake test` with one slow check, SIGTERMed while that check runs (seen in the container, not
    guessed); returns the seconds from the signal to the exit, the exit code and stderr."""
    spec.write_text(
        f"command:\n  slow:\n    exec: sleep {SLOW_CHECK_SECONDS}\n    exit-status: 0\n    timeout: 90000\n"
    )
    proc = subprocess.Popen(
        [BAKE, "test", "--image", built_image, "--spec", str(spec)],
        cwd=REPO,
        env=session_bake.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_command_in_test_container(  # in the verify step: the slow check runs
            engine,
            f"sleep {SLOW_CHECK_SECONDS}",
            family=IMAGE_FAMILY,
            alive=lambda: "" if proc.poll() is None else f"the run ended ({proc.returncode}) before its check ran",
        )
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _, stderr = proc.communicate(timeout=SLOW_CHECK_SECONDS + 60)
        seconds = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    return seconds, proc.returncode, stderr


def test_sigterm_during_verify_tears_down(
    session_bake: Bake, built_image: str, leaks: Leaks, engine: docker.DockerClient, tmp_path: Path
) -> None:
    """SIGTERM (a worker stopping, a CI job cancelled) while a check runs: the run exits non-zero and its
    container and key are removed."""
    sigterm_during_a_check(session_bake, built_image, engine, tmp_path / "slow.yaml")
    leaks.assert_none()


def test_sigterm_during_verify_exits_promptly(
    session_bake: Bake, built_image: str, leaks: Leaks, engine: docker.DockerClient, tmp_path: Path
) -> None:
    """SIGTERM while a check runs: the run stops within 20 s, not when the check ends, says why in its last
    line and exits 143 (128 + SIGTERM)."""
    seconds, returncode, stderr = sigterm_during_a_check(session_bake, built_image, engine, tmp_path / "slow.yaml")
    assert seconds < 20, f"exited {seconds:.0f} s after SIGTERM (the check takes {SLOW_CHECK_SECONDS} s)"
    assert returncode == 143, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == "bake test: terminated by SIGTERM"
    assert "Traceback" not in stderr
    leaks.assert_none()

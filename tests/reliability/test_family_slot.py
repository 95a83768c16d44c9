"""A killed run never blocks its family (issue 11, item 1).

Run A of a family holds the family's build slot (the global concurrency limit ``bakery-family-<family>``)
in a long provisioner; run B of the same family starts and waits, saying so (which family, which run holds
it, in which state, since when, how to free it); A is SIGKILLed (its whole process group: packer, and
the temporary Prefect server when there is one). B must then go ahead by itself and complete. Before,
B waited for Prefect's lease to run out (5 minutes) with a running server, and for ever without one
(the lease lived in the dead temporary server's memory while ``active_slots`` stayed 1 in the database).

Both modes: the session's Prefect server (``PREFECT_API_URL``), and no ``PREFECT_API_URL`` at all (each
`bake` starts its own temporary server on one Prefect home, as a user's shell does).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.e2e.conftest import BAKE, REPO, Bake
from tests.support import remove_images_of

pytestmark = pytest.mark.e2e
TARGET = "docker"

# A template set that builds in seconds from the local base image, holding the slot as long as asked.
TINY_TEMPLATE = """
variable "hold_seconds" {
  type    = string
  default = "0"
}

source "docker" "tiny" {
  image  = "bakery/debian:bookworm"
  pull   = false
  commit = true
}

build {
  sources = ["source.docker.tiny"]

  provisioner "shell" {
    inline = ["sleep ${var.hold_seconds}"]
  }
}
"""


@pytest.fixture
def tiny(tmp_path: Path, engine: docker.DockerClient) -> Iterator[tuple[str, Path]]:
    """A family of its own and the tiny template; the family's images and Packer's killed builder go after."""
    family = f"slots-slot-{uuid.uuid4().hex[:6]}"
    templates = tmp_path / "tiny"
    templates.mkdir()
    (templates / "build.pkr.hcl").write_text(TINY_TEMPLATE)
    yield family, templates
    for container in engine.containers.list(all=True, ignore_removed=True):
        # the killed run's Packer builder: its /packer-files is Packer's temporary directory, which this
        # test's runs keep below its own tmp_path (start_build) — another suite's builders are not touched
        mounts = container.attrs.get("Mounts") or []
        sources = [m.get("Source") or "" for m in mounts if m.get("Destination") == "/packer-files"]
        if any(Path(source).is_relative_to(tmp_path) for source in sources):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
    remove_images_of(engine, family)


def start_build(
    env: dict[str, str], family: str, templates: Path, version: str, hold: int, log: Path
) -> subprocess.Popen[bytes]:
    argv = ["build", "--family", family, "--template-dir", str(templates), "--version", version]
    packer_tmp = log.parent / "packer-tmp"  # Packer's builder mounts its directory below: the fixture finds it
    packer_tmp.mkdir(exist_ok=True)
    with open(log, "w") as out:
        return subprocess.Popen(
            [BAKE, *argv, "--var", f"hold_seconds={hold}"],
            cwd=REPO,
            env={**env, "PACKER_TMP_DIR": str(packer_tmp)},
            stdout=subprocess.DEVNULL,
            stderr=out,
            start_new_session=True,
        )


def wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while text not in log.read_text():
        assert proc.poll() is None, f"exited {proc.returncode} before saying {text!r}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"never said {text!r}:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def killed_holder_then_next_run(env: dict[str, str], family: str, templates: Path, tmp_path: Path) -> str:
    """A holds the slot; B waits and says so; A is SIGKILLed; B completes. Returns B's stderr."""
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    holder = start_build(env, family, templates, "1.0", 900, a_log)
    waiter = None
    try:
        wait_for(a_log, "holding the build slot of family", holder, 300)
        waiter = start_build(env, family, templates, "2.0", 0, b_log)
        wait_for(b_log, f"family {family} is busy", waiter, 180)
        kill_group(holder)
        killed_at = time.monotonic()
        code = waiter.wait(timeout=150)  # Prefect's own lease alone: 300 s, or never
        waited = time.monotonic() - killed_at
    finally:
        kill_group(holder)
        if waiter is not None and waiter.poll() is None:
            kill_group(waiter)
    said = b_log.read_text()
    assert code == 0, said[-4000:]
    assert "gave back the build slot of family" in said and "is gone" in said, said[-4000:]
    busy = next(line for line in said.splitlines() if f"family {family} is busy" in line)
    assert "Running" in busy and "bake sweep --apply" in busy and "since" in busy, busy
    print(f"the next run completed {waited:.0f} s after the holder was killed; it said: {busy}")
    return said


def test_killed_holder_with_a_running_server(session_bake: Bake, tiny: tuple[str, Path], tmp_path: Path) -> None:
    """With a Prefect server: run A of a family SIGKILLed while holding the build slot; run B, waiting and
    saying who holds it, gives the slot back and completes (no 5-minute lease wait)."""
    family, templates = tiny
    killed_holder_then_next_run(session_bake.env(), family, templates, tmp_path)


def test_killed_holder_without_a_server(tiny: tuple[str, Path], tmp_path: Path, state_dir: Path) -> None:
    """Without PREFECT_API_URL (temporary servers on one Prefect home): run A SIGKILLed while holding the
    build slot, its temporary server with it; run B gives the slot back and completes (before: for ever)."""
    family, templates = tiny
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "BAKERY_STATE_DIR": str(state_dir),
        # Prefect's temporary server in each command, the mode this test is about: without it the first
        # command started bakery's local server under the state dir and left it running after the suite
        "BAKERY_LOCAL_SERVER": "off",
        # a temporary server on a loaded 2-core machine may need more than Prefect's default to come up
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    first = subprocess.run(  # makes the Prefect home's database once, before two runs share it
        [BAKE, "sweep", "--target", "docker"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stderr[-3000:]
    killed_holder_then_next_run(env, family, templates, tmp_path)


def test_sweep_gives_back_a_killed_holders_slot(
    session_bake: Bake, tiny: tuple[str, Path], tmp_path: Path, prefect_api_url: str
) -> None:
    """`bake sweep` lists the build slot of a SIGKILLed run (dry run: would give it back) and `--apply`
    gives it back: the family's limit shows no active slot, with nobody waiting."""
    from tests.prefect_api import prefect_api

    family, templates = tiny
    a_log = tmp_path / "a.log"
    holder = start_build(session_bake.env(), family, templates, "1.0", 900, a_log)
    try:
        wait_for(a_log, "holding the build slot of family", holder, 300)
    finally:
        kill_group(holder)
    api = prefect_api(prefect_api_url)
    assert api.get(f"/v2/concurrency_limits/bakery-family-{family}").json()["active_slots"] == 1

    dry = session_bake("sweep", "--target", "docker")
    assert dry.returncode == 0, dry.stderr[-3000:]
    line = next(x for x in dry.stdout.splitlines() if f"build slot of family {family}" in x)
    assert "give back" in line and "is gone" in line, line
    assert api.get(f"/v2/concurrency_limits/bakery-family-{family}").json()["active_slots"] == 1

    swept = session_bake("sweep", "--target", "docker", "--apply")
    assert swept.returncode == 0, swept.stderr[-3000:]
    line = next(x for x in swept.stdout.splitlines() if f"build slot of family {family}" in x)
    assert "given back" in line, line
    assert api.get(f"/v2/concurrency_limits/bakery-family-{family}").json()["active_slots"] == 0

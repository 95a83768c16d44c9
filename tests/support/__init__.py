"""Helpers the end-to-end tests, the reliability suite and the benchmarks share (one copy of each).

Docker: other suites may use the same engine at the same time, so a test names a family of its own
(:func:`new_family`), asserts only on what carries that family or its run id (:func:`containers_of`), and
removes what it made on every path (:func:`remove_family`), never anything else.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import docker

from tasks.targets.docker.client import container_names

# Labels a run puts on its test container (tasks/targets/docker/instances.py run_labels).
LABEL_RUN_ID = "bakery.run-id"
LABEL_FAMILY = "bakery.family"

T = TypeVar("T")


def new_family(prefix: str) -> str:
    """A family name no other test or suite uses: ``<prefix>-<6 hex>``."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def containers_of(engine: docker.DockerClient, *, family: str = "", run_id: str = "") -> list[str]:
    """Names of the containers (running or not) a run of ``family`` (or the run ``run_id``) made.

    One of the two is required: counting every bakery container of the engine would count other suites'."""
    if not family and not run_id:
        raise ValueError("containers_of needs a family or a run id: the engine is shared")
    labels = [f"{LABEL_FAMILY}={family}"] if family else []
    labels += [f"{LABEL_RUN_ID}={run_id}"] if run_id else []
    return sorted(container_names(engine, label=labels).values())


def remove_containers_of(engine: docker.DockerClient, family: str) -> list[str]:
    """Force-remove every container labelled with ``family``; their names."""
    removed = []
    for container in engine.containers.list(
        all=True, filters={"label": f"{LABEL_FAMILY}={family}"}, ignore_removed=True
    ):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)
            removed.append(container.name)
    return removed


def remove_images_of(engine: docker.DockerClient, family: str) -> None:
    """Force-remove every image tag ``family:*``."""
    for image in engine.images.list(name=family):
        for tag in image.tags:
            if tag.startswith(f"{family}:"):
                with contextlib.suppress(docker.errors.APIError):
                    engine.images.remove(tag, force=True)


def remove_family(engine: docker.DockerClient, family: str) -> None:
    """Remove what a test made for ``family``: its containers, then every image tagged ``family:*``."""
    remove_containers_of(engine, family)
    remove_images_of(engine, family)


# --- waiting for a phase -----------------------------------------------------------------------------------


def wait_for(
    probe: Callable[[], T | None],
    what: str,
    timeout: float = 180,
    interval: float = 0.2,
    alive: Callable[[], str] | None = None,
) -> T:
    """Poll ``probe`` until it returns something truthy and return that; fail naming ``what`` after
    ``timeout`` seconds, or as soon as ``alive`` (e.g. "is the run still going?") returns a reason not to wait."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        gone = alive() if alive else ""
        assert not gone, f"{what}: {gone}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(interval)


def processes_in(engine: docker.DockerClient, container_name: str) -> list[str]:
    """The command lines running in a container (from the engine, needing no tool inside it)."""
    try:
        top = engine.containers.get(container_name).top()
    except docker.errors.APIError:  # not there (yet), or no longer running
        return []
    column = (top.get("Titles") or []).index("CMD") if "CMD" in (top.get("Titles") or []) else -1
    return [row[column] for row in top.get("Processes") or []]


def wait_for_command_in_test_container(
    engine: docker.DockerClient,
    command: str,
    *,
    family: str = "",
    run_id: str = "",
    timeout: float = 300,
    alive: Callable[[], str] | None = None,
) -> str:
    """Wait until a run's test container (of ``family`` or ``run_id``) runs ``command`` — a spec's check,
    so the run is in its verify step — and return the container's name."""

    def probe() -> str | None:
        for name in containers_of(engine, family=family, run_id=run_id):
            if any(command in line for line in processes_in(engine, name)):
                return name
        return None

    return wait_for(probe, f"no test container of {family or run_id} running {command!r}", timeout, alive=alive)


# --- a process killed mid-way ------------------------------------------------------------------------------


def first_line_then_sigkill(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Start ``argv`` (a session of its own), read the first line it prints, then SIGKILL it (none of its
    hooks or ``finally`` blocks run): that line, stripped. Fails with its stderr if it printed none."""
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line, process.stderr.read() if process.stderr else ""
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    return line

"""Fixtures for the reliability suite: real engine, Prefect server and moto server; leaks counted from
Docker and the EC2 API themselves, never from bakery's own bookkeeping.

Every scenario gets two JUnit properties for ``scripts/reliability_report.py``: ``scenario`` (the first
line of the test's docstring, and the parametrized case's ``description`` or name) and ``target``
(the module's ``TARGET``).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from tasks.request import keys_root
from tests.conftest import ec2_inventory
from tests.e2e.conftest import Bake
from tests.support import LABEL_FAMILY, new_family, remove_containers_of, remove_family

# The suite's image family, its own per session: another session on the same engine (another checkout's
# suite, a crashed earlier run) never shares its containers, tags or stages.
IMAGE_FAMILY = new_family("reliability")


def scenario_of(item: pytest.Item) -> str:
    """One line: the first paragraph of the test's docstring, or what its parametrized case is (the case's
    ``description``; a plain string case after the docstring's lead-in, ``Bad request: <case>``)."""
    function = getattr(item, "function", None)
    doc = (inspect.getdoc(function) or "") if function else ""
    line = " ".join(doc.split("\n\n")[0].split())
    if not line:
        line = getattr(item, "originalname", item.name).removeprefix("test_").replace("_", " ")
    callspec = getattr(item, "callspec", None)
    for value in callspec.params.values() if callspec else ():
        described = getattr(value, "description", None)
        if isinstance(described, str):
            return described
        if isinstance(value, str):
            return f"{line.split(':')[0].rstrip('.')}: {value}"
    return line


def pytest_itemcollected(item: pytest.Item) -> None:
    item.user_properties.append(("scenario", scenario_of(item)))
    item.user_properties.append(("target", getattr(getattr(item, "module", None), "TARGET", "docker")))


@dataclass
class Leaks:
    """What exists now that did not before, of the families this test watches (the suite's family unless a
    test adds its own with :meth:`watch`): containers labelled with the family or made from its images, and
    per-run key directories. Only these families are counted: other suites may run on the same engine."""

    engine: docker.DockerClient
    containers_before: set[str]
    keys_before: set[str]
    families: set[str]

    def watch(self, family: str) -> None:
        self.families.add(family)

    def ours(self, container: Any) -> bool:
        labels = container.labels or {}
        if labels.get(LABEL_FAMILY) in self.families:
            return True
        try:
            tags = container.image.tags if container.image else []
        except docker.errors.ImageNotFound:
            tags = []
        return any(tag.split(":")[0] in self.families for tag in tags)

    def containers(self) -> list[str]:
        return [
            f"{c.name} ({c.status})"
            for c in self.engine.containers.list(all=True, ignore_removed=True)
            if c.id not in self.containers_before and self.ours(c)
        ]

    def key_dirs(self) -> list[str]:
        root = keys_root()
        now = set(os.listdir(root)) if root.exists() else set()
        return sorted(now - self.keys_before)

    def assert_none(self) -> None:
        assert self.containers() == [], "leaked containers"
        assert self.key_dirs() == [], "leaked private key directories"

    def remove_containers(self) -> None:
        """Remove what a failed test left of its families, so one failing test never breaks the next."""
        for container in self.engine.containers.list(all=True, ignore_removed=True):
            if container.id not in self.containers_before and self.ours(container):
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)


@pytest.fixture
def leaks(engine: docker.DockerClient) -> Iterator[Leaks]:
    """Counts what a test leaks (it asserts with ``leaks.assert_none()``); afterwards, on every path, removes
    the containers it left of its families."""
    root = keys_root()
    found = Leaks(
        engine,
        {c.id for c in engine.containers.list(all=True, ignore_removed=True)},
        set(os.listdir(root)) if root.exists() else set(),
        {IMAGE_FAMILY},
    )
    try:
        yield found
    finally:
        found.remove_containers()


@pytest.fixture(autouse=True)
def _no_suite_container_outlives_a_test(engine: docker.DockerClient) -> Iterator[None]:
    """Whatever a scenario does (a killed run, a failed assertion before its own cleanup), no container of
    the suite's family survives it into the next scenario."""
    yield
    remove_containers_of(engine, IMAGE_FAMILY)


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The scenarios' BAKERY_STATE_DIR; a local Prefect server a scenario started under it is stopped at the end."""
    path = tmp_path_factory.mktemp("state")
    yield path
    from flows.local_server import stop

    with pytest.MonkeyPatch.context() as env:
        env.setenv("BAKERY_STATE_DIR", str(path))
        stop()


@pytest.fixture(scope="session")
def session_bake(prefect_api_url: str, state_dir: Path) -> Bake:
    return Bake(prefect_api_url, state_dir)


@pytest.fixture(scope="session")
def built_image(session_bake: Bake, engine: docker.DockerClient) -> Iterator[str]:
    """One image of the reliability family, built once; removed at the end."""
    version = f"0.0.0-rel.{uuid.uuid4().hex[:6]}"
    result = session_bake("build", "--family", IMAGE_FAMILY, "--version", version)
    assert result.returncode == 0, result.stderr[-3000:]
    reference = f"{IMAGE_FAMILY}:{version}"
    yield reference
    remove_family(engine, IMAGE_FAMILY)


@pytest.fixture
def in_process(prefect_api_url: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., int]:
    """`bake` in this process, so a fault can be injected at a seam with monkeypatch."""
    from flows.cli import main

    monkeypatch.setenv("BAKERY_STATE_DIR", str(state_dir))
    monkeypatch.setenv("PREFECT_API_URL", prefect_api_url)
    return lambda *argv: main(list(argv))


# --- AWS (moto server) ---------------------------------------------------------------------------------------


@dataclass
class AwsLeaks:
    """What a run could leave in EC2 (live instances, key pairs, non-default security groups), counted from
    the EC2 API, and the per-run private key directories (in this test's own temporary directory)."""

    url: str

    def resources(self) -> dict[str, list[str]]:
        found = ec2_inventory(self.url)
        found.pop("images")
        return found

    def key_dirs(self) -> list[str]:
        root = keys_root()
        return sorted(os.listdir(root)) if root.exists() else []

    def assert_none(self) -> None:
        assert self.resources() == {"instances": [], "key_pairs": [], "security_groups": []}, "leaked in EC2"
        assert self.key_dirs() == [], "leaked private key directories"


@pytest.fixture
def aws_leaks(aws_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AwsLeaks:
    """On a fresh moto; per-run key directories go below this test's own temporary directory, so a run
    of anyone else on this machine cannot be mistaken for a leak."""
    monkeypatch.setenv("BAKERY_KEYS_DIR", str(tmp_path / "keys"))
    leaks = AwsLeaks(aws_env)
    leaks.assert_none()
    return leaks


@dataclass
class Baked:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def last_line(self) -> str:
        lines = self.err.strip().splitlines()
        return lines[-1] if lines else ""


@pytest.fixture
def aws_bake(
    prefect_api_url: str,
    state_dir: Path,
    aws_leaks: AwsLeaks,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> Callable[..., Baked]:
    """`bake` in this process (faults go in at seams with monkeypatch), against the session's Prefect server
    and the fresh moto; EC2 waiters poll every 0.2 s."""
    from flows.cli import main

    monkeypatch.setenv("BAKERY_STATE_DIR", str(state_dir))
    monkeypatch.setenv("PREFECT_API_URL", prefect_api_url)
    monkeypatch.setenv("BAKERY_AWS_WAITER_DELAY", "0.2")

    def run(*argv: Any) -> Baked:
        capfd.readouterr()
        started = time.monotonic()
        code = main([str(a) for a in argv])
        seconds = time.monotonic() - started
        out, err = capfd.readouterr()
        return Baked(code, out, err, seconds)

    return run


@pytest.fixture(scope="session", autouse=True)
def _base_image(base_image: str) -> str:
    """Every scenario may build or run from the local base image: make it once, first."""
    return base_image

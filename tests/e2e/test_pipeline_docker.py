"""The whole pipeline on the local Docker target, as the README's first command runs it."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.e2e.conftest import Bake
from tests.support import containers_of, new_family, remove_family

pytestmark = pytest.mark.e2e

# A goss template in a spec directory, rendered with a vars file and a --spec-var: the flow gets them as
# parameters (spec_vars_file, spec_vars) and renders the spec where it verifies.
FAILING_SPEC = """
package:
  nginx:
    installed: true
  {{ .Vars.missing_package }}:
    installed: true
service:
  {{ .Vars.web }}:
    running: true
"""


def stage_id(engine: docker.DockerClient, tag: str) -> str | None:
    try:
        return str(engine.images.get(tag).id)
    except docker.errors.ImageNotFound:
        return None


@pytest.fixture
def family(engine: docker.DockerClient) -> Iterator[str]:
    """A family of this test only (never the user's ``app-base``); its images and containers go afterwards."""
    name = new_family("e2e-pipeline")
    try:
        yield name
    finally:
        remove_family(engine, name)


def test_run_builds_tests_and_stages_the_image(bake: Bake, engine: docker.DockerClient, family: str) -> None:
    v = "1.0"
    result = bake("--json", "run", "--family", family, "--version", v, "--ssh-timeout", "90s")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    image = engine.images.get(f"{family}:{v}")
    assert summary["image_id"] == image.id
    assert summary["stage"] == "staging"
    assert stage_id(engine, f"{family}:staging") == image.id
    assert containers_of(engine, family=family) == []
    junit = ET.parse(summary["junit"]).getroot()
    cases = {(c.get("classname"), c.get("name")) for c in junit.iter("testcase")}
    assert ("package", "nginx installed") in cases
    assert ("service", "nginx running") in cases
    assert not list(junit.iter("failure"))
    # progress went to the log, and no private key outlived the run
    assert "[build " in result.stderr
    assert "BEGIN OPENSSH PRIVATE KEY" not in result.stderr


def test_failing_check_exits_1_names_it_and_does_not_stage(
    bake: Bake, engine: docker.DockerClient, tmp_path: Path, family: str
) -> None:
    spec = tmp_path / "failing"
    spec.mkdir()
    (spec / "goss.yaml").write_text(FAILING_SPEC)
    variables = tmp_path / "vars.yaml"
    variables.write_text("missing_package: apache-nope\nweb: nginx\n")
    staged_before = stage_id(engine, f"{family}:staging")
    assert staged_before is None  # a new family: nothing staged yet
    v = "1.0"
    result = bake(
        "run", "--family", family, "--version", v, "--spec", str(spec), "--vars", str(variables),
        "--spec-var", "missing_package=no-such-package", "--ssh-timeout", "90s",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert "no-such-package installed" in last_line
    assert "Traceback" not in result.stderr
    new_image = engine.images.get(f"{family}:{v}")
    assert stage_id(engine, f"{family}:staging") != new_image.id
    assert stage_id(engine, f"{family}:staging") == staged_before
    assert containers_of(engine, family=family) == []

"""The AWS target end to end against a moto server (a real HTTP EC2 endpoint on 127.0.0.1).

1. a real ``packer build`` of an amazon-ebs source through ``bake build --target aws``;
2. ``bake test --target aws`` passing: the moto instance is joined AT THE TEST SEAM (``tests/aws_seam.py``)
   to a local sshd container set up as cloud-init would set up the instance. No packet ever goes to an
   address moto invented.

Failures at every stage (build, launch, the status wait, verify, a dropped SSH connection, teardown) and
throttling are the reliability suite's: ``tests/reliability/test_aws_faults.py`` and
``tests/reliability/test_aws_throttling.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from docker.models.containers import Container

from flows.cli import main
from tasks.request import keys_root
from tests.aws_seam import (
    FIXTURE,
    PASSING_SPEC,
    assert_nothing_left,
    bakery_test_instances,
    ec2,  # noqa: F401  (fixture)
    image_and_snapshot_tags,
    join_seam,
    sshd_container,  # noqa: F401  (fixture)
    tags_of,
    version,
)
from tests.e2e.conftest import Bake

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def quick_waiters(aws_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """On the shared fresh moto (``aws_env``): poll every 0.2 s, and keep run records in this test's dir."""
    monkeypatch.setenv("BAKERY_AWS_WAITER_DELAY", "0.2")
    monkeypatch.setenv("BAKERY_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def bake_here(prefect_api_url: str, capfd: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """`bake` in this process (so the test seam can be patched): (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        capfd.readouterr()
        code = main(list(argv))
        out, err = capfd.readouterr()
        return code, out, err

    return run


@pytest.fixture
def ami(bake_here: Callable[..., tuple[int, str, str]]) -> str:
    """An AMI built by packer through `bake build --target aws` (about a second against moto)."""
    code, out, err = bake_here("--json", "build", "--target", "aws", "--template-dir", FIXTURE, "--version", version())
    assert code == 0, err[-3000:]
    return str(json.loads(out)["image_id"])


# --- 1. packer build ---------------------------------------------------------------------------------------


def test_build_makes_one_ami_tagged_like_the_seed(bake: Bake, ec2: Any) -> None:  # noqa: F811
    v = version()
    started = time.monotonic()
    result = bake("--json", "build", "--target", "aws", "--template-dir", FIXTURE, "--version", v)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    (image,) = ec2.describe_images(Owners=["self"])["Images"]
    assert summary["image_id"] == image["ImageId"]
    assert summary["stage"] == "testing"
    tags, snapshots = image_and_snapshot_tags(ec2, image["ImageId"])
    expected = {"Name": f"app-base-{v}", "Version": v, "ManagedBy": "packer", "status": "testing"}
    assert expected.items() <= tags.items()
    assert tags["BaseAMI"] == "ami-785db401"
    assert tags["BuildTime"].isdigit()
    assert all(expected.items() <= s.items() for s in snapshots)
    # Packer's builder carried the run's labels and is gone; its temporary key pair and group too.
    builders = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert [tags_of(b)["bakery:purpose"] for b in builders] == ["packer-builder"]
    assert tags_of(builders[0])["bakery:run-id"] == tags["bakery:run-id"]
    assert_nothing_left(ec2)
    print(f"bake build --target aws: {seconds:.1f} s")


# --- 2. the test stage passes -----------------------------------------------------------------------------


def test_test_stage_passes_through_the_seam_and_stages_the_ami(
    bake_here: Callable[..., tuple[int, str, str]],
    ami: str,
    ec2: Any,  # noqa: F811
    sshd_container: Container,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(PASSING_SPEC)
    joined = join_seam(monkeypatch, sshd_container, ec2)
    started = time.monotonic()
    code, out, err = bake_here(
        "--json", "test", "--target", "aws", "--image", ami, "--spec", str(spec), "--ssh-timeout", "60s"
    )
    seconds = time.monotonic() - started
    assert code == 0, err[-4000:]
    summary = json.loads(out)
    assert (summary["image_id"], summary["stage"]) == (ami, "staging")
    (instance,) = bakery_test_instances(ec2)
    assert joined == [instance["InstanceId"]]
    assert instance["State"]["Name"] == "terminated"
    run_id = tags_of(instance)["bakery:run-id"]
    tags, snapshots = image_and_snapshot_tags(ec2, ami)
    for t in (tags, *snapshots):
        assert (t["status"], t["bakery:run-id"]) == ("staging", run_id)
        assert t["bakery:staged-at"].endswith("+00:00")
    assert_nothing_left(ec2)
    # SSH got in with only the injected host key pinned (RejectPolicy for any other); its private half
    # reached no log, and the run's key directory is gone.
    assert "PRIVATE KEY" not in out + err
    assert not (keys_root() / run_id).exists()
    print(f"bake test --target aws (pass): {seconds:.1f} s")

"""`bake build` then `bake test --target aws` in a loopback-only network namespace (``unshare -n``).

The namespace has nothing but ``lo``: moto, Prefect and bakery all run on 127.0.0.1 inside it, and the
SSH attempts to the address moto invented for the test instance fail with "network unreachable"
before any packet is sent. So the test stage cannot reach SSH, and must fail cleanly: exit 1 within
the SSH timeout plus 30 s, nothing of the run left, the AMI ``failed``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).with_name("aws_netns_scenario.py")
SSH_TIMEOUT = 20


def can_unshare_network() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not can_unshare_network():
        pytest.skip("needs `unshare -n` (root or user namespaces) and iproute2")
    out = tmp_path_factory.mktemp("netns") / "result.json"
    command = f"ip link set lo up && exec {sys.executable} {SCENARIO} {out}"
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def test_build_creates_one_ami_tagged_like_the_seed(scenario: dict[str, Any]) -> None:
    assert scenario["build"]["code"] == 0, scenario["build"]["stderr_tail"]
    (image,) = scenario["images"]
    version = json.loads(scenario["build"]["stdout"])["version"]
    expected = {"Name": f"app-base-{version}", "Version": version, "ManagedBy": "packer", "status": "testing"}
    assert expected.items() <= image["tags"].items()


def test_unreachable_ssh_exits_1_in_time_and_leaves_nothing(scenario: dict[str, Any]) -> None:
    test = scenario["test"]
    assert test["code"] == 1, test["stderr_tail"]
    assert test["seconds"] < SSH_TIMEOUT + 30, test["stderr_tail"]
    last = test["stderr_tail"].strip().splitlines()[-1]
    assert last.startswith("bake test: ssh ubuntu@")
    assert "unreachable" in last
    assert "Traceback" not in test["stderr_tail"]
    assert [i["id"] for i in scenario["instances"] if i["state"] in ("pending", "running")] == []
    assert [i["state"] for i in scenario["instances"] if i["tags"].get("Name", "").startswith("bakery-test-")] == [
        "terminated"
    ]
    assert scenario["key_pairs"] == []
    assert [g["name"] for g in scenario["security_groups"] if g["name"] != "default"] == []
    assert scenario["image_after"]["status"] == "failed"
    assert [s["status"] for s in scenario["snapshots_after"]] == ["failed"] * len(scenario["snapshots_after"])
    print(f"bake build: {scenario['build']['seconds']:.1f} s, bake test (unreachable): {test['seconds']:.1f} s")

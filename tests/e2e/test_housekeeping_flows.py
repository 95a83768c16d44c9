"""The retention flow when deletions fail: exit 1, the full report still printed, and the snapshots of an
image that could not be deregistered kept. Runs ``bake`` with a store that refuses one deregistration,
against the session's Prefect server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks.targets.base import ImageRecord
from tests.e2e.conftest import REPO

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class BrokenStore:
    target = "docker"

    def __init__(self) -> None:
        self.images = [
            ImageRecord(f"ami-{n}", f"ami-{n}", f"fam-{n}", "fam", str(n), T0 + timedelta(days=n), snapshots=(f"s{n}",))
            for n in range(4)
        ]
        self.deleted: list[str] = []

    def inventory(self) -> tuple[list[ImageRecord], dict[str, list[str]]]:
        return self.images, {}

    def delete_image(self, image: ImageRecord) -> str:
        if image.ref == "ami-1":
            raise RuntimeError("UnauthorizedOperation: not allowed to deregister ami-1")
        self.deleted.append(image.ref)
        return "deleted"

    def delete_snapshot(self, snapshot_id: str) -> str:
        self.deleted.append(snapshot_id)
        return "deleted"

    def before_deletes(self, family: str) -> None:
        pass

    def recheck(self, images: Sequence[ImageRecord]) -> dict[str, list[str]]:
        return {image.ref: [] for image in images}  # nothing changed since the plan


DRIVER = """
import json, sys
from tasks import retention
from tests.e2e.test_housekeeping_flows import BrokenStore
from flows.cli import main

store = BrokenStore()
retention.open_store = lambda *args, **kwargs: store  # (target, registry, family)
code = main(sys.argv[1:])
print("DELETED " + json.dumps(sorted(store.deleted)), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("as_json", [True, False])
def test_partial_failure_exits_1_with_the_whole_report(prefect_api_url: str, tmp_path: Path, as_json: bool) -> None:
    argv = ["retention", "--family", "fam", "--keep", "2", "--apply"]
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "BAKERY_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, *(["--json", *argv] if as_json else argv)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out, err = done.stdout, done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr[-3000:]
    assert err[-1] == 'DELETED ["ami-0", "s0"]'
    assert err[-2] == (
        "bake retention: 1 deletions failed: ami-1: failed: UnauthorizedOperation: not allowed to deregister ami-1"
    )
    assert "Traceback" not in done.stderr
    if as_json:
        doc = json.loads(out)
        assert {r["image"]: r["result"] for r in doc["images"]} == {
            "ami-3": "",
            "ami-2": "",
            "ami-1": "failed: UnauthorizedOperation: not allowed to deregister ami-1",
            "ami-0": "deleted",
        }
        assert {s["snapshot"]: s["result"] for s in doc["snapshots"]} == {
            "s0": "deleted",
            "s1": "kept: ami-1 was not deregistered",
        }
    else:
        assert "fam: 4 images, keep 2 (newest 2), delete 2 with 2 snapshots; deleted 1/2 images" in out
        assert "1 FAILED" in out

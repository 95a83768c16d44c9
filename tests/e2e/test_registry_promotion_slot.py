"""With a registry, a family's promotions are kept apart across machines (issue 12): two processes with their
own BAKERY_STATE_DIR ("machines": an flock on one's disk does not reach the other) take the family's
promotion lock at the same time; the Prefect server's promotion slot makes them take turns."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tasks.targets.docker.image_registry import parse_registry
from tasks.targets.docker.registry_stages import RegistryStages
from tests.e2e.conftest import REPO

pytestmark = pytest.mark.e2e
ROUNDS, HOLD = 3, 0.8


def test_two_machines_take_turns_promoting_one_family_in_a_registry(
    prefect_api_url: str, registry_host: str, tmp_path: Path
) -> None:
    family = f"slot-{uuid.uuid4().hex[:6]}"
    out = tmp_path / "holds.jsonl"
    machines = []
    for name in ("machine-1", "machine-2"):
        env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "BAKERY_STATE_DIR": str(tmp_path / name)}
        command = [sys.executable, "-m", "tests.e2e.promotion_slot_holder", registry_host, family, str(out)]
        machines.append(subprocess.Popen([*command, str(ROUNDS), str(HOLD)], cwd=REPO, env=env, stderr=subprocess.PIPE))
    errors = [process.communicate(timeout=300)[1].decode() for process in machines]
    assert [process.returncode for process in machines] == [0, 0], errors

    holds = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda h: h["entered"])
    assert len(holds) == 2 * ROUNDS and len({h["pid"] for h in holds}) == 2
    for before, after in itertools.pairwise(holds):
        assert before["left"] <= after["entered"], f"two machines held the promotion lock at once: {holds}"
    record = RegistryStages(parse_registry(registry_host)).read_record(family)
    assert len(record["holders"]) == 2 * ROUNDS  # no record write was lost

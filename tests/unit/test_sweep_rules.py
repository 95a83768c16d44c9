"""Sweep decisions: expiry labels, max age, Packer's own names, per-run key directories."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tasks.sweep import Rules, decide, find_key_dirs, plan_sweep, remove_key_dirs
from tasks.targets.aws.leftovers import AwsLeftovers, packer_name_time
from tasks.targets.base import Leftover
from tasks.targets.docker.leftovers import DockerLeftovers

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
RULES = Rules(now=NOW)


def item(**kwargs: Any) -> Leftover:
    return Leftover(**{"provider": "docker", "kind": "container", "id": "c1", **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "rules", "remove", "reason"),
    [
        ({"expires_at": NOW - timedelta(minutes=5)}, RULES, True, "expired 5m ago"),
        ({"expires_at": NOW + timedelta(hours=1, minutes=20)}, RULES, False, "expires in 1h20m"),
        # a fresh label wins over age unless --max-age is given
        ({"expires_at": NOW + timedelta(days=3), "created": NOW - timedelta(days=2)}, RULES, False, "expires in 3d"),
        (
            {"expires_at": NOW + timedelta(days=3), "created": NOW - timedelta(days=2)},
            Rules(now=NOW, max_age=timedelta(days=1)),
            True,
            "older than --max-age 1d (2d)",
        ),
        ({"created": NOW - timedelta(days=2)}, RULES, True, "no expiry label; older than 1d"),
        ({"created": NOW - timedelta(hours=2)}, RULES, False, "no expiry label; only 2h old"),
        ({}, RULES, False, "no expiry label and no creation time"),
        # Packer's own resources: age alone, --max-age or 24 h
        ({"labelled": False, "created": NOW - timedelta(hours=30)}, RULES, True, "1d6h old, older than 1d"),
        ({"labelled": False, "created": NOW - timedelta(hours=3)}, RULES, False, "only 3h old (limit 1d)"),
        (
            {"labelled": False, "created": NOW - timedelta(hours=3)},
            Rules(now=NOW, max_age=timedelta(hours=2)),
            True,
            "3h old, older than 2h",
        ),
        ({"labelled": False}, RULES, False, "creation time unknown"),
        # --max-age 0s (after a crash, in CI): everything of bakery's goes, whatever its labels say
        (
            {"expires_at": NOW + timedelta(hours=1), "created": NOW - timedelta(seconds=30)},
            Rules(now=NOW, max_age=timedelta(0)),
            True,
            "older than --max-age 0s (30s)",
        ),
        (
            {"labelled": False, "created": NOW - timedelta(seconds=30)},
            Rules(now=NOW, max_age=timedelta(0)),
            True,
            "30s old, older than 0s",
        ),
    ],
)
def test_decide(kwargs: dict[str, Any], rules: Rules, remove: bool, reason: str) -> None:
    decided = decide(item(**kwargs), rules)
    assert (decided.remove, decided.reason) == (remove, reason)


def test_packer_names_carry_their_creation_time() -> None:
    stamp = int(datetime(2026, 5, 30, tzinfo=UTC).timestamp())
    name = f"packer_{stamp:08x}-1a2b-3c4d-5e6f-0123456789ab"
    assert packer_name_time(name) == datetime(2026, 5, 30, tzinfo=UTC)
    assert packer_name_time("packer_mine") is None
    assert packer_name_time("my-packer_group") is None
    assert packer_name_time(f"xpacker_{stamp:08x}-1a2b-3c4d-5e6f-0123456789ab") is None


def age(path: Path, delta: timedelta) -> None:
    moment = (NOW - delta).timestamp()
    os.utime(path, (moment, moment))


def test_key_dirs(tmp_path: Path) -> None:
    root = tmp_path / "bakery-keys"
    for name in ("stale", "fresh", "live-run"):
        (root / name).mkdir(parents=True)
        (root / name / "id_ed25519").write_text("key")
    age(root / "stale", timedelta(days=2))
    age(root / "live-run", timedelta(days=2))
    age(root / "fresh", timedelta(hours=1))
    (root / "a-file").write_text("not a key dir")
    (root / "link").symlink_to(tmp_path)
    root.chmod(0o700)
    found = {i.name: i for i in find_key_dirs(RULES, {"live-run"}, root)}
    assert sorted(found) == ["fresh", "live-run", "stale"]
    assert found["stale"].remove and found["stale"].reason == "2d old, older than 1d"
    assert not found["fresh"].remove
    assert (found["live-run"].remove, found["live-run"].reason) == (False, "its run still has live resources")
    results = remove_key_dirs([found["stale"]])
    assert results == {f"key-dir {root / 'stale'}": "removed"}
    assert sorted(p.name for p in root.iterdir()) == ["a-file", "fresh", "link", "live-run"]
    assert tmp_path.exists()


class FakeApi:
    def __init__(self, containers: list[dict[str, Any]]) -> None:
        self._containers = containers
        self.filters: list[dict[str, str]] = []

    def containers(self, all: bool, filters: dict[str, str]) -> list[dict[str, Any]]:
        """Docker's filters: a label key, or a substring of the name."""
        self.filters.append(filters)
        if "name" in filters:
            return [c for c in self._containers if filters["name"] in c["Names"][0]]
        return [c for c in self._containers if filters["label"] in c["Labels"]]


class FakeEngine:
    def __init__(self, containers: list[dict[str, Any]]) -> None:
        self.api = FakeApi(containers)


def test_docker_containers_are_found_by_label_or_builder_name(tmp_path: Path) -> None:
    created = int((NOW - timedelta(hours=3)).timestamp())
    engine = FakeEngine(
        [
            {
                "Id": "a" * 64,
                "Names": ["/bakery-app-base-1234"],
                "Created": created,
                "State": "running",
                "Labels": {"bakery.run-id": "run-1", "bakery.expires-at": "2026-06-01T11:00:00+00:00"},
            },
            {
                "Id": "b" * 64,
                "Names": ["/bakery-build-run-2"],
                "Created": created,
                "State": "running",
                "Labels": {"version": "1.0"},
            },
            {"Id": "c" * 64, "Names": ["/someone-else"], "Created": created, "State": "exited", "Labels": {}},
        ]
    )
    source = DockerLeftovers(engine)
    (tmp_path / "run-2").mkdir()
    age(tmp_path / "run-2", timedelta(days=3))
    plan = plan_sweep([source], RULES, key_root=tmp_path)
    assert engine.api.filters == [{"label": "bakery.run-id"}, {"name": "bakery-build-"}]
    table = {(i.kind, i.name): (i.remove, i.reason) for i in plan.leftovers}
    assert table == {
        ("container", "bakery-app-base-1234"): (True, "expired 1h ago"),
        ("container", "bakery-build-run-2"): (False, "only 3h old (limit 1d)"),
        ("key-dir", "run-2"): (False, "its run still has live resources"),
    }


def test_aws_keeps_what_a_kept_instance_uses() -> None:
    instance = Leftover(
        "aws", "instance", "i-1", run_id="r", remove=False, extra={"security_groups": "sg-1", "key_name": "k1"}
    )
    group = Leftover("aws", "security-group", "sg-1", remove=True, reason="expired 1h ago")
    other = Leftover("aws", "security-group", "sg-2", remove=True, reason="expired 1h ago")
    pair = Leftover("aws", "key-pair", "key-1", name="k1", remove=True, reason="expired 1h ago")
    kept = AwsLeftovers(ec2=object()).protect([instance, group, other, pair])
    assert [(i.id, i.remove, i.reason) for i in kept] == [
        ("i-1", False, ""),
        ("sg-1", False, "used by instance i-1, which stays"),
        ("sg-2", True, "expired 1h ago"),
        ("key-1", False, "used by instance i-1, which stays"),
    ]

"""The weekly rebuild's plain parts: the families file, package changes, the per-family summary."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tasks.errors import UsageError
from tasks.rebuild import FamilySummary, load_families, package_changes, recorded_inventory

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_families_file_loads() -> None:
    families = load_families(REPO / "deployments" / "families.yaml")
    assert [(f.family, f.targets, f.template_dir) for f in families] == [("app-base", ("docker",), "packer")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nope: []\n", "expected a top-level 'families:' list"),
        ("families:\n  - template_dir: packer\n", "families[0].family: required"),
        ("families:\n  - family: a\n    targets: [gcp]\n", "families[0].targets[0] 'gcp': unknown target"),
        ("families:\n  - family: Bad Name\n", "families[0].family 'Bad Name': not a valid image family"),
        ("families:\n  - family: a\n    var_files: {x: 1}\n", "families[0].var_files: expected a list, got dict"),
        ("families:\n  - family: a\n    template_dir: ''\n", "families[0].template_dir '': String should have"),
        ("families:\n  - family: a\n    colour: red\n", "families[0]: unknown key 'colour'"),
        ("families:\n  - family: a\n  - family: a\n", "families[1].family: 'a' is listed twice"),
        ("families:\n  - family: a\n    variables: [x]\n", "families[0].variables: expected a mapping"),
        ("families:\n  - family: a\n    spec_vars: [x]\n", "families[0].spec_vars: expected a mapping"),
        ("families: [\n", "not valid YAML"),
    ],
)
def test_bad_families_files_name_the_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "families.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as raised:
        load_families(path)
    assert expected in str(raised.value) and str(path) in str(raised.value)
    assert "\n" not in str(raised.value) and "validation error" not in str(raised.value)


def test_a_family_gives_its_templated_spec_its_variables(tmp_path: Path) -> None:
    path = tmp_path / "families.yaml"
    path.write_text(
        "families:\n  - family: a\n    spec: specs/\n    spec_vars_file: a.vars.yaml\n    spec_vars: {port: 80}\n"
    )
    (family,) = load_families(path)
    assert (family.spec, family.spec_vars_file, family.spec_vars) == ("specs/", "a.vars.yaml", {"port": "80"})


def test_missing_families_file() -> None:
    with pytest.raises(UsageError, match=r"--families /nonexistent\.yaml: cannot read"):
        load_families("/nonexistent.yaml")


def test_package_changes() -> None:
    changes = package_changes({"a": "1", "b": "1", "c": "1"}, {"a": "1", "b": "2", "d": "1"})
    assert changes.added == {"d": "1"} and changes.removed == {"c": "1"} and changes.upgraded == {"b": ("1", "2")}
    assert changes.count == 3
    assert changes.lines() == ["`b` 1 → 2", "`d` added (1)", "`c` removed (1)"]


def test_package_changes_keep_upgrades_and_downgrades_apart_in_the_managers_order() -> None:
    """The rebuild's summary uses the verification's diff: a downgrade is not reported as a plain change,
    and versions compare as dpkg does (1.10 is newer than 1.9; ~ sorts before anything)."""
    old = {"openssl": "3.0.11-1~deb12u2", "curl": "7.88.1-10", "zlib": "1.9", "libc6": "2.36-9, 2.36-8"}
    new = {"openssl": "3.0.13-1~deb12u1", "curl": "7.88.1-10~rc1", "zlib": "1.10", "libc6": "2.36-9"}
    changes = package_changes(old, new)
    assert changes.upgraded == {"openssl": ("3.0.11-1~deb12u2", "3.0.13-1~deb12u1"), "zlib": ("1.9", "1.10")}
    assert changes.downgraded == {"curl": ("7.88.1-10", "7.88.1-10~rc1")}
    assert changes.changed == {"libc6": ("2.36-8, 2.36-9", "2.36-9")}
    assert "`curl` 7.88.1-10 → 7.88.1-10~rc1 (downgraded)" in changes.lines()
    assert FamilySummary("app", "docker", "staged", packages=changes).to_dict()["packages"]["downgraded"] == {
        "curl": ("7.88.1-10", "7.88.1-10~rc1")
    }


def test_recorded_inventory_is_read_when_a_verification_left_one(tmp_path: Path) -> None:
    assert recorded_inventory(tmp_path) is None
    (tmp_path / "inventory.json").write_text('{"manager": "dpkg", "packages": {"nginx": ["1.22"], "x": ["1", "2"]}}')
    assert recorded_inventory(tmp_path) == {"nginx": "1.22", "x": "1, 2"}


def test_a_production_over_90_days_is_flagged_loudly() -> None:
    summary = FamilySummary(
        family="app-base",
        target="aws",
        result="failed",
        message="packer build failed",
        production="app-base-1.0",
        production_age_days=120.4,
        now=datetime(2026, 6, 1, tzinfo=UTC),
    )
    assert summary.stale
    text = summary.to_markdown()
    assert "STALE PRODUCTION" in text and "120 days ago" in text and "packer build failed" in text
    assert summary.row()["production age"].startswith("STALE 120d")
    assert summary.to_dict()["stale"] is True
    fresh = FamilySummary(family="app-base", target="docker", result="staged", production_age_days=89.0)
    assert not fresh.stale and "STALE" not in fresh.to_markdown()

"""Build only what changed: the inputs hash, the template's base, and the build-or-skip rules."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest

from tasks import provenance
from tasks.provenance import BaseLookupError, BuildInputs
from tasks.rebuild import Decision, Observation, current_image, decide
from tasks.request import prepare
from tasks.targets.aws.provenance import ami_filter
from tasks.targets.base import StagedImage
from tasks.targets.docker.provenance import base_reference

NOW = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def image(stage: str, days_old: float, version: str = "1.0", id_: str = "sha256:" + "a" * 64) -> StagedImage:
    return StagedImage(id_, "app", version, f"app:{version}", stage, created=NOW - timedelta(days=days_old))


RECORDED = BuildInputs(base="sha256:" + "b" * 64, inputs="sha256:in", spec="sha256:spec")


def observation(**changes: object) -> Observation:
    fields: dict[str, object] = {
        "current": image("staging", 1),
        "recorded": RECORDED,
        "inputs": RECORDED.inputs,
        "spec": RECORDED.spec,
        "base": RECORDED.base,
        "pending": (),
    }
    fields.update(changes)
    return Observation(**fields)  # type: ignore[arg-type]


def test_nothing_changed_is_skipped_and_says_what_was_checked() -> None:
    decision = decide(observation(), now=NOW)
    assert not decision.build
    assert decision.compared_version == "1.0"
    assert decision.text.startswith("skipped: unchanged since version 1.0 (checked base sha256:bbbbbbbbbbbb")
    assert "templates and variables" in decision.checked and "spec" in decision.checked
    assert "0 pending updates" in decision.checked


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"base": "sha256:" + "c" * 64}, "base changed from sha256:bbbbbbbbbbbb to sha256:cccccccccccc"),
        ({"inputs": "sha256:other"}, "templates, var files or variables changed"),
        ({"spec": "sha256:other"}, "the verification spec changed"),
        ({"pending": ("openssl 3.0.1 → 3.0.2", "curl 7 → 8")}, "2 pending updates: openssl 3.0.1 → 3.0.2, curl 7 → 8"),
        ({"current": image("production", 8)}, "older than 7d 0h 0m (built 8d 0h 0m ago)"),
        ({"recorded": None}, "app:1.0 (sha256:aaaaaaaaaaaa) has no recorded build inputs (built by an older bakery)"),
        ({"current": None}, "no staging or production image to compare with"),
        ({"base": None, "base_note": "no AMI matches"}, "the base check failed (no AMI matches)"),
        ({"pending": None, "pending_note": "apt-get update failed: 404"}, "the pending-updates check failed"),
        ({"recorded": BuildInputs(inputs="sha256:in", spec="sha256:spec")}, "was not recorded"),
    ],
)
def test_each_change_or_failed_check_builds_with_its_reason(changes: dict[str, object], reason: str) -> None:
    decision = decide(observation(**changes), now=NOW)
    assert decision.build
    assert any(reason in r for r in decision.reasons), decision.reasons
    assert decision.text.startswith("built because ")


def test_every_reason_is_listed_not_only_the_first() -> None:
    decision = decide(observation(inputs="x", spec="y", current=image("staging", 30)), now=NOW)
    assert len(decision.reasons) == 3


def test_force_builds_without_checking() -> None:
    assert decide(observation(), force=True, now=NOW) == Decision(True, ("forced",), compared_with=image("s", 1).label)


def test_max_age_is_the_callers() -> None:
    assert not decide(observation(current=image("staging", 8)), max_age=timedelta(days=10), now=NOW).build
    assert decide(observation(current=image("staging", 2)), max_age=timedelta(days=1), now=NOW).build


def test_pending_updates_not_applicable_is_a_check_not_a_reason() -> None:
    decision = decide(observation(pending=None, pending_note="not checked (an AMI is not started)"), now=NOW)
    assert not decision.build
    assert "pending updates not checked (an AMI is not started)" in decision.checked


@pytest.mark.parametrize(
    ("target", "store", "why"),
    [("aws", None, "an AMI is not started for it"), ("docker", object(), "the stages are in a registry")],
)
def test_a_platform_that_does_not_check_pending_updates_says_why(target: str, store: object, why: str) -> None:
    from tasks.targets.base import NotChecked, StageStore
    from tasks.targets.registry import PLATFORMS

    checks = PLATFORMS[target].image_checks(cast(StageStore, store))
    with pytest.raises(NotChecked, match=why):
        checks.pending_updates("img", "run-1", "app")


def test_current_image_is_the_newest_staging_or_production() -> None:
    old_prod = image("production", 10, "1.0", "sha256:1")
    new_staging = image("staging", 2, "1.1", "sha256:2")
    failed = image("failed", 1, "1.2", "sha256:3")
    assert current_image([old_prod, new_staging, failed]) == new_staging
    assert current_image([failed]) is None


# ------------------------------------------------------------------------------------ inputs hashes


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    copy = tmp_path / "packer"
    shutil.copytree(REPO / "packer", copy, ignore=shutil.ignore_patterns("packer_cache", "*manifest.json"))
    return copy


def test_inputs_hash_follows_template_files_var_files_and_variables(templates: Path, tmp_path: Path) -> None:
    var_file = tmp_path / "x.pkrvars.hcl"
    var_file.write_text('instance_type = "t3.small"\n')
    base = provenance.inputs_hash(templates, [var_file], {"a": "1"})
    assert provenance.inputs_hash(templates, [var_file], {"a": "1"}) == base
    assert provenance.inputs_hash(templates, [var_file], {"a": "2"}) != base
    var_file.write_text('instance_type = "t3.large"\n')
    assert provenance.inputs_hash(templates, [var_file], {"a": "1"}) != base
    var_file.write_text('instance_type = "t3.small"\n')
    (templates / "files" / "sshd_config").write_text("PermitRootLogin no\n# changed\n")
    assert provenance.inputs_hash(templates, [var_file], {"a": "1"}) != base


def test_inputs_hash_ignores_the_version_packer_caches_and_manifests(templates: Path) -> None:
    before = provenance.inputs_hash(templates, [], {"image_version": "1.0", "run_id": "r1"})
    (templates / "packer_cache").mkdir()
    (templates / "packer_cache" / "x.iso").write_bytes(b"cache")
    (templates / "build-manifest.json").write_text("{}")
    assert provenance.inputs_hash(templates, [], {"image_version": "2.0", "run_id": "r2"}) == before


def test_a_secret_enters_the_hash_only_hashed(templates: Path) -> None:
    one = provenance.inputs_hash(templates, [], {"registry_password": "hunter2"})
    two = provenance.inputs_hash(templates, [], {"registry_password": "hunter3"})
    assert one != two and "hunter2" not in one
    assert provenance.inputs_hash(templates, [], {"plain": "v"}, secret_names=["plain"]) != provenance.inputs_hash(
        templates, [], {"plain": "w"}, secret_names=["plain"]
    )


def test_request_inputs_are_what_build_and_rebuild_both_compute(templates: Path) -> None:
    spec = REPO / "packer" / "test" / "image_spec.yaml"
    one = provenance.request_inputs(prepare(template_dir=templates, spec=spec, version="1.0"))
    two = provenance.request_inputs(prepare(template_dir=templates, spec=spec, version="2.0"))
    assert one == two and one.inputs.startswith("sha256:") and one.spec == provenance.spec_hash(spec)


# ------------------------------------------------------------------------------- the template's base


def test_docker_base_is_the_sources_image_with_variables_resolved(templates: Path) -> None:
    assert base_reference(provenance.template_source(templates, "docker.base", {})) == "bakery/debian:bookworm"
    assert base_reference(provenance.template_source(templates, "docker.base", {"docker_base_image": "x:1"})) == "x:1"


def test_base_reference_is_resolved_when_families_are_observed_in_parallel(templates: Path) -> None:
    # The rebuild observes families in threads; python-hcl2 is not thread-safe, and one family's base
    # was once read as the literal "var.docker_base_image" (then "not in the local engine": built).
    def resolve(_: int) -> str:
        return base_reference(provenance.template_source(templates, "docker.base", {}))

    with ThreadPoolExecutor(max_workers=4) as pool:
        references = set(pool.map(resolve, range(20)))
    assert references == {"bakery/debian:bookworm"}


def test_ami_filter_is_read_from_the_template_with_variables_resolved(templates: Path) -> None:
    filters, owners = ami_filter(
        provenance.template_source(templates, "amazon-ebs.base", {"base_ami_filter": "ubuntu-*"})
    )
    assert {"Name": "name", "Values": ["ubuntu-*"]} in filters
    assert {"Name": "root-device-type", "Values": ["ebs"]} in filters
    assert owners == ["099720109477"]


def test_an_unresolvable_filter_is_a_lookup_error_not_a_guess(templates: Path) -> None:
    aws = templates / "aws.pkr.hcl"
    aws.write_text(aws.read_text().replace("name                = var.base_ami_filter", 'name = "${upper(var.x)}"'))
    with pytest.raises(BaseLookupError, match="cannot evaluate"):
        ami_filter(provenance.template_source(templates, "amazon-ebs.base", {}))
    with pytest.raises(BaseLookupError, match="no source"):
        ami_filter(provenance.template_source(templates, "amazon-ebs.other", {}))


def test_docker_record_round_trips_and_a_missing_one_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAKERY_STATE_DIR", str(tmp_path))
    assert provenance.recorded("docker", "sha256:" + "d" * 64) is None
    provenance.record("docker", "sha256:" + "d" * 64, RECORDED)
    assert provenance.recorded("docker", "sha256:" + "d" * 64) == RECORDED


def test_tags_without_inputs_are_an_older_bakerys_image() -> None:
    assert BuildInputs.from_tags({"BaseAMI": "ami-1"}) is None
    assert BuildInputs.from_tags({"BaseAMI": "ami-1", "bakery:inputs": "sha256:x"}) == BuildInputs("ami-1", "sha256:x")

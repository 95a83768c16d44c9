"""The one table of targets (``tasks/targets/registry.py``) against the names the request model accepts."""

from __future__ import annotations

from tasks import inputs, lint
from tasks.targets.registry import PLATFORMS


def test_the_target_names_the_request_accepts_are_the_tables() -> None:
    # TargetName stays a Literal (pydantic and the Prefect form need one), so it is checked here, not derived.
    assert tuple(PLATFORMS) == inputs.TARGETS
    assert all(name == platform.name for name, platform in PLATFORMS.items())


def test_each_platform_builds_with_a_packer_builder_lint_knows() -> None:
    for platform in PLATFORMS.values():
        assert platform.packer_builder in ("docker", *lint.CLOUD_BUILDERS), platform.name

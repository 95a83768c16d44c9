"""The one table of targets (``tasks/targets/registry.py``) against the names the request model accepts."""

from __future__ import annotations

import pytest

from tasks import inputs, lint
from tasks.errors import UsageError
from tasks.targets.registry import PLATFORMS


def test_the_target_names_the_request_accepts_are_the_tables() -> None:
    # TargetName stays a Literal (pydantic and the Prefect form need one), so it is checked here, not derived.
    assert tuple(PLATFORMS) == inputs.TARGETS
    assert all(name == platform.name for name, platform in PLATFORMS.items())


def test_each_platform_builds_with_a_packer_builder_lint_knows() -> None:
    for platform in PLATFORMS.values():
        assert platform.packer_builder in ("docker", *lint.CLOUD_BUILDERS), platform.name


def test_aws_without_a_region_is_one_line_before_anything_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(UsageError, match=r"--target aws: no region \(set AWS_REGION or AWS_DEFAULT_REGION\)"):
        PLATFORMS["aws"].check_configured(credentials=False)
    with pytest.raises(UsageError, match="--target aws: AWS is not configured: no region"):
        PLATFORMS["aws"].check_configured()
    PLATFORMS["docker"].check_configured()  # the engine is this machine's: said when first asked


def test_a_registry_image_reference_is_checked_before_prefect_starts() -> None:
    with pytest.raises(UsageError, match="with --registry, give <family>:<version>"):
        PLATFORMS["docker"].check_image("app", registry="127.0.0.1:5000")
    PLATFORMS["aws"].check_image("ami-0123")  # an EC2 call: left to the flow

"""Packer's builder carries ``bakery:expires-at`` = start + build time limit + TTL: a long build is never
swept from under itself (issue 11, item 4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tasks import build, packer
from tasks.request import prepare

REPO = Path(__file__).resolve().parents[2]


class Stop(Exception):
    pass


def test_builder_expiry_is_build_time_limit_plus_ttl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_build(template_dir: Path, **kwargs: Any) -> None:
        seen.update(kwargs["variables"])
        raise Stop

    monkeypatch.setattr(packer, "build", fake_build)
    checked = build.static_checks(prepare(template_dir=REPO / "packer", build_timeout="3h", ttl="2h"))
    started = datetime.now(UTC)
    with pytest.raises(Stop):
        build.build(checked.request, checked.templates, tmp_path, "run-1")
    expires = datetime.fromisoformat(seen["expires_at"])
    assert started + timedelta(hours=5) - timedelta(seconds=5) <= expires <= datetime.now(UTC) + timedelta(hours=5)

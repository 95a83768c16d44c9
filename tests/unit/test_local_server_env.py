"""The background Prefect server outlives the command that started it: it inherits no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows import local_server


def test_the_server_inherits_no_credentials_or_packer_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("PKR_VAR_registry_password", "hunter2")
    monkeypatch.setenv("BAKERY_ALERT_WEBHOOK_URL", "http://127.0.0.1:1/hook")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:2/api")
    monkeypatch.setenv("PREFECT_API_KEY", "pnu_x")
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "DEBUG")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = local_server._server_env(tmp_path, 4321)
    for secret in ("AWS_SECRET_ACCESS_KEY", "PKR_VAR_registry_password", "BAKERY_ALERT_WEBHOOK_URL", "PREFECT_API_KEY"):
        assert secret not in env
    assert "PREFECT_API_URL" not in env  # the server is not a client of another server
    assert env["PATH"] and env["PREFECT_LOGGING_LEVEL"] == "DEBUG" and env["LC_ALL"] == "C.UTF-8"
    assert env["PREFECT_HOME"] == str(tmp_path / "prefect")
    assert env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4321/api"

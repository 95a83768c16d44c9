"""Which checkout a deployment's run starts in (flows/checkout.py), without a server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.checkout import NoCheckout, checkout_directory, enter_checkout

REPO = Path(__file__).resolve().parents[2]


def test_the_registered_checkout_is_used_without_bakery_checkout() -> None:
    assert checkout_directory(str(REPO), {}) == REPO


def test_bakery_checkout_overrides_the_registered_one(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "pipeline.py").write_text("")
    assert checkout_directory(str(REPO), {"BAKERY_CHECKOUT": str(tmp_path)}) == tmp_path.resolve()


@pytest.mark.parametrize("registered", [None, "", "{{ checkout.stdout }}"])
def test_no_checkout_known_says_what_to_set(registered: str | None) -> None:
    with pytest.raises(NoCheckout, match="set BAKERY_CHECKOUT") as raised:
        checkout_directory(registered, {})
    assert "\n" not in str(raised.value)


def test_a_directory_without_the_project_names_it_and_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(NoCheckout) as raised:
        checkout_directory(str(REPO), {"BAKERY_CHECKOUT": str(tmp_path)})
    message = str(raised.value)
    assert f"BAKERY_CHECKOUT={tmp_path}" in message and "flows/pipeline.py missing" in message
    with pytest.raises(NoCheckout, match=f"registered from \\({tmp_path}\\)"):
        checkout_directory(str(tmp_path), {})


def test_enter_checkout_changes_into_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BAKERY_CHECKOUT", raising=False)
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    assert enter_checkout(str(REPO)) == {"directory": str(REPO)}
    assert Path(os.getcwd()) == REPO


def head_of(directory: Path) -> str:
    import subprocess

    return subprocess.run(
        ["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_commit_ci_asks_for_must_be_the_checkouts() -> None:
    from flows.checkout import check_commit
    from tasks.errors import UsageError

    head = head_of(REPO)
    assert check_commit("", REPO) == ""
    assert check_commit(head, REPO) == head
    assert check_commit(head[:12].upper(), REPO) == head
    with pytest.raises(UsageError, match=f"is at {head[:12]}; update it"):
        check_commit("0" * 40, REPO)
    with pytest.raises(UsageError, match="expected a git commit id"):
        check_commit("main; rm -rf /", REPO)


def test_a_directory_outside_git_cannot_be_told_and_is_allowed(tmp_path: Path) -> None:
    from flows.checkout import check_commit

    assert check_commit("abcdef1", tmp_path) == "abcdef1"

"""scripts/setup.sh installs what each path needs: `bake run` gets no browser, `--test` adds it; both idempotent.

The script runs for real (bash, python3, its own logic) in a copy of the repository's layout, with a
package manager that "installs" a Debian package by putting its command on PATH, and stand-ins for the
engine and the venv's pip; each records what it was asked.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Debian package -> the command scripts/setup.sh looks for.
COMMAND_OF = {"packer": "packer", "docker.io": "dockerd", "debootstrap": "debootstrap", "chromium": "chromium"}
COMMAND_OF["iproute2"] = "ip"
COMMAND_OF["postgresql"] = "initdb"
COMMAND_OF["docker-registry"] = "docker-registry"
# Debian's postgresql keeps initdb off PATH: setup.sh also looks there, so this host decides.
POSTGRESQL = set() if glob.glob("/usr/lib/postgresql/*/bin/initdb") else {"postgresql"}
TOOLS = ("bash", "sh", "env", "id", "seq", "sleep", "touch", "mkdir", "head", "sed", "cat", "dirname", "chmod")


def executable(path: Path, text: str) -> None:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout with scripts/setup.sh, a venv holding stand-in pip/bake, and a PATH of only what we allow."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    venv = root / ".venv" / "bin"
    venv.mkdir(parents=True)
    executable(venv / "python", "exit 0\n")
    executable(venv / "pip", f'echo "pip $*" >>{tmp_path}/calls\ntouch {venv}/bake\nchmod +x {venv}/bake\n')
    path = tmp_path / "bin"
    path.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (path / tool).symlink_to(found)
    (path / "python3").symlink_to(os.path.realpath(sys.executable))  # an interpreter with venv and ensurepip
    commands = " ".join(f"{pkg}:{cmd}" for pkg, cmd in COMMAND_OF.items())
    executable(
        path / "apt-get",
        f'echo "apt-get $*" >>{tmp_path}/calls\n'
        f'[ "$1" = install ] || exit 0\nfor pkg in "$@"; do for pair in {commands}; do\n'
        f'  [ "${{pair%%:*}}" = "$pkg" ] && printf "#!/bin/sh\\necho 1.0\\n" >{path}/${{pair#*:}} '
        f"&& chmod +x {path}/${{pair#*:}}\ndone; done; exit 0\n",
    )
    executable(path / "docker", 'echo "20.10"\n')  # `docker info` answers: a running engine
    return root


def setup(checkout: Path, *args: str) -> list[str]:
    """Run scripts/setup.sh; return the calls it made to apt-get and pip (and forget them)."""
    calls = checkout.parent / "calls"
    done = subprocess.run(
        ["bash", str(checkout / "scripts" / "setup.sh"), *args],
        env={"PATH": str(checkout.parent / "bin"), "HOME": str(checkout.parent)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    made = calls.read_text().splitlines() if calls.exists() else []
    calls.unlink(missing_ok=True)
    return made


def installed(calls: list[str]) -> set[str]:
    return {word for call in calls if call.startswith("apt-get install") for word in call.split()[2:]} - {"-y", "-q"}


def test_the_run_path_installs_what_running_needs_and_no_browser(checkout: Path) -> None:
    calls = setup(checkout)
    assert installed(calls) == {"packer", "docker.io", "debootstrap"}
    assert "pip install -q -e ." in calls
    assert setup(checkout) == []  # idempotent: nothing the second time


def test_the_test_path_adds_the_browser_and_the_dev_extras(checkout: Path) -> None:
    setup(checkout)
    calls = setup(checkout, "--test")
    assert installed(calls) == {"chromium", "iproute2", "docker-registry"} | POSTGRESQL
    assert "pip install -q -e .[dev]" in calls
    assert setup(checkout, "--test") == []  # idempotent
    assert setup(checkout) == []  # the dev install holds everything running needs


def test_an_unknown_option_is_one_line_and_exit_2(checkout: Path) -> None:
    done = subprocess.run(
        ["bash", str(checkout / "scripts" / "setup.sh"), "--tests"],
        env={"PATH": str(checkout.parent / "bin")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and done.stderr == "setup: unknown option --tests (expected --test or nothing)\n"

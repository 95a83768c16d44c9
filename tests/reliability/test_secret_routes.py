"""Secrets reach packer only through its own process environment, on every path; everything packer
prints is masked in every escaped form; a secret as a flow parameter is refused.

Packer here is a recording wrapper on ``PACKER``: it writes its own ``/proc/self/cmdline`` (what ``ps``
shows) and environment, then runs the real packer, or (``FAKE_PACKER_ECHO``) prints the secret the way
``packer validate`` quotes a var file, escaped newlines included, and fails.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.e2e.conftest import BAKE, REPO

pytestmark = pytest.mark.e2e
TARGET = "docker"

WRAPPER = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys
    record = {{
        "cmdline": open("/proc/self/cmdline", "rb").read().decode(errors="replace").split("\\0"),
        "env": {{k: v for k, v in os.environ.items() if k.startswith("PKR_VAR_")}},
        "parent_env": open(f"/proc/{{os.getppid()}}/environ", "rb").read().decode(errors="replace"),
    }}
    with open(os.environ["FAKE_PACKER_LOG"], "a") as log:
        log.write(json.dumps(record) + "\\n")
    echo = os.environ.get("FAKE_PACKER_ECHO")
    if echo and sys.argv[1:2] == ["validate"]:
        value = os.environ.get("PKR_VAR_" + echo, "")
        for arg in sys.argv:
            if arg.endswith(".pkrvars.hcl"):
                value = value or open(arg).read()
        escaped = value.replace("\\n", "\\\\n")
        print("Error: Invalid value for variable\\n  on x.pkrvars.hcl line 1:", file=sys.stderr)
        print(f"  1: {{echo}} = \\"{{escaped}}\\"", file=sys.stderr)
        print(value, file=sys.stderr)
        print(json.dumps(value), file=sys.stderr)
        sys.exit(1)
    os.execv("/usr/bin/packer", ["packer", *sys.argv[1:]])
    """
)


def multi_line_secret() -> str:
    token = secrets.token_hex(8)
    return f"-----BEGIN TEST KEY-----\nline-{token}-one\nline-{token}-two\n-----END TEST KEY-----"


def forms(secret: str) -> list[str]:
    """Every way the secret (or a line of it) could show."""
    lines = [line for line in secret.splitlines() if "line-" in line]
    return [secret, secret.replace("\n", "\\n"), json.dumps(secret), *lines]


@pytest.fixture
def packer_wrapper(tmp_path: Path) -> tuple[Path, Path]:
    wrapper = tmp_path / "packer"
    wrapper.write_text(WRAPPER.format(python=sys.executable))
    wrapper.chmod(0o755)
    return wrapper, tmp_path / "packer-calls.jsonl"


def bake(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BAKE, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def calls(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_secret_var_reaches_real_packer_by_its_environment_only(
    packer_wrapper: tuple[Path, Path], tmp_path: Path
) -> None:
    """`bake validate --var registry_password=...` (real packer): the value is in no packer command line
    (`/proc/<pid>/cmdline`) and not in bake's own environment, only in packer's (`PKR_VAR_registry_password`)."""
    wrapper, log = packer_wrapper
    secret = f"pw-{secrets.token_hex(12)}"
    env = {**os.environ, "PACKER": str(wrapper), "FAKE_PACKER_LOG": str(log)}
    result = bake("validate", "--var", f"registry_password={secret}", "--var", "registry_username=bob", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    recorded = calls(log)
    validate = [c for c in recorded if "validate" in c["cmdline"]]  # type: ignore[operator]
    assert validate, recorded
    for call in recorded:
        assert secret not in " ".join(call["cmdline"])  # type: ignore[arg-type]
        assert secret not in str(call["parent_env"])  # bake's own environment never had it
    assert any("-var" in c["cmdline"] and "registry_username=bob" in c["cmdline"] for c in validate)  # type: ignore[operator]
    assert all(c["env"] == {"PKR_VAR_registry_password": secret} for c in validate)
    assert secret not in result.stderr + result.stdout


@pytest.mark.parametrize("route", ["--var", "--var-file"])
def test_packer_validate_output_is_masked_in_every_escaped_form(
    packer_wrapper: tuple[Path, Path], tmp_path: Path, route: str
) -> None:
    """A multi-line secret from `--var` or a var file: packer validate's error quotes it raw, with `\\n`
    escaped and JSON-quoted; bake's one line shows none of it."""
    wrapper, log = packer_wrapper
    secret = multi_line_secret()
    env = {**os.environ, "PACKER": str(wrapper), "FAKE_PACKER_LOG": str(log), "FAKE_PACKER_ECHO": "registry_password"}
    if route == "--var":
        args = ["--var", f"registry_password={secret}"]
    else:
        var_file = tmp_path / "secret.pkrvars.hcl"
        var_file.write_text(f"registry_password = <<EOT\n{secret}\nEOT\n")
        args = ["--var-file", str(var_file)]
    result = bake("validate", *args, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "<sensitive>" in result.stderr
    for form in forms(secret):
        assert form not in result.stderr + result.stdout, form
    for call in calls(log):
        assert "line-" not in " ".join(call["cmdline"])  # type: ignore[arg-type]


def test_secret_as_flow_parameter_is_refused() -> None:
    """A UI/deployment run with a secret-named variable as a parameter is refused, pointing at the ways
    that work; so is a template-`sensitive` one."""
    from tasks.build import static_checks
    from tasks.errors import UsageError
    from tasks.request import prepare

    with pytest.raises(UsageError, match=r"variables: registry_password: .*PKR_VAR_registry_password.*Secret block"):
        prepare(variables={"registry_password": "x"}, template_dir=REPO / "packer")
    with pytest.raises(UsageError, match=r"azure_client_secret"):
        prepare(variables={"azure_client_secret": "x"}, template_dir=REPO / "packer")
    request = prepare(variables={"instance_type": "t3.small"}, template_dir=REPO / "packer")
    static_checks(request)  # a plain variable passes


def test_sensitive_variable_as_flow_parameter_is_refused(tmp_path: Path) -> None:
    """A variable the templates mark `sensitive`, whatever its name, is refused as a flow parameter."""
    import shutil

    from tasks.build import static_checks
    from tasks.errors import UsageError
    from tasks.request import prepare

    shutil.copytree(REPO / "packer", tmp_path / "packer")
    (tmp_path / "packer" / "extra.pkr.hcl").write_text(
        'variable "db_phrase" {\n  type      = string\n  default   = ""\n  sensitive = true\n}\n'
    )
    request = prepare(variables={"db_phrase": "x"}, template_dir=tmp_path / "packer")
    with pytest.raises(UsageError, match="db_phrase: marked sensitive in the templates"):
        static_checks(request)


def test_rebuild_refuses_secret_variables_in_families_file(tmp_path: Path) -> None:
    """`bake rebuild` with a secret under `variables:` in families.yaml: exit 2, one line, before Prefect."""
    families = tmp_path / "families.yaml"
    families.write_text("families:\n  - family: app-base\n    variables: {registry_password: hunter22}\n")
    result = bake("rebuild", "--families", str(families), env={**os.environ})
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert "families[0].variables: registry_password" in line and "Secret block" in line
    assert "hunter22" not in result.stderr


def test_worker_environment_untouched_in_process(
    packer_wrapper: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In one worker process, `--var` secrets never land in os.environ (other flows would see them)."""
    from flows.cli import main

    wrapper, log = packer_wrapper
    monkeypatch.setenv("PACKER", str(wrapper))
    monkeypatch.setenv("FAKE_PACKER_LOG", str(log))
    monkeypatch.chdir(REPO)
    secret = f"pw-{secrets.token_hex(12)}"
    assert main(["validate", "--var", f"registry_password={secret}"]) == 0
    assert not [k for k in os.environ if k.startswith("PKR_VAR_")]
    assert any(c["env"].get("PKR_VAR_registry_password") == secret for c in calls(log))  # type: ignore[attr-defined]

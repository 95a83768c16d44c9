"""Registry credentials from a Prefect block (issue 12): ``--registry-credentials-block`` / the flows'
``registry_credentials`` are checked like the registry options (exit 2, one line), and the login a block
gives (``image_registry.using_login``) comes before ``docker login``'s config.json, which comes before none.
Against Debian's docker-registry with htpasswd authentication on 127.0.0.1 (tests/registry_server.py)."""

from __future__ import annotations

import base64
import inspect
import json
import os
from pathlib import Path
from typing import Any

import pytest
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema

from flows.blocks import BLOCK_NAME_RE
from flows.cli import main
from flows.pipeline import image_build, image_pipeline, image_test
from flows.promote import promote, rollback
from flows.rebuild import pipeline_parameters, rebuild
from flows.retention import image_retention
from flows.sweep import sweep_leftovers as sweep
from tasks.errors import UsageError
from tasks.request import FamilySpec, PipelineParameters, check_registry_credentials, prepare
from tasks.targets.docker.image_registry import (
    Login,
    RegistryClient,
    RegistryError,
    context_login,
    credentials,
    helper_auth,
    parse_registry,
    registry_host,
    using_login,
)
from tasks.targets.docker.registry_stages import RegistryStages
from tests.registry_server import running_registry
from tests.unit.test_registry_faults import login

FLAG = "--registry-credentials-block"


@pytest.fixture(autouse=True)
def _no_registry_in_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BAKERY_REGISTRY", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-login"))


def one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.splitlines() == [err] and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "argv",
    [
        ["promote", "--family", "app", "--to", "production"],
        ["rollback", "--family", "app"],
        ["retention"],
        ["build"],
        ["run"],
        ["test", "--image", "app:1"],
        ["rollback", "--target", "aws", "--family", "app"],
        ["sweep"],
    ],
)
def test_the_block_option_without_a_registry_exits_2_naming_it(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    err = one_line_exit_2([*argv, FLAG, "team-registry"], capsys)
    assert f"{FLAG} team-registry: only with a registry" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["promote", "--family", "app", "--to", "production", "--registry", "127.0.0.1:5000"],
        ["retention", "--registry", "127.0.0.1:5000"],
        ["build", "--registry", "127.0.0.1:5000"],
        ["sweep", "--registry", "127.0.0.1:5000"],
    ],
)
def test_a_bad_block_name_exits_2_naming_it(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    err = one_line_exit_2([*argv, FLAG, "Team_Registry"], capsys)
    assert f"{FLAG} 'Team_Registry': not a Prefect block name" in err


def test_the_environments_registry_is_a_registry_too(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_registry_credentials(None, "") == ""
    with pytest.raises(UsageError, match=rf"^{FLAG} creds: only with a registry"):
        prepare(registry_credentials="creds", template_dir="packer")
    with pytest.raises(UsageError, match=rf"^{FLAG} 'Bad Name': not a Prefect block name"):
        prepare(registry_credentials="Bad Name", registry="127.0.0.1:5000")
    monkeypatch.setenv("BAKERY_REGISTRY", "127.0.0.1:5000/team")
    request = prepare(registry_credentials="creds")
    assert request.registry_credentials == "creds"
    assert request.as_parameters()["registry_credentials"] == "creds"  # the name travels, never a value
    with pytest.raises(UsageError, match=rf"^{FLAG} creds: only with a registry"):
        prepare(target="aws", registry_credentials="creds")  # AWS has no registry, whatever the environment


def test_every_flow_with_a_registry_takes_the_block_name_with_the_models_default_and_rule() -> None:
    default = PipelineParameters.model_fields["registry_credentials"].default
    rule = PipelineParameters.model_json_schema()["properties"]["registry_credentials"]["pattern"]
    assert default == "" and rule == f"^$|{BLOCK_NAME_RE.pattern}"  # the UI form checks it as bake does
    for flow in (image_pipeline, image_build, image_test, promote, rollback, image_retention, rebuild, sweep):
        parameter = inspect.signature(flow.fn).parameters["registry_credentials"]
        assert parameter.default == default, flow.name
        assert parameter_schema(flow).model_dump()["properties"]["registry_credentials"]["pattern"] == rule
    flag = PipelineParameters.model_fields["registry_credentials"].json_schema_extra
    assert isinstance(flag, dict) and flag["flag"] == FLAG


def test_a_flow_refuses_a_bad_block_name_before_it_runs() -> None:
    for flow in (image_pipeline, promote, image_retention, rebuild, sweep):
        with pytest.raises(ParameterTypeError) as raised:
            flow.validate_parameters({"registry_credentials": "Bad_Name"})
        assert "registry_credentials" in str(raised.value) and "not a Prefect block name" in str(raised.value)


@pytest.mark.parametrize(
    ("flow", "given"),
    [
        (promote, {"family": "app", "to": "production"}),
        (rollback, {"family": "app"}),
        (image_retention, {}),
    ],
    ids=["promote", "rollback", "retention"],
)
def test_a_housekeeping_flow_refuses_the_block_without_a_registry(flow: Any, given: dict[str, Any]) -> None:
    with pytest.raises(UsageError, match=rf"^{FLAG} creds: only with a registry"):
        flow.fn(registry_credentials="creds", **given)


def test_a_families_entry_names_its_registrys_block_and_the_rebuilds_is_the_default() -> None:
    spec = FamilySpec.read({"family": "app", "registry": "127.0.0.1:5000", "registry_credentials": "app-login"}, "f")
    assert "registry_credentials" not in spec.pipeline_arguments()
    blocks: dict[str, Any] = {"aws_credentials": None, "secret_vars": {}, "registry_credentials": "team-login"}
    assert pipeline_parameters(spec, "docker", blocks)["registry_credentials"] == "app-login"
    plain = FamilySpec.read({"family": "app", "registry": "127.0.0.1:5000"}, "f")
    assert pipeline_parameters(plain, "docker", blocks)["registry_credentials"] == "team-login"
    assert "registry_credentials" not in pipeline_parameters(plain, "docker", {"aws_credentials": None})
    assert "registry_credentials" not in pipeline_parameters(spec, "aws", blocks)  # AWS has no registry
    local = FamilySpec.read({"family": "app"}, "f")
    assert "registry_credentials" not in pipeline_parameters(local, "docker", blocks)  # the engine only
    with pytest.raises(UsageError, match=r"^app: registry_credentials app-login: only with a registry"):
        pipeline_parameters(FamilySpec.read({"family": "app", "registry_credentials": "app-login"}, "f"), "docker", {})
    with pytest.raises(UsageError, match=r"f\.registry_credentials 'Bad!'"):
        FamilySpec.read({"family": "app", "registry_credentials": "Bad!"}, "f")


def test_the_login_given_wins_over_docker_config_and_none_is_anonymous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = "127.0.0.1:5999"
    assert credentials(host) == (None, "")  # no login anywhere: anonymous
    monkeypatch.setenv("DOCKER_CONFIG", str(login(tmp_path / "config", host, "alice", "from-config")))
    stored, source = credentials(host)
    assert stored is not None and source == ""
    with using_login("bob", "from-block", f"http://{host}/v2/", "the Prefect block 'b'"):
        given = context_login(host)
        assert given is not None and given.username == "bob"
        assert credentials(host) == (Login(host, "bob", "from-block").basic(), "the Prefect block 'b'")
        assert credentials("127.0.0.1:6000") == (None, "")  # another registry never gets the block's login
        assert "from-block" not in repr(given)
    assert credentials(host) == (stored, "")  # the context is over
    assert registry_host("HTTPS://Registry.Example.com:443/v2/") == "registry.example.com:443"


def test_against_a_registry_with_htpasswd_the_block_login_is_used_and_a_refusal_names_the_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_registry(tmp_path / "registry", users={"alice": "right"}) as host:
        registry = parse_registry(host)
        monkeypatch.setenv("DOCKER_CONFIG", str(login(tmp_path / "wrong", host, "alice", "wrong")))
        with using_login("alice", "right", host, "the Prefect block 'team'"):  # wins over the stored wrong one
            RegistryClient(registry).check()
            assert RegistryStages(registry, locks=tmp_path).family_images("app") == []
        with (
            using_login("alice", "not-the-password", host, "the Prefect block 'team'"),
            pytest.raises(RegistryError) as raised,
        ):
            RegistryClient(registry).check()
        assert str(raised.value) == (
            f"registry {host}: checking the API: the login of the Prefect block 'team' was refused "
            "(check its username and password)"
        )
        assert "not-the-password" not in str(raised.value)
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nobody"))
        with pytest.raises(RegistryError, match="authentication required and no login stored"):
            RegistryClient(registry).check()  # anonymous


def test_rebuild_checks_its_block_name_before_prefect_starts(capsys: pytest.CaptureFixture[str]) -> None:
    err = one_line_exit_2(["rebuild", FLAG, "Bad_Name"], capsys)
    assert f"{FLAG} 'Bad_Name': not a Prefect block name" in err


HELPER = """#!/bin/sh
# docker-credential-{name}: the credential helper protocol (``get``: the server on stdin, JSON on stdout)
[ "$1" = get ] || exit 1
read -r server
if [ "$server" = "{host}" ]; then
  printf '{{"ServerURL":"%s","Username":"alice","Secret":"%s"}}' "$server" "$(cat '{secret}')"
else
  echo "credentials not found in native keychain"; exit 1
fi
"""


def credential_helper(directory: Path, name: str, host: str, password: str) -> Path:
    """An executable ``docker-credential-<name>`` in ``directory`` that holds ``password`` for ``host``."""
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / f"{name}.secret"
    secret.write_text(password)
    return scripted_helper(directory, name, HELPER.format(name=name, host=host, secret=secret))


def scripted_helper(directory: Path, name: str, script: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    program = directory / f"docker-credential-{name}"
    program.write_text(script)
    program.chmod(0o755)
    return directory


def docker_config(directory: Path, config: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("setting", ["credHelpers", "credsStore"])
def test_a_login_docker_keeps_in_a_credential_helper_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    """``docker login`` with a credential helper (Docker Desktop, pass, secretservice) leaves no ``auth``
    in config.json, only the helper's name: the registry client asks the helper, as Docker does, and the
    helper wins over an ``auth`` left in the file (Docker reads that only when no helper is named)."""
    with running_registry(tmp_path / "registry", users={"alice": "right"}) as host:
        helpers = credential_helper(tmp_path / "bin", "bakerytest", host, "right")
        monkeypatch.setenv("PATH", f"{helpers}:{os.environ['PATH']}")
        stale = base64.b64encode(b"alice:stale").decode()
        named = {"credHelpers": {host: "bakerytest"}} if setting == "credHelpers" else {"credsStore": "bakerytest"}
        config = docker_config(tmp_path / "config", {"auths": {host: {"auth": stale}}, **named})
        monkeypatch.setenv("DOCKER_CONFIG", str(config))

        RegistryClient(parse_registry(host)).check()
        if setting == "credsStore":  # the store is asked for every registry; it has nothing for this one
            assert credentials("127.0.0.1:1") == (None, "")

        (helpers / "bakerytest.secret").write_text("wrong")
        with pytest.raises(RegistryError) as raised:
            RegistryClient(parse_registry(host)).check()
        assert f"the stored login for {host} was refused" in str(raised.value)


@pytest.mark.parametrize(
    ("script", "why"),
    [
        (
            '#!/bin/sh\nprintf \'{"Username":"u","Secret":"s3cret-in-output"}\'; exit 3\n',
            "it exited with status 3",
        ),
        ("#!/bin/sh\necho 'not json'\n", "its answer is not a login (a JSON object with Username and Secret)"),
        ('#!/bin/sh\necho \'{"Secret": "s3cret-in-output"}\'\n', "its answer is not a login"),
        ("#!/bin/sh\necho null\n", "its answer is not a login"),
        (
            '#!/bin/sh\necho \'{"Username": "<token>", "Secret": "s3cret-in-output"}\'\n',
            "it holds an identity token (an OAuth refresh token), which bakery cannot use",
        ),
        ("#!/bin/sh\nexec sleep 30\n", "no answer within 1 s"),
    ],
    ids=["fails", "not-json", "no-username", "null", "identity-token", "hangs"],
)
def test_a_credential_helper_that_cannot_give_a_login_is_one_line_naming_it_never_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, why: str
) -> None:
    monkeypatch.setenv("PATH", f"{scripted_helper(tmp_path / 'bin', 'odd', script)}:{os.environ['PATH']}")
    with pytest.raises(RegistryError) as raised:
        helper_auth("odd", "127.0.0.1:5999", timeout=1)
    message = str(raised.value)
    assert message.startswith("registry 127.0.0.1:5999: reading the login docker stored with docker-credential-odd")
    assert why in message and "s3cret-in-output" not in message and "\n" not in message


def test_a_helper_named_but_not_installed_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = "127.0.0.1:5999"
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "config", {"credHelpers": {host: "nosuch"}})))
    with pytest.raises(RegistryError) as missing:
        RegistryClient(parse_registry(host))
    assert str(missing.value) == (
        f"registry {host}: reading the login docker stored with docker-credential-nosuch failed: "
        "docker-credential-nosuch is not installed or not on PATH (config.json names it)"
    )
    assert credentials("127.0.0.1:6000") == (None, "")  # credHelpers names it for that one registry only

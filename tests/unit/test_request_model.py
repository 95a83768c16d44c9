"""One request model (tasks/request.py): the CLI's options, the flows' parameters (and so the Prefect UI
form), prepare and families.yaml share its rules, and pydantic's verdict reaches the user as one line."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema

from flows.cli import main
from flows.pipeline import image_build, image_pipeline, image_test
from flows.promote import promote, rollback
from flows.rebuild import rebuild
from tasks import inputs
from tasks.errors import UsageError
from tasks.request import AwsOptions, PipelineParameters, parameters, prepare

REPO = Path(__file__).resolve().parents[2]
PIPELINE_FLOWS = (image_pipeline, image_build, image_test)


def _schema_rule(properties: dict[str, Any], name: str) -> dict[str, Any]:
    """The constraints of one property of a JSON schema (pattern, enum, bounds), optional or not."""
    prop = properties[name]
    for choice in prop.get("anyOf", [prop]):
        if choice.get("type") != "null":
            return {k: v for k, v in choice.items() if k in ("pattern", "enum", "minimum", "maximum", "minLength")}
    return {}


@pytest.mark.parametrize("flow", PIPELINE_FLOWS, ids=lambda f: f.name)
def test_a_pipeline_flow_takes_the_models_parameters_with_its_rules_and_defaults(flow: Any) -> None:
    model_schema = PipelineParameters.model_json_schema()["properties"]
    flow_schema = parameter_schema(flow).model_dump()["properties"]
    shared = [name for name in inspect.signature(flow.fn).parameters if name in PipelineParameters.model_fields]
    assert len(shared) >= 8
    for name in shared:
        default = inspect.signature(flow.fn).parameters[name].default
        model_default = PipelineParameters.model_fields[name].default
        assert (default if default is not None else type(model_default)()) == model_default, name
        if name != "aws":
            assert _schema_rule(flow_schema, name) == _schema_rule(model_schema, name), name


def test_the_pipeline_takes_every_parameter_of_the_model() -> None:
    assert set(PipelineParameters.model_fields) <= set(inspect.signature(image_pipeline.fn).parameters)


def test_the_ui_form_gets_the_same_rules_as_the_cli_and_the_template() -> None:
    """The patterns are inputs.FAMILY_PATTERN/VERSION_PATTERN, which packer/variables.pkr.hcl's validation
    blocks carry too (tests/unit/test_inputs.py)."""
    schema = parameter_schema(image_pipeline).model_dump()
    properties = schema["properties"]
    assert properties["family"]["pattern"] == inputs.FAMILY_PATTERN
    assert properties["version"]["pattern"] == f"^$|{inputs.VERSION_PATTERN}"
    assert properties["target"]["enum"] == list(inputs.TARGETS)
    assert properties["ttl"]["pattern"] == inputs.DURATION_PATTERN
    aws = schema["definitions"]["AwsOptions"]
    assert aws["additionalProperties"] is False
    assert _schema_rule(aws["properties"], "subnet")["pattern"].startswith("^subnet-")
    assert _schema_rule(aws["properties"], "ssh_address")["enum"] == ["private", "public"]
    assert _schema_rule(parameter_schema(rebuild).model_dump()["properties"], "max_parallel") == {
        "minimum": 1,
        "maximum": 8,
    }
    for flow in (promote, rollback):
        assert _schema_rule(parameter_schema(flow).model_dump()["properties"], "family")["pattern"] == (
            inputs.FAMILY_PATTERN
        )


@pytest.mark.parametrize(
    ("flow", "given", "field", "message"),
    [
        (image_pipeline, {"family": "Bad Name"}, "family", "not a valid image family"),
        (image_pipeline, {"ttl": "soon"}, "ttl", "not a duration"),
        (image_pipeline, {"aws": {"subnet": "sn-1"}}, "subnet", "not a subnet id"),
        (image_pipeline, {"aws": {"subnetid": "subnet-0123456789abcdef0"}}, "subnetid", "Extra inputs"),
        (image_test, {"image": "x", "target": "gcp"}, "target", "unknown target"),
        (rebuild, {"max_parallel": 9}, "max_parallel", "less than or equal to 8"),
        (promote, {"min_soak": "1y"}, "min_soak", "not a duration"),
    ],
)
def test_a_deployment_run_with_a_bad_parameter_is_refused_before_it_starts(
    flow: Any, given: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ParameterTypeError) as raised:
        flow.validate_parameters(given)
    assert field in str(raised.value) and message in str(raised.value)


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["run", "--family", "Bad Name"], f"bake run: --family 'Bad Name': {inputs.FAMILY_PROBLEM}"),
        (["build", "--version", "-1"], f"bake build: --version '-1': {inputs.VERSION_PROBLEM}"),
        (["run", "--ttl", "soon"], f"bake run: --ttl 'soon': {inputs.DURATION_PROBLEM}"),
        (["build", "--build-timeout", "99999d"], "bake build: --build-timeout '99999d': too long (at most 3650d)"),
        (["build", "--target", "gcp"], "bake build: --target 'gcp': unknown target (expected one of docker, aws)"),
        (
            ["build", "--template-dir", ""],
            "bake build: --template-dir '': String should have at least 1 character",
        ),
        (
            ["build", "--version-var", "1x"],
            "bake build: --version-var '1x': not a Packer variable name (expected ^[A-Za-z_][A-Za-z0-9_-]*$)",
        ),
        (
            ["test", "--target", "aws", "--image", "ami-1", "--ssh-address", "elastic"],
            "bake test: --ssh-address 'elastic': expected private or public",
        ),
        (
            ["run", "--target", "aws", "--instance-type", "huge"],
            "bake run: --instance-type 'huge': not an instance type (expected e.g. t3.micro)",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_flag_value_and_expectation(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str], line: str
) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [line]
    assert "validation error" not in err and "pydantic" not in err and "Traceback" not in err


def test_a_checked_request_is_the_parameters_a_flow_takes() -> None:
    request = prepare(
        target="aws",
        template_dir=REPO / "packer",
        spec=REPO / "packer/test/image_spec.yaml",
        variables=["instance_type=t3.small"],
        ttl="90m",
        aws={"subnet": "subnet-0123456789abcdef0", "ssh_cidr": "198.51.100.0/24"},
    )
    given = request.as_parameters()
    assert set(given) == set(PipelineParameters.model_fields)
    assert PipelineParameters.model_validate(given).aws == AwsOptions(
        subnet="subnet-0123456789abcdef0", ssh_cidr="198.51.100.0/24"
    )
    assert prepare(**given).as_parameters() == given
    assert given["ttl"] == "5400s" and given["variables"] == {"instance_type": "t3.small"}


@pytest.mark.parametrize("variables", [{"db_password": "hunter2"}, {"db_password": 7}, ["db_password=hunter2"]])
def test_a_secret_named_variable_is_refused_without_echoing_its_value(variables: Any) -> None:
    with pytest.raises(UsageError) as raised:
        parameters(variables=variables)
    assert "db_password" in str(raised.value) and "hunter2" not in str(raised.value)
    assert "7" not in str(raised.value).replace("PKR_VAR_", "")


def test_unknown_parameters_are_refused() -> None:
    with pytest.raises(UsageError, match=r"^colour: unknown option$"):
        parameters(colour="red")


@pytest.mark.parametrize(
    ("given", "line"),
    [
        ({"aws": {"subnet": "sn-1"}}, "--subnet 'sn-1': not a subnet id (expected subnet-0123456789abcdef0)"),
        ({"aws": {"ssh_cidr": "10.0.0.1/8"}}, "--ssh-cidr '10.0.0.1/8': not a CIDR block"),
        ({"spec_vars": {"port": [80]}}, "spec_vars.port: expected text, got list"),
        ({"strict": "maybe"}, "--strict 'maybe': expected true or false"),
        ({"var_files": "one.pkrvars.hcl"}, "--var-file: expected a list, got str"),
    ],
)
def test_a_flow_parameter_problem_names_the_flag_it_comes_from(given: dict[str, Any], line: str) -> None:
    with pytest.raises(UsageError) as raised:
        parameters(**given)
    assert str(raised.value).startswith(line) and "\n" not in str(raised.value)

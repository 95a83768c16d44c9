"""The weekly rebuild's choice: each family in-process, or as an image-pipeline deployment run (issue 12)."""

from __future__ import annotations

import pytest

from flows.cli import build_parser
from flows.rebuild import PIPELINE_WAIT, pipeline_parameters
from tasks.rebuild import FamilySpec, FamilySummary, fans_out


@pytest.mark.parametrize(
    ("asked", "deployment_id", "expected"),
    [
        (None, None, False),  # `bake rebuild` from a shell: in-process, as before
        (None, "5f1c7a52-0000-4000-8000-000000000001", True),  # the weekly-rebuild deployment: fan out
        (True, None, True),  # --fan-out from a shell
        (False, "5f1c7a52-0000-4000-8000-000000000001", False),  # fan_out: false on the deployment
    ],
)
def test_a_rebuild_fans_out_when_it_runs_from_a_deployment_unless_told(
    asked: bool | None, deployment_id: str | None, expected: bool
) -> None:
    assert fans_out(asked, deployment_id) is expected


@pytest.mark.parametrize(("argv", "expected"), [([], None), (["--fan-out"], True), (["--in-process"], False)])
def test_bake_rebuild_fan_out_options(argv: list[str], expected: bool | None) -> None:
    assert build_parser().parse_args(["rebuild", *argv]).fan_out is expected


def test_fan_out_and_in_process_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["rebuild", "--fan-out", "--in-process"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_the_deployment_run_gets_the_in_process_parameters_with_block_names_only() -> None:
    spec = FamilySpec(family="web", template_dir="packer", variables={"region": "x"}, targets=("docker",))
    parameters = pipeline_parameters(spec, "docker", {"aws_credentials": None, "secret_vars": {"token": "tok-block"}})
    assert parameters["family"] == "web" and parameters["target"] == "docker"
    assert parameters["variables"] == {"region": "x"}
    assert parameters["secret_vars"] == {"token": "tok-block"}  # a block name, never the secret
    assert PIPELINE_WAIT.total_seconds() == 2 * 3600  # twice the pipeline's build_timeout default (1h)


def test_the_summary_names_the_pipeline_run() -> None:
    summary = FamilySummary(family="web", target="docker", result="staged", version="1", pipeline_run="web-docker-of-x")
    assert "`web-docker-of-x`" in summary.to_markdown()
    assert summary.row()["pipeline run"] == "web-docker-of-x"
    assert summary.to_dict()["pipeline_run"] == "web-docker-of-x"

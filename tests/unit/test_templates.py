"""Bring-your-own templates: bakery adapts to the template set (sources, variables, artifact, Packer
version), lint findings have a severity, and warnings can be waived or made errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli import main
from tasks import build, lint, packer
from tasks.errors import JobFailed, UsageError
from tasks.request import prepare

# A template set as people write them: no image_version, no manifest_path, no cleanup, no tags.
PLAIN = """
source "docker" "example" {
  image  = "bakery/debian:bookworm"
  pull   = false
  commit = true
}

build {
  sources = ["source.docker.example"]

  provisioner "shell" {
    inline = ["echo hello > /hello.txt"]
  }
}
"""

AMI = """
source "amazon-ebs" "example" {
  ami_name      = "example"
  instance_type = "t2.micro"
  region        = "us-east-1"
  source_ami    = "ami-12345678"
  ssh_username  = "ubuntu"
}

build {
  sources = ["source.amazon-ebs.example"]

  provisioner "shell" {
    inline = ["echo hello"]
  }
}
"""


def template_dir(tmp_path: Path, text: str = PLAIN, name: str = "main.pkr.hcl") -> Path:
    directory = tmp_path / "templates"
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(text)
    return directory


def request_for(directory: Path, **options: object) -> object:
    return prepare(template_dir=directory, spec=Path(__file__), **options)  # type: ignore[arg-type]


def run_bake(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


# --- severities and waivers ----------------------------------------------------------------------


def test_every_rule_has_a_severity_and_the_seeds_gotchas_are_warnings() -> None:
    warnings = {rule for rule, (severity, _) in lint.RULES.items() if severity == "warning"}
    assert {"cloud-init-wait", "cleanup-last", "encrypt-boot", "version-tag"} <= warnings
    assert lint.RULES["unknown-source"][0] == "error"


def test_a_plain_template_has_warnings_only(tmp_path: Path) -> None:
    directory = template_dir(tmp_path, AMI)
    findings = lint.lint(lint.load_template_set(directory))
    assert sorted(f.rule for f in findings) == ["cleanup-last", "cloud-init-wait", "encrypt-boot", "version-tag"]
    assert {f.severity for f in findings} == {"warning"}
    assert lint.blocking(findings) == []
    assert len(lint.blocking(findings, strict=True)) == 4


def test_a_comment_waives_the_rule_on_its_line_or_the_line_below(tmp_path: Path) -> None:
    waived = AMI.replace(
        'source "amazon-ebs" "example" {',
        '# bakery:ignore encrypt-boot, version-tag -- the account encrypts by default\nsource "amazon-ebs" "example" {',
    ).replace('inline = ["echo hello"]', 'inline = ["echo hello"] # bakery:ignore cleanup-last')
    findings = lint.waive(lint.lint(lint.load_template_set(template_dir(tmp_path, waived))))
    by_rule = {f.rule: f for f in findings}
    assert by_rule["encrypt-boot"].waived == "# bakery:ignore"
    assert by_rule["cleanup-last"].waived == ""  # the finding is on the provisioner line, two lines up
    assert by_rule["cloud-init-wait"].waived == ""
    # Still listed, and said to be waived.
    assert "(waived by # bakery:ignore)" in str(by_rule["encrypt-boot"])
    assert by_rule["encrypt-boot"].as_dict()["waived"] == "# bakery:ignore"
    assert [f.rule for f in lint.blocking(findings, strict=True)] == ["cloud-init-wait", "cleanup-last"]


def test_a_comment_above_a_provisioner_waives_it(tmp_path: Path) -> None:
    waived = AMI.replace(
        '  provisioner "shell" {', '  // bakery:ignore cloud-init-wait cleanup-last\n  provisioner "shell" {'
    )
    findings = lint.waive(lint.lint(lint.load_template_set(template_dir(tmp_path, waived))))
    assert {f.rule for f in findings if f.waived} == {"cloud-init-wait", "cleanup-last"}


def test_lint_ignore_waives_per_run_and_errors_cannot_be_waived(tmp_path: Path) -> None:
    findings = lint.waive(lint.lint(lint.load_template_set(template_dir(tmp_path, AMI))), ("encrypt-boot",))
    assert [f.rule for f in findings if f.waived == "--lint-ignore"] == ["encrypt-boot"]
    assert lint.check_rule_names(["encrypt-boot,version-tag", "fmt"]) == ("encrypt-boot", "version-tag", "fmt")
    with pytest.raises(UsageError, match="no such lint rule"):
        lint.check_rule_names(["encrypt"])
    with pytest.raises(UsageError, match="cannot be waived"):
        lint.check_rule_names(["no-communicator"])
    broken = AMI.replace("source.amazon-ebs.example", "source.amazon-ebs.other")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "main.pkr.hcl").write_text("# bakery:ignore unknown-source\n" + broken)
    errors = lint.waive(lint.lint(lint.load_template_set(tmp_path / "b")), ("unknown-source",))
    assert [(f.rule, f.waived) for f in lint.blocking(errors)] == [("unknown-source", "")]


def test_strict_request_fails_on_warnings_and_lists_every_finding(tmp_path: Path) -> None:
    directory = template_dir(tmp_path, AMI)
    request = request_for(directory, target="aws", strict=True, lint_ignore=["encrypt-boot"])
    with pytest.raises(UsageError, match=r"--strict") as raised:
        build.static_checks(request)  # type: ignore[arg-type]
    assert raised.value.result is not None
    listed = {f["rule"]: f["waived"] for f in raised.value.result["findings"]}
    assert listed["encrypt-boot"] == "--lint-ignore"
    assert "encrypt-boot" not in str(raised.value)
    assert "cloud-init-wait" in str(raised.value)


# --- sources -------------------------------------------------------------------------------------


def test_the_one_source_of_the_targets_type_needs_no_only(tmp_path: Path) -> None:
    checked = build.static_checks(request_for(template_dir(tmp_path)))  # type: ignore[arg-type]
    assert checked.request.only == ("docker.example",)


def test_several_sources_of_the_type_are_listed_and_need_only(tmp_path: Path) -> None:
    two = PLAIN.replace(
        'source "docker" "example" {',
        'source "docker" "other" {\n  image = "x"\n  commit = true\n}\n\nsource "docker" "example" {',
    )
    two = two.replace(
        'sources = ["source.docker.example"]', 'sources = ["source.docker.other", "source.docker.example"]'
    )
    directory = template_dir(tmp_path, two)
    with pytest.raises(
        UsageError,
        match=r"2 docker sources for --target docker \(docker.other, docker.example\); choose one with --only",
    ):
        build.static_checks(request_for(directory))  # type: ignore[arg-type]
    chosen = build.static_checks(request_for(directory, only="docker.other"))  # type: ignore[arg-type]
    assert chosen.request.only == ("docker.other",)


def test_only_names_one_source_a_run_builds_and_tests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two sources in one run used to build both and test whichever the manifest listed last."""
    two = PLAIN.replace(
        'source "docker" "example" {',
        'source "docker" "other" {\n  image = "x"\n  commit = true\n}\n\nsource "docker" "example" {',
    ).replace('sources = ["source.docker.example"]', 'sources = ["source.docker.other", "source.docker.example"]')
    directory = template_dir(tmp_path, two)
    with pytest.raises(UsageError, match=r"^--only docker.other,docker.example: selects 2 sources"):
        build.static_checks(request_for(directory, only="docker.other,docker.example"))  # type: ignore[arg-type]
    code, _, err = run_bake(capsys, "build", "--template-dir", str(directory), "--only", "docker.other,docker.example")
    assert code == 2
    assert err.strip().splitlines() == [
        "bake build: --only docker.other,docker.example: selects 2 sources (docker.other, docker.example); "
        "a run builds and tests one image: name one source"
    ]


def test_a_build_recording_several_artifacts_is_a_failure_not_a_guess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [packer.ManifestBuild("example", "docker", f"sha256:{n}", 1, "u") for n in "ab"]
    monkeypatch.setattr(packer, "build", lambda *a, **k: packer.BuildResult(records, 1.0))
    checked = build.static_checks(request_for(template_dir(tmp_path)))  # type: ignore[arg-type]
    with pytest.raises(JobFailed, match="recorded 2 artifacts, expected one"):
        build.build(checked.request, checked.templates, tmp_path, "run-1")
    monkeypatch.setattr(packer, "build", lambda *a, **k: packer.BuildResult(records[:1], 1.0))
    assert build.build(checked.request, checked.templates, tmp_path, "run-1").artifact_id == "sha256:a"


def test_no_source_of_the_type_says_what_there_is(tmp_path: Path) -> None:
    with pytest.raises(
        UsageError, match=r"no amazon-ebs source in any build for --target aws \(builds: docker.example\)"
    ):
        build.static_checks(request_for(template_dir(tmp_path), target="aws"))  # type: ignore[arg-type]


def test_a_named_build_and_build_level_source_blocks(tmp_path: Path) -> None:
    """Packer's -only matches <build name>.<type>.<name>; a build-level source block may rename it."""
    named = AMI.replace("build {\n", 'build {\n  name = "learn"\n').replace(
        'sources = ["source.amazon-ebs.example"]', 'source "source.amazon-ebs.example" {\n    name = "hashicups"\n  }'
    )
    directory = template_dir(tmp_path, named)
    checked = build.static_checks(request_for(directory, target="aws"))  # type: ignore[arg-type]
    assert checked.request.only == ("learn.amazon-ebs.hashicups",)
    assert lint.provisioner_count(checked.templates, "learn.amazon-ebs.hashicups") == 1
    given = build.static_checks(request_for(directory, target="aws", only="amazon-ebs.hashicups"))  # type: ignore[arg-type]
    assert given.request.only == ("learn.amazon-ebs.hashicups",)


# --- variables -----------------------------------------------------------------------------------


def test_only_declared_variables_are_passed(tmp_path: Path) -> None:
    directory = template_dir(tmp_path)
    request = request_for(directory, version="1.2.3", variables=["flavor=vanilla"])
    templates = lint.load_template_set(directory)
    run_values = {"manifest_path": "/m.json", "run_id": "r", "expires_at": "t"}
    assert build.template_variables(templates, request, run_values) == {"flavor": "vanilla"}  # type: ignore[arg-type]
    (directory / "variables.pkr.hcl").write_text(
        'variable "image_version" {\n  type = string\n}\n\nvariable "run_id" {\n  type    = string\n  default = ""\n}\n'
    )
    templates = lint.load_template_set(directory)
    assert build.template_variables(templates, request, run_values) == {  # type: ignore[arg-type]
        "image_version": "1.2.3",
        "run_id": "r",
        "flavor": "vanilla",
    }


def test_version_var_names_the_variable_that_gets_the_version(tmp_path: Path) -> None:
    directory = template_dir(tmp_path)
    (directory / "variables.pkr.hcl").write_text('variable "release" {\n  type = string\n}\n')
    templates = lint.load_template_set(directory)
    request = request_for(directory, version="2.0.0", version_var="release")
    assert build.template_variables(templates, request) == {"release": "2.0.0"}  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"--version-var build: .* declares no such variable \(variables: release\)"):
        build.static_checks(request_for(directory, version_var="build"))  # type: ignore[arg-type]


# --- Packer version ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "constraint", "ok"),
    [
        ((1, 6, 6), ">= 1.7.0", False),
        ((1, 7, 0), ">= 1.7.0", True),
        ((1, 9, 4), "~> 1.9", True),
        ((2, 0, 0), "~> 1.9", False),
        ((1, 9, 4), "~> 1.9.1", True),
        ((1, 10, 0), "~> 1.9.1", False),
        ((1, 8, 0), ">= 1.7, < 1.8", False),
        ((1, 6, 6), "1.6.6", True),
        ((1, 6, 6), "!= 1.6.6", False),
    ],
)
def test_version_constraints(version: tuple[int, int, int], constraint: str, ok: bool) -> None:
    assert packer.satisfies(version, constraint) is ok


def test_required_plugins_on_an_old_packer_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plugins = (
        'packer {\n  required_plugins {\n    docker = {\n      version = ">= 1.0.8"\n'
        '      source  = "github.com/hashicorp/docker"\n    }\n  }\n}\n'
    )
    directory = template_dir(tmp_path, plugins + PLAIN)
    found = ".".join(map(str, packer.packer_version()))
    if packer.satisfies(packer.packer_version(), ">= 1.7.0"):
        pytest.skip(f"Packer {found} supports required_plugins")
    code, _, err = run_bake(capsys, "validate", "--template-dir", str(directory))
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert "main.pkr.hcl:2: the templates need Packer >= 1.7.0 (required_plugins, installed by packer init)" in line
    assert f"found Packer {found}" in line
    assert "Unsupported block type" not in err


def test_required_version_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = template_dir(tmp_path, 'packer {\n  required_version = ">= 99.0.0"\n}\n' + PLAIN)
    code, _, err = run_bake(capsys, "validate", "--template-dir", str(directory))
    assert code == 2
    assert "main.pkr.hcl:2: the templates need Packer >= 99.0.0 (required_version); found Packer" in err


# --- artifact lines ------------------------------------------------------------------------------


def test_records_from_artifact_lines_take_the_builders_artifact() -> None:
    lines = [
        "1,learn.docker.ubuntu,artifact,0,builder-id,packer.post-processor.docker-import",
        "1,learn.docker.ubuntu,artifact,0,id,sha256:0f40",
        "1,learn.docker.ubuntu,artifact,1,builder-id,packer.post-processor.docker-tag",
        "1,learn.docker.ubuntu,artifact,1,id,t:v1",
        "1,amazon-ebs.base,artifact,0,id,us-east-1:ami-1234%!(PACKER_COMMA)eu-west-1:ami-5678",
    ]
    artifacts: dict[str, dict[str, dict[str, str]]] = {}
    for text in lines:
        line = packer.parse_machine_line(text)
        assert line is not None
        artifacts.setdefault(line.target, {}).setdefault(line.data[0], {})[line.data[1]] = ",".join(line.data[2:])
    records = packer.records_from_artifacts(artifacts, 5)
    assert [(r.source, r.artifact_id) for r in records] == [
        ("docker.ubuntu", "sha256:0f40"),
        ("amazon-ebs.base", "us-east-1:ami-1234,eu-west-1:ami-5678"),
    ]


# --- bake validate on a plain template -----------------------------------------------------------


def test_bake_validate_passes_a_plain_template_and_json_lists_the_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    directory = template_dir(tmp_path)
    code, out, err = run_bake(
        capsys, "--json", "validate", "--template-dir", str(directory), "--lint-ignore", "version-tag"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["valid"] is True
    assert report["sources"] == ["docker.example"]
    rules = {f["rule"]: f for f in report["findings"]}
    assert rules["cleanup-last"]["severity"] == "warning"
    assert rules["version-tag"]["waived"] == "--lint-ignore"
    assert "warning: docker.example: the last provisioner must clean up" in caplog.text


def test_a_version_label_in_changes_counts_as_the_docker_version_tag(tmp_path: Path) -> None:
    labelled = PLAIN.replace("commit = true", 'commit = true\n  changes = ["LABEL version=\\"${var.v}\\""]')
    assert "LABEL" in labelled
    rules = [f.rule for f in lint.lint(lint.load_template_set(template_dir(tmp_path, labelled)))]
    assert rules == ["cleanup-last"]


# --- the tags bakery writes after a build --------------------------------------------------------


def test_build_tags_keep_the_templates_build_time_and_manager() -> None:
    from tasks.targets.aws.instances import build_tags

    image = {
        "CreationDate": "2026-12-01T10:00:00.000Z",
        "Tags": [{"Key": "ManagedBy", "Value": "Packer"}, {"Key": "BuildTime", "Value": "1796120000"}],
    }
    assert build_tags(image, "web", "1.2.0") == {
        "Name": "web-1.2.0",
        "Version": "1.2.0",
        "BuildTime": "1796120000",
        "ManagedBy": "Packer",
        "bakery:family": "web",  # bakery's own mark: retention without --family covers only these
    }
    # A template without tags, or whose ManagedBy names another tool: bakery's own values.
    other = {"CreationDate": "2026-12-01T10:00:00.000Z", "Tags": [{"Key": "ManagedBy", "Value": "terraform"}]}
    assert build_tags(other, "web", "1.2.0")["ManagedBy"] == "bakery"
    assert build_tags(other, "web", "1.2.0")["BuildTime"] == "2026-12-01T10:00:00.000Z"

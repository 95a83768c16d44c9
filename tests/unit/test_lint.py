"""The seed's "common gotchas" as lint rules, each on a small template set that breaks it once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import UsageError
from tasks.lint import lint, load_template_set, provisioner_count

VARIABLES = """
variable "image_version" {
  type = string
}

variable "manifest_path" {
  type    = string
  default = "build-manifest.json"
}
"""

AMI = """
source "amazon-ebs" "base" {
  region       = "us-east-1"
  encrypt_boot = true
  tags = {
    Name    = "app-base-${var.image_version}"
    Version = var.image_version
  }
}
"""

DOCKER = """
source "docker" "base" {
  image  = "bakery/debian:bookworm"
  commit = true
}
"""

WAIT = """
  provisioner "shell" {
    only   = ["amazon-ebs.base"]
    inline = ["while [ ! -f /var/lib/cloud/instance/boot-finished ]; do sleep 2; done"]
  }
"""
UPDATE = """
  provisioner "shell" {
    inline = ["apt-get update"]
  }
"""
CLEANUP = """
  provisioner "shell" {
    inline = ["apt-get clean", "rm -rf /tmp/*"]
  }
"""
TAG = """
  post-processor "docker-tag" {
    only       = ["docker.base"]
    repository = "app-base"
    tags       = [var.image_version]
  }
"""


def template_set(
    tmp_path: Path,
    *,
    sources: str = AMI + DOCKER,
    steps: str = WAIT + UPDATE + CLEANUP,
    post: str = TAG,
    variables: str = VARIABLES,
) -> Path:
    (tmp_path / "variables.pkr.hcl").write_text(variables)
    (tmp_path / "sources.pkr.hcl").write_text(sources)
    build = 'build {\n  sources = ["source.amazon-ebs.base", "source.docker.base"]\n' + steps + post + "}\n"
    (tmp_path / "build.pkr.hcl").write_text(build)
    return tmp_path


def rules(directory: Path, only: tuple[str, ...] = ()) -> list[tuple[str, str, int]]:
    return [(f.rule, f.file.name, f.line) for f in lint(load_template_set(directory), only)]


def test_a_correct_set_has_no_findings(tmp_path: Path) -> None:
    assert rules(template_set(tmp_path)) == []


def test_cloud_init_wait_must_come_first_on_cloud_sources(tmp_path: Path) -> None:
    directory = template_set(tmp_path, steps=UPDATE + WAIT + CLEANUP)
    # The first provisioner for the AMI (line 4 of build.pkr.hcl) is the update, not the wait.
    assert rules(directory) == [("cloud-init-wait", "build.pkr.hcl", 4)]
    # Docker has no cloud-init: the same set is fine for the docker source alone.
    assert rules(directory, ("docker.base",)) == []


def test_missing_cloud_init_wait(tmp_path: Path) -> None:
    assert [r[0] for r in rules(template_set(tmp_path, steps=UPDATE + CLEANUP))] == ["cloud-init-wait"]


def test_cleanup_must_be_last(tmp_path: Path) -> None:
    found = rules(template_set(tmp_path, steps=WAIT + CLEANUP + UPDATE))
    assert [r[0] for r in found] == ["cleanup-last", "cleanup-last"]
    assert {r[2] for r in found} == {13}  # the update, now last


def test_generalization_may_follow_cleanup(tmp_path: Path) -> None:
    deprovision = '\n  provisioner "shell" {\n    inline = ["/usr/sbin/waagent -force -deprovision+user"]\n  }\n'
    assert rules(template_set(tmp_path, steps=WAIT + UPDATE + CLEANUP + deprovision)) == []
    assert [r[0] for r in rules(template_set(tmp_path, steps=WAIT + CLEANUP + UPDATE + deprovision))] == [
        "cleanup-last",
        "cleanup-last",
    ]


def test_ami_without_encrypt_boot(tmp_path: Path) -> None:
    sources = AMI.replace("encrypt_boot = true", "encrypt_boot = false") + DOCKER
    assert rules(template_set(tmp_path, sources=sources)) == [("encrypt-boot", "sources.pkr.hcl", 2)]


def test_version_tag_through_a_local(tmp_path: Path) -> None:
    sources = (
        "locals {\n  image_tags = {\n    Version = var.image_version\n  }\n}\n"
        + AMI.replace(
            'tags = {\n    Name    = "app-base-${var.image_version}"\n    Version = var.image_version\n  }',
            "tags = local.image_tags",
        )
        + DOCKER
    )
    assert "local.image_tags" in sources
    assert rules(template_set(tmp_path, sources=sources)) == []
    broken = sources.replace("Version = var.image_version", "Other = 1")
    assert [r[0] for r in rules(template_set(tmp_path, sources=broken))] == ["version-tag"]


def test_ami_without_version_tag(tmp_path: Path) -> None:
    sources = AMI.replace("    Version = var.image_version\n", "") + DOCKER
    assert rules(template_set(tmp_path, sources=sources)) == [("version-tag", "sources.pkr.hcl", 5)]


def test_docker_image_without_version_tag(tmp_path: Path) -> None:
    assert rules(template_set(tmp_path, post="")) == [("version-tag", "sources.pkr.hcl", 11)]


def test_bakerys_own_variables_are_not_required(tmp_path: Path) -> None:
    """bakery passes image_version/manifest_path only to templates that declare them: no finding."""
    directory = template_set(tmp_path, variables='variable "other" {\n  type = string\n}\n')
    assert rules(directory) == []


def test_build_listing_an_undefined_source(tmp_path: Path) -> None:
    assert [r[0] for r in rules(template_set(tmp_path, sources=AMI))] == ["unknown-source"]


def test_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    directory = template_set(tmp_path)
    (directory / "broken.pkr.hcl").write_text('source "docker" "x" {\n  image = \n}\n')
    with pytest.raises(UsageError, match=r"broken\.pkr\.hcl:2:\d+: HCL syntax error near 'image ='"):
        load_template_set(directory)


def test_directory_without_templates(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no \*\.pkr\.hcl files"):
        load_template_set(tmp_path)


def test_provisioner_count_follows_only(tmp_path: Path) -> None:
    templates = load_template_set(template_set(tmp_path))
    assert provisioner_count(templates, "amazon-ebs.base") == 3
    assert provisioner_count(templates, "docker.base") == 2


def test_the_shipped_templates_pass(tmp_path: Path) -> None:
    packer_dir = Path(__file__).resolve().parents[2] / "packer"
    assert lint(load_template_set(packer_dir)) == []

"""Templates that know nothing of bakery build end to end (``bake build``), and bakery writes the names,
tags and labels it relies on itself.

- Docker: hashicorp/learn-packer-getting-started's ``example.pkr.hcl`` (tests/fixtures/templates, MIT),
  with its ``image`` pointed at the local base image (no registry here; see the fixture README). No
  image_version, no manifest post-processor, no tag, no label: the artifact comes from Packer's
  machine-readable output, and bakery tags ``<family>:<version>`` and commits the labels.
- AWS: a plain amazon-ebs template (no tags, no variables) against the moto server: the AMI and its
  snapshots get Name, Version, BuildTime, ManagedBy and status=testing.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from tests.aws_seam import ec2, image_and_snapshot_tags  # noqa: F401  (fixture)
from tests.e2e.conftest import Bake

pytestmark = pytest.mark.e2e

SETS = Path(__file__).resolve().parents[1] / "fixtures" / "templates"


@pytest.fixture
def family() -> Iterator[str]:
    """This test's own family; every image and container of it is removed afterwards."""
    name = f"t-templates-{uuid.uuid4().hex[:8]}"
    yield name
    engine = docker.from_env()
    for image in engine.images.list(name=name):
        for tag in image.tags:
            engine.images.remove(tag, noprune=False)


def test_a_public_docker_template_builds_and_bakery_names_and_labels_the_image(
    bake: Bake, family: str, tmp_path: Path
) -> None:
    directory = tmp_path / "learn-docker"
    shutil.copytree(SETS / "learn-docker", directory)
    template = directory / "example.pkr.hcl"
    # The one adaptation (fixture README): the local base image, which Packer must not try to pull.
    template.write_text(
        template.read_text().replace('image  = "ubuntu:xenial"', 'image  = "bakery/debian:bookworm"\n  pull   = false')
    )
    engine = docker.from_env()
    result = bake("--json", "build", "--template-dir", str(directory), "--family", family, "--version", "1.0.0")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["image"] == f"{family}:1.0.0"
    assert summary["stage"] == "testing"
    image = engine.images.get(f"{family}:1.0.0")
    assert image.id == summary["image_id"]
    assert image.labels["managed-by"] == "bakery"
    assert (image.labels["name"], image.labels["version"]) == (family, "1.0.0")
    # The artifact came from Packer's output (no manifest); Packer's own unlabelled image is the untagged
    # parent of the labelled one, and no build or relabelling container is left.
    log = (Path(summary["workdir"]) / "build.log").read_text()
    packers = [line.split(",")[-1] for line in log.splitlines() if ",artifact,0,id," in line]
    assert len(packers) == 1 and packers[0] != image.id
    assert not (Path(summary["workdir"]) / "manifest.json").exists()
    assert engine.api.inspect_image(image.id)["Parent"] == packers[0]
    assert engine.images.get(packers[0]).tags == []
    run_id = Path(summary["workdir"]).name
    assert engine.containers.list(all=True, filters={"name": f"bakery-build-{run_id}"}, ignore_removed=True) == []
    # Removing the image by its tag (as retention does) takes Packer's image with it: nothing is left.
    engine.images.remove(f"{family}:1.0.0")
    for gone in (image.id, packers[0]):
        with pytest.raises(docker.errors.ImageNotFound):
            engine.images.get(gone)


PLAIN_AMI = """
source "amazon-ebs" "plain" {
  region              = "us-east-1"
  custom_endpoint_ec2 = "ENDPOINT"
  ami_name            = "plain-{{timestamp}}"
  instance_type       = "t3.micro"
  source_ami          = "ami-785db401"
  communicator        = "none"
}

build {
  sources = ["source.amazon-ebs.plain"]
}
"""


def test_a_plain_amazon_ebs_template_gets_bakerys_tags(
    bake: Bake,
    aws_env: str,
    ec2: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    directory = tmp_path / "plain-aws"
    directory.mkdir()
    (directory / "main.pkr.hcl").write_text(PLAIN_AMI.replace("ENDPOINT", aws_env))
    family = f"t-templates-{uuid.uuid4().hex[:8]}"
    result = bake(
        "--json", "build", "--target", "aws", "--template-dir", str(directory), "--family", family, "--version", "2.0.0"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ami = json.loads(result.stdout)["image_id"]
    image_tags, snapshot_tags = image_and_snapshot_tags(ec2, ami)
    for tags in (image_tags, *snapshot_tags):
        assert tags["Name"] == f"{family}-2.0.0"
        assert tags["Version"] == "2.0.0"
        assert tags["ManagedBy"] == "bakery"
        assert tags["status"] == "testing"
        assert tags["BuildTime"]

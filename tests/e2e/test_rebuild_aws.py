"""Build only what changed, on AWS (a moto server): the template's newest base AMI and the inputs on the AMI.

moto stamps every AMI with "now" to the second; creation dates are set in its backend at the test seam.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from tasks import provenance
from tasks.provenance import BaseLookupError, BuildInputs
from tasks.rebuild import decide, observe
from tasks.request import prepare
from tasks.targets.aws import provenance as aws_provenance
from tasks.targets.base import StagedImage
from tests.support.moto import CountingMotoServer, ec2_backend, moto_server

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def moto() -> Iterator[CountingMotoServer]:
    with moto_server() as server:
        server.reset()
        yield server


@pytest.fixture
def ec2(moto: CountingMotoServer) -> Any:
    return boto3.client("ec2", region_name="us-east-1", endpoint_url=moto.url)


def ami(ec2: Any, name: str, day: int, tags: dict[str, str] | None = None) -> str:
    image_id = str(ec2.register_image(Name=name)["ImageId"])
    if tags:
        ec2.create_tags(Resources=[image_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    backend = ec2_backend().amis[image_id]
    backend.creation_date = T0 + timedelta(days=day)
    backend.root_device_type, backend.virtualization_type = "ebs", "hvm"  # what a real AMI of the filter has
    return image_id


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """The shipped templates, their base filter owned by this (moto) account."""
    copy = tmp_path / "packer"
    shutil.copytree(REPO / "packer", copy, ignore=shutil.ignore_patterns("packer_cache", "*manifest.json"))
    aws = copy / "aws.pkr.hcl"
    aws.write_text(aws.read_text().replace('owners      = ["099720109477"]', 'owners      = ["self"]'))
    return copy


def test_the_base_is_the_newest_ami_the_filter_selects(ec2: Any, templates: Path) -> None:
    ami(ec2, "base-jammy-1", day=1)
    newest = ami(ec2, "base-jammy-2", day=3)
    ami(ec2, "base-jammy-0", day=2)
    ami(ec2, "other-9", day=9)
    variables = {"base_ami_filter": "base-jammy-*"}
    assert provenance.current_base("aws", templates, "amazon-ebs.base", variables) == newest
    with pytest.raises(BaseLookupError, match="no AMI matches"):
        provenance.current_base("aws", templates, "amazon-ebs.base", {"base_ami_filter": "nothing-*"})


def test_inputs_are_tagged_on_the_ami_and_its_snapshots_and_read_back(ec2: Any) -> None:
    image_id = ami(ec2, "app-1.0", day=1, tags={"BaseAMI": "ami-12345678"})
    aws_provenance.record(image_id, BuildInputs(base="ami-other", inputs="sha256:in", spec="sha256:spec"), ec2=ec2)
    # the template's own BaseAMI tag names the base the build really used
    assert aws_provenance.recorded(image_id, ec2=ec2) == BuildInputs("ami-12345678", "sha256:in", "sha256:spec")
    snapshot = ec2_backend().amis[image_id].ebs_snapshot.id
    tags = {t["Key"]: t["Value"] for t in ec2.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"][0]["Tags"]}
    assert tags["bakery:inputs"] == "sha256:in"


def test_a_new_base_ami_makes_the_family_build_and_an_unchanged_one_skips(ec2: Any, templates: Path) -> None:
    old_base = ami(ec2, "base-jammy-1", day=1)
    spec = REPO / "packer" / "test" / "image_spec.yaml"
    request = prepare(
        target="aws", family="app", template_dir=templates, spec=spec, variables={"base_ami_filter": "base-jammy-*"}
    )
    built = provenance.request_inputs(request)
    image_id = ami(ec2, "app-1.0", day=2)
    aws_provenance.record(image_id, BuildInputs(old_base, built.inputs, built.spec), ec2=ec2)
    current = StagedImage(image_id, "app", "1.0", "app-1.0", "staging", created=datetime.now(UTC) - timedelta(days=1))

    unchanged = decide(observe(request, [current], "run-1"), now=datetime.now(UTC))
    assert not unchanged.build, unchanged.reasons
    assert f"base {old_base}" in unchanged.checked

    new_base = ami(ec2, "base-jammy-2", day=3)
    changed = decide(observe(request, [current], "run-2"), now=datetime.now(UTC))
    assert changed.build
    assert f"base changed from {old_base} to {new_base}" in changed.reasons

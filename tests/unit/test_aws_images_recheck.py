"""``AwsImages.recheck``: a batch of AMIs read again before deletion, against moto (the session's server).

One ``DescribeImages`` and one ``DescribeInstances`` for the batch, filtered on the image ids (an AMI gone
meanwhile is left out, not an error); launch permissions one AMI at a time, whose failure keeps only that AMI.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tasks.targets.aws.images import AwsImages
from tasks.targets.base import ImageRecord

REGION = "us-east-1"


class Ec2Spy:
    """The real client, counting calls; ``describe_image_attribute`` fails as told for some AMIs."""

    def __init__(self, ec2: Any, failing: dict[str, str]) -> None:
        self.ec2 = ec2
        self.failing = failing  # image id -> error code
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def describe_image_attribute(self, **kwargs: Any) -> Any:
        self.calls.append(("describe_image_attribute", kwargs))
        code = self.failing.get(kwargs["ImageId"])
        if code:
            raise ClientError({"Error": {"Code": code, "Message": f"{code} for {kwargs['ImageId']}"}}, "X")
        return self.ec2.describe_image_attribute(**kwargs)

    def get_paginator(self, name: str) -> Any:
        paginator = self.ec2.get_paginator(name)
        spy = self

        class Paginator:
            def paginate(self, **kwargs: Any) -> Any:
                spy.calls.append((name, kwargs))
                return paginator.paginate(**kwargs)

        return Paginator()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ec2, name)


def record(image_id: str, stage: str | None = "testing") -> ImageRecord:
    return ImageRecord(
        ref=image_id,
        image_id=image_id,
        name=image_id,
        family="app",
        version="1",
        created=datetime.now(UTC),
        stage=stage,
    )


def test_one_batched_read_and_each_veto(aws_env: str) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    ids = []
    for n in range(7):
        image_id = ec2.register_image(Name=f"app-1.{n}")["ImageId"]
        ec2.create_tags(Resources=[image_id], Tags=[{"Key": "status", "Value": "testing"}])
        ids.append(image_id)
    ec2.run_instances(ImageId=ids[0], MinCount=1, MaxCount=1)
    ec2.create_tags(Resources=[ids[1]], Tags=[{"Key": "status", "Value": "production"}])
    ec2.modify_image_attribute(ImageId=ids[2], LaunchPermission={"Add": [{"UserId": "111122223333"}]})
    ec2.modify_image_attribute(ImageId=ids[3], LaunchPermission={"Add": [{"Group": "all"}]})
    ec2.deregister_image(ImageId=ids[4])  # gone before the re-read
    spy = Ec2Spy(ec2, {ids[5]: "AccessDenied", ids[6]: "InvalidAMIID.NotFound"})  # 6: gone after DescribeImages
    store = AwsImages(spy, boto3.client("autoscaling", region_name=REGION))

    found = store.recheck([record(i) for i in ids])

    assert found[ids[0]][0].startswith("in use since the plan: instance i-")
    assert found[ids[1]] == ["stage changed since the plan: now production"]
    assert found[ids[2]] == ["shared: launch permission for 111122223333"]
    assert found[ids[3]] == ["shared: public"]
    assert found[ids[4]] == []  # gone: the deletion says "already gone"
    assert found[ids[5]] == [
        "could not be read again before deletion: An error occurred (AccessDenied) "
        f"when calling the X operation: AccessDenied for {ids[5]}"
    ]
    assert found[ids[6]] == []
    names = [name for name, _ in spy.calls]
    assert names.count("describe_images") == 1 and names.count("describe_instances") == 1
    assert names.count("describe_image_attribute") == 5  # not for the public one, nor the one gone already
    images_call = next(kwargs for name, kwargs in spy.calls if name == "describe_images")
    assert "ImageIds" not in images_call  # one unknown id would fail the whole call
    assert images_call["Filters"] == [{"Name": "image-id", "Values": sorted(ids)}]


def test_an_empty_batch_reads_nothing(aws_env: str) -> None:
    spy = Ec2Spy(boto3.client("ec2", region_name=REGION), {})
    assert AwsImages(spy, boto3.client("autoscaling", region_name=REGION)).recheck([]) == {}
    assert spy.calls == []


@pytest.mark.parametrize("code", ["InvalidAMIID.Unavailable", "InvalidAMIID.NotFound"])
def test_an_ami_that_goes_during_the_re_read_counts_as_gone(aws_env: str, code: str) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    image_id = ec2.register_image(Name="app-2.0")["ImageId"]
    spy = Ec2Spy(ec2, {image_id: code})
    store = AwsImages(spy, boto3.client("autoscaling", region_name=REGION))
    assert store.recheck([record(image_id, stage=None)]) == {image_id: []}

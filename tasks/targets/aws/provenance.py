"""What an AMI was built from: the base its template's filter selects, and the record in its tags.

AMIs carry the record as tags (``bakery:base``, ``bakery:inputs``, ``bakery:spec``) on the image and its
snapshots, so every worker reads the same.
"""

from __future__ import annotations

from typing import Any

from tasks import hcl
from tasks.targets.aws.client import tag_list, tags_of
from tasks.targets.aws.instances import describe_image, ec2_client, snapshot_ids
from tasks.targets.base import BaseLookupError, BuildInputs, TemplateSource


def ami_filter(source: TemplateSource) -> tuple[list[dict[str, Any]], list[str]]:
    """An amazon-ebs source's ``source_ami_filter`` as DescribeImages ``Filters`` and ``Owners``."""
    block, name = source.block, source.name
    if "source_ami" in block and "source_ami_filter" not in block:
        return [{"Name": "image-id", "Values": [source.evaluate(block["source_ami"], f"{name}.source_ami")]}], []
    filters_block = block.get("source_ami_filter")
    if isinstance(filters_block, list):
        filters_block = filters_block[0] if filters_block else None
    if not isinstance(filters_block, dict):
        raise BaseLookupError(f"{name}: no source_ami_filter or source_ami")
    raw_filters = filters_block.get("filters") or {}
    if isinstance(raw_filters, list):
        raw_filters = raw_filters[0] if raw_filters else {}
    filters = [
        {"Name": hcl.unquote(key), "Values": [source.evaluate(value, f"{name}.source_ami_filter.filters.{key}")]}
        for key, value in raw_filters.items()
        if not str(key).startswith("__")
    ]
    owners = [source.evaluate(o, f"{name}.source_ami_filter.owners") for o in filters_block.get("owners") or []]
    return filters, owners


def newest_ami(ec2: Any, filters: list[dict[str, Any]], owners: list[str]) -> str:
    """The AMI Packer's ``most_recent = true`` would pick: the newest ``CreationDate`` among the matches."""
    paginator = ec2.get_paginator("describe_images")
    images = [
        image
        for page in paginator.paginate(Filters=filters, **({"Owners": owners} if owners else {}))
        for image in page.get("Images", [])
    ]
    if not images:
        raise BaseLookupError(f"no AMI matches the template's source_ami_filter {filters} (owners {owners or 'any'})")
    return str(max(images, key=lambda i: i.get("CreationDate", ""))["ImageId"])


def current_base(source: TemplateSource, ec2: Any = None) -> str:
    filters, owners = ami_filter(source)
    return newest_ami(ec2 or ec2_client(quick=True), filters, owners)


def record(image_id: str, built_from: BuildInputs, ec2: Any = None) -> None:
    """Tags on the AMI and its snapshots; the seed's ``BaseAMI`` tag, when the template wrote one, names
    the base the build really used."""
    client = ec2 or ec2_client()
    image = describe_image(client, image_id)
    base = tags_of(image).get("BaseAMI") or built_from.base
    tags = BuildInputs(base=base, inputs=built_from.inputs, spec=built_from.spec).to_tags()
    client.create_tags(Resources=[image_id, *snapshot_ids(image)], Tags=tag_list(tags))


def recorded(image_id: str, ec2: Any = None) -> BuildInputs | None:
    return BuildInputs.from_tags(tags_of(describe_image(ec2 or ec2_client(quick=True), image_id)))

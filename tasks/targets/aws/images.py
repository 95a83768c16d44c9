"""AMIs for retention: list them (with their snapshots), find what uses them, delete them. Plain boto3.

Every listing is paginated and read once per run; the usage lookups run side by side. A deletion costs one
``DeregisterImage`` per image and one ``DeleteSnapshot`` per snapshot, with botocore's adaptive retries
(``client.py``) absorbing throttling; the re-read before it one ``DescribeImageAttribute`` per image and
one ``DescribeImages`` and one ``DescribeInstances`` per batch (``recheck``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from tasks.errors import UsageError
from tasks.targets.aws import client as aws
from tasks.targets.aws.client import aws_errors, tags_of
from tasks.targets.base import ImageRecord, family_of, is_managed, parse_time, recheck_each

LIVE_INSTANCE_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")
# botocore says at INFO which credentials and endpoint it found, once per client: keep it to warnings.
logging.getLogger("botocore").setLevel(logging.WARNING)

GONE_IMAGE_CODES = frozenset({"InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"})
STAGE_SINCE_TAGS = {"staging": "bakery:staged-at", "superseded": "bakery:superseded-at"}
GONE_SNAPSHOT_CODES = frozenset({"InvalidSnapshot.NotFound"})


def not_configured() -> str | None:
    """Why AWS is not usable here (no region, no credentials), or None when it is."""
    where = aws.region()
    if not where:
        return "AWS is not configured: no region (set AWS_REGION or AWS_DEFAULT_REGION)"
    if not aws.has_credentials(where):
        return "AWS is not configured: no credentials (environment, shared files or instance role)"
    return None


def require_configured() -> str:
    why = not_configured()
    if why:
        raise UsageError(f"--target aws: {why}")
    return aws.region() or ""


def record_from_ami(image: dict[str, Any]) -> ImageRecord:
    tags = tags_of(image)
    name = tags.get("Name") or image.get("Name") or ""
    version = tags.get("Version", "")
    snapshots = tuple(
        m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings") or [] if (m.get("Ebs") or {}).get("SnapshotId")
    )
    pins = []
    if str(image.get("DeregistrationProtection", "")).startswith("enabled"):
        pins.append("deregistration protection on")
    if image.get("Public"):
        pins.append("shared: public")
    family = family_of(tags.get("Name"), version, tags.get("Family"))
    built = tags.get(aws.TAG_BUILT_FAMILY)
    if built == family:
        foreign = ""
    elif built:
        foreign = f"tag {aws.TAG_BUILT_FAMILY}={built} but family {family}"
    else:
        foreign = f"no {aws.TAG_BUILT_FAMILY} tag; ManagedBy={tags.get(aws.TAG_MANAGED_BY, '')} alone"
    return ImageRecord(
        ref=image["ImageId"],
        image_id=image["ImageId"],
        name=name,
        family=family,
        version=version,
        created=parse_time(image.get("CreationDate")) or datetime.fromtimestamp(0, UTC),
        stage=tags.get("status"),
        managed=is_managed(tags.get("ManagedBy")),
        snapshots=snapshots,
        state=image.get("State", "available"),
        pins=tuple(pins),
        stage_since=parse_time(tags.get(STAGE_SINCE_TAGS.get(tags.get("status", ""), ""))),
        foreign=foreign,
    )


@dataclass(frozen=True)
class TemplateVersion:
    template_id: str
    name: str
    number: int
    default: bool
    image_id: str

    @property
    def phrase(self) -> str:
        default = " (default)" if self.default else ""
        return f"launch template {self.name} ({self.template_id}) version {self.number}{default}"


def _resolve(spec: dict[str, Any], versions: list[TemplateVersion]) -> list[TemplateVersion]:
    """The version an ASG's launch template spec points at (for the reason text; all versions are kept)."""
    mine = [
        v
        for v in versions
        if spec.get("LaunchTemplateId") in (None, v.template_id) and spec.get("LaunchTemplateName") in (None, v.name)
    ]
    wanted = str(spec.get("Version") or "$Default")
    if not mine:
        return []
    if wanted == "$Latest":
        return [max(mine, key=lambda v: v.number)]
    if wanted == "$Default":
        return [v for v in mine if v.default][:1]
    return [v for v in mine if str(v.number) == wanted]


class AwsImages:
    """The account's own AMIs in one region, as an ``ImageStore``."""

    target = "aws"

    def __init__(self, ec2: Any = None, autoscaling: Any = None, workers: int = 8) -> None:
        where = aws.region() if ec2 is None or autoscaling is None else None
        self.ec2 = ec2 or aws.client("ec2", region=where)
        self.autoscaling = autoscaling or aws.client("autoscaling", region=where)
        self.workers = workers

    # --- listing ----------------------------------------------------------------------------------------

    def list_images(self) -> list[ImageRecord]:
        """Every AMI this account owns, deprecated and disabled ones included."""
        pages = self.ec2.get_paginator("describe_images").paginate(
            Owners=["self"], IncludeDeprecated=True, IncludeDisabled=True, PaginationConfig={"PageSize": 1000}
        )
        return [record_from_ami(image) for page in pages for image in page.get("Images", [])]

    def inventory(self) -> tuple[list[ImageRecord], dict[str, list[str]]]:
        with (
            aws_errors("listing images and what uses them"),
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="bakery-inventory") as pool,
        ):
            images = pool.submit(self.list_images)
            usage = pool.submit(self.usage)
            return images.result(), usage.result()

    def usage(self) -> dict[str, list[str]]:
        """AMI id → what uses it: live instances, every launch template version, ASGs, launch configurations.

        Any lookup that fails fails the whole inventory: without it, nothing could be shown to be unused.
        """
        used: dict[str, list[str]] = defaultdict(list)
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="bakery-usage") as pool:
            instances = pool.submit(self._instances)
            templates = pool.submit(self._launch_template_versions)
            groups = pool.submit(self._auto_scaling)
            for image_id, what in instances.result():
                used[image_id].append(what)
            versions = templates.result()
            specs, configurations = groups.result()
        for version in versions:
            used[version.image_id].append(version.phrase)
        for group, spec in specs:
            for version in _resolve(spec, versions):
                used[version.image_id].append(
                    f"Auto Scaling group {group} (launch template {version.name} version {version.number})"
                )
        for image_id, what in configurations:
            used[image_id].append(what)
        return {k: v for k, v in used.items() if k.startswith("ami-")}

    def _instances(self) -> list[tuple[str, str]]:
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": list(LIVE_INSTANCE_STATES)}],
            PaginationConfig={"PageSize": 1000},
        )
        found = []
        for page in pages:
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    state = instance.get("State", {}).get("Name", "")
                    if instance.get("ImageId") and state != "terminated":
                        found.append((instance["ImageId"], f"instance {instance['InstanceId']} ({state})"))
        return found

    def _launch_template_versions(self) -> list[TemplateVersion]:
        """Every version of every launch template (not only the default one), aliases resolved."""
        pages = self.ec2.get_paginator("describe_launch_templates").paginate(PaginationConfig={"PageSize": 200})
        templates = [(t["LaunchTemplateId"], t["LaunchTemplateName"]) for p in pages for t in p["LaunchTemplates"]]

        def versions(template: tuple[str, str]) -> list[TemplateVersion]:
            template_id, name = template
            pages = self.ec2.get_paginator("describe_launch_template_versions").paginate(
                LaunchTemplateId=template_id, ResolveAlias=True, PaginationConfig={"PageSize": 200}
            )
            return [
                TemplateVersion(
                    template_id=template_id,
                    name=name,
                    number=int(v["VersionNumber"]),
                    default=bool(v.get("DefaultVersion")),
                    image_id=(v.get("LaunchTemplateData") or {}).get("ImageId", ""),
                )
                for page in pages
                for v in page.get("LaunchTemplateVersions", [])
            ]

        if not templates:
            return []
        with ThreadPoolExecutor(max_workers=min(self.workers, len(templates))) as pool:
            return [v for found in pool.map(versions, templates) for v in found]

    def _auto_scaling(self) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, str]]]:
        """(group, launch template spec) pairs, and (image id, phrase) for every launch configuration."""
        specs: list[tuple[str, dict[str, Any]]] = []
        lc_users: dict[str, list[str]] = defaultdict(list)
        pages = self.autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
            PaginationConfig={"PageSize": 100}
        )
        for page in pages:
            for group in page.get("AutoScalingGroups", []):
                name = group["AutoScalingGroupName"]
                if group.get("LaunchConfigurationName"):
                    lc_users[group["LaunchConfigurationName"]].append(name)
                if group.get("LaunchTemplate"):
                    specs.append((name, group["LaunchTemplate"]))
                mixed = (group.get("MixedInstancesPolicy") or {}).get("LaunchTemplate") or {}
                if mixed.get("LaunchTemplateSpecification"):
                    specs.append((name, mixed["LaunchTemplateSpecification"]))
                for override in mixed.get("Overrides") or []:
                    if override.get("LaunchTemplateSpecification"):
                        specs.append((name, override["LaunchTemplateSpecification"]))
        configurations = []
        pages = self.autoscaling.get_paginator("describe_launch_configurations").paginate(
            PaginationConfig={"PageSize": 100}
        )
        for page in pages:
            for lc in page.get("LaunchConfigurations", []):
                name = lc["LaunchConfigurationName"]
                users = lc_users.get(name, [])
                used_by = f", used by Auto Scaling group {', '.join(users)}" if users else ""
                configurations.append((lc.get("ImageId", ""), f"launch configuration {name}{used_by}"))
        return specs, configurations

    # --- deleting ---------------------------------------------------------------------------------------

    def delete_image(self, image: ImageRecord) -> str:
        try:
            self.ec2.deregister_image(ImageId=image.image_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in GONE_IMAGE_CODES:
                return "already gone"
            raise
        return "deleted"

    def before_deletes(self, family: str) -> None:
        """Deletes always work here: nothing to check."""

    def recheck(self, images: Sequence[ImageRecord]) -> dict[str, list[str]]:
        """The AMIs read again just before their deletion: their stage, whether each is public or has launch
        permissions for other accounts (``shared``), and live instances launched from them since the plan.

        One ``DescribeImages`` and one ``DescribeInstances`` (paginated) for the whole batch, both filtered
        on the image ids: a filter, unlike ``ImageIds``, does not fail the call for an AMI that is gone, it
        just leaves it out (gone: no reason; the deletion says ``already gone``). Launch permissions have
        no batch form: one ``DescribeImageAttribute`` per AMI that is not public, a few at once.
        """
        if not images:
            return {}
        ids = sorted({image.image_id for image in images})
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="bakery-recheck") as pool:
            described = pool.submit(self._describe, ids)
            launched = pool.submit(self._live_instances, ids)
            found, users = described.result(), launched.result()

        def one(image: ImageRecord) -> list[str]:
            ami = found.get(image.image_id)
            if ami is None:
                return []  # gone already
            reasons = []
            stage = tags_of(ami).get("status")
            if stage != image.stage:
                reasons.append(f"stage changed since the plan: now {stage or 'none'}")
            if ami.get("Public"):
                reasons.append("shared: public")
            else:
                try:
                    shared = self._launch_permissions(image.image_id)
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") in GONE_IMAGE_CODES:
                        return []  # deregistered since the DescribeImages above
                    raise
                if shared:
                    reasons.append(f"shared: launch permission for {', '.join(shared)}")
            reasons.extend(f"in use since the plan: {use}" for use in users.get(image.image_id, []))
            return reasons

        return recheck_each(one, images, self.workers)

    def _describe(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """AMI id → its description, for those of ``ids`` that still exist (in any state)."""
        pages = self.ec2.get_paginator("describe_images").paginate(
            Owners=["self"],
            IncludeDeprecated=True,
            IncludeDisabled=True,
            Filters=[{"Name": "image-id", "Values": ids}],
            PaginationConfig={"PageSize": 1000},
        )
        return {image["ImageId"]: image for page in pages for image in page.get("Images", [])}

    def _live_instances(self, ids: list[str]) -> dict[str, list[str]]:
        """AMI id → ``instance i-… (state)`` for each live instance launched from one of ``ids``."""
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": "image-id", "Values": ids},
                {"Name": "instance-state-name", "Values": list(LIVE_INSTANCE_STATES)},
            ],
            PaginationConfig={"PageSize": 1000},
        )
        users: dict[str, list[str]] = defaultdict(list)
        for page in pages:
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    state = instance.get("State", {}).get("Name", "")
                    users[instance.get("ImageId", "")].append(f"instance {instance['InstanceId']} ({state})")
        return users

    def _launch_permissions(self, image_id: str) -> list[str]:
        """Who else may launch the AMI: account ids, groups, organizations (empty: only this account)."""
        permissions = self.ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")
        return [
            str(p.get("UserId") or p.get("Group") or p.get("OrganizationArn") or p.get("OrganizationalUnitArn"))
            for p in permissions.get("LaunchPermissions") or []
        ]

    def delete_snapshot(self, snapshot_id: str) -> str:
        try:
            self.ec2.delete_snapshot(SnapshotId=snapshot_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in GONE_SNAPSHOT_CODES:
                return "already gone"
            raise
        return "deleted"

"""Stages of AMIs: the ``status`` tag (and bakery's times) on the AMI and its snapshots.

A family's images are the AMIs owned by this account whose family (the ``Family`` tag, else ``Name``
minus ``-<Version>``) is the family, and that carry ``ManagedBy`` (anything else is never touched).

**The lock.** EC2 has no conditional tag write, so tag ordering alone cannot keep two racing promotions
from both writing ``production``. The one atomic create-if-absent that EC2 itself offers, and that a
bakery role may already do (it makes key pairs for test instances), is a *named key pair*:
``CreateKeyPair(bakery-promote-<family>)`` succeeds for one caller and fails with
``InvalidKeyPair.Duplicate`` for every other. The key pair is the lease: it carries ``bakery:run-id``,
``bakery:expires-at`` and ``ManagedBy=bakery``, so a promoter killed mid-way leaves a lock that expires
(the next promoter breaks it, deleting it *by its KeyPairId* so it can never delete a newer holder's
lock) and that ``bake sweep`` removes. Its private key is discarded unread. No extra AWS service
(SSM, DynamoDB) is needed for safety; the SSM parameter below is an optional convenience.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from tasks import holders
from tasks.errors import JobFailed, UsageError
from tasks.targets.aws import client as aws
from tasks.targets.aws.client import delete_key_pair, family_of_tags, region, tags_of
from tasks.targets.base import (
    TAG_INTENT,
    TAG_PROMOTED_AT,
    TAG_STAGED_AT,
    TAG_STATUS,
    TAG_SUPERSEDED_AT,
    Intent,
    ProblemAfterPromotion,
    PromotionRecord,
    StagedImage,
    iso,
    parse_time,
    utcnow,
)

log = logging.getLogger(__name__)
LOCK_PREFIX = "bakery-promote-"
LOCK_PURPOSE = "promotion-lock"
TAG_HOLDER = "bakery:holder"  # host:pid:start of the holding process (tasks/holders.py)
SSM_PARAMETER = "/bakery/{family}/production"


def snapshots_of(image: dict[str, Any]) -> list[str]:
    return [
        m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings") or [] if m.get("Ebs", {}).get("SnapshotId")
    ]


def seed_lookup(ec2: Any, family: str) -> list[dict[str, Any]]:
    """The seed's Terraform ``data "aws_ami"``: owners self, ``tag:Name = <family>-*``,
    ``tag:status = production``; sorted newest first as ``most_recent`` picks."""
    found = ec2.describe_images(
        Owners=["self"],
        Filters=[
            {"Name": "tag:Name", "Values": [f"{family}-*"]},
            {"Name": "tag:status", "Values": ["production"]},
        ],
    )["Images"]
    return sorted(found, key=lambda i: i.get("CreationDate", ""), reverse=True)


class AmiStages:
    """The ``StageStore`` of AMIs in one account and region."""

    target = "aws"

    def __init__(
        self,
        ec2: Any = None,
        ssm: Any = None,
        *,
        publish_ssm: bool = False,
        lock_lease: timedelta = timedelta(minutes=10),
        lock_wait: timedelta = timedelta(minutes=2),
        settle: float = 0.3,
    ) -> None:
        self.ec2 = ec2 or aws.client("ec2", region=region())
        self._ssm = ssm
        self.publish_ssm = publish_ssm
        self.lock_lease = lock_lease
        self.lock_wait = lock_wait
        self.settle = settle
        self._raw: dict[str, dict[str, Any]] = {}

    @property
    def ssm(self) -> Any:
        if self._ssm is None:
            self._ssm = aws.client("ssm", region=region())
        return self._ssm

    def _staged(self, image: dict[str, Any], family: str) -> StagedImage:
        tags = tags_of(image)
        self._raw[image["ImageId"]] = image
        return StagedImage(
            id=image["ImageId"],
            family=family,
            version=tags.get("Version", ""),
            name=tags.get("Name") or image.get("Name", ""),
            stage=tags.get(TAG_STATUS),
            created=parse_time(image.get("CreationDate")),
            staged_at=parse_time(tags.get(TAG_STAGED_AT)),
            promoted_at=parse_time(tags.get(TAG_PROMOTED_AT)),
            superseded_at=parse_time(tags.get(TAG_SUPERSEDED_AT)),
        )

    def find(self, reference: str) -> StagedImage:
        try:
            found = self.ec2.describe_images(ImageIds=[reference])["Images"]
        except ClientError as exc:
            code = exc.response["Error"].get("Code", "")
            if code.startswith("InvalidAMIID"):
                raise UsageError(f"--image {reference!r}: no such AMI ({code})") from None
            raise
        if not found:
            raise UsageError(f"--image {reference!r}: no such AMI")
        image = found[0]
        if "ManagedBy" not in tags_of(image):
            raise JobFailed(f"aws: {reference} has no ManagedBy tag; bakery never touches such images")
        family = family_of_tags(tags_of(image))
        if not family:
            raise JobFailed(f"aws: {reference} has no Family tag and its Name does not end in -<Version>")
        return self._staged(image, family)

    def family_images(self, family: str) -> list[StagedImage]:
        seen: dict[str, dict[str, Any]] = {}
        for tag_filter in ({"Name": "tag:Name", "Values": [f"{family}-*"]}, {"Name": "tag:Family", "Values": [family]}):
            paginator = self.ec2.get_paginator("describe_images")
            for page in paginator.paginate(Owners=["self"], Filters=[tag_filter]):
                for image in page["Images"]:
                    seen[image["ImageId"]] = image
        return [
            self._staged(image, family)
            for image in seen.values()
            if "ManagedBy" in tags_of(image) and family_of_tags(tags_of(image)) == family
        ]

    def write(self, image: StagedImage, stage: str, run_id: str, tags: dict[str, str]) -> None:
        """The stage through the AWS target's ``set_stage`` (one ``CreateTags`` of ``status``, run id and
        the stage's time on the AMI and its snapshots: the commit point), then this promotion's own
        tags (its exact time, ``bakery:forced``) on the same resources."""
        from tasks.targets.aws.instances import AwsTarget
        from tasks.targets.base import Image

        target = AwsTarget(ec2=self.ec2)
        target.set_stage(Image("aws", image.id, image.family, image.version, image.name), stage, run_id)
        extra = {k: v for k, v in tags.items() if k != TAG_STATUS}
        if extra:
            raw = self._raw.get(image.id) or self.ec2.describe_images(ImageIds=[image.id])["Images"][0]
            self.ec2.create_tags(
                Resources=[image.id, *snapshots_of(raw)], Tags=[{"Key": k, "Value": v} for k, v in extra.items()]
            )

    @contextlib.contextmanager
    def lock(self, family: str, run_id: str) -> Iterator[None]:
        name = f"{LOCK_PREFIX}{family}"
        key_id = self._acquire(name, run_id)
        try:
            yield
        finally:
            self._delete_lock(name, key_id)

    def _delete_lock(self, name: str, key_id: str) -> None:
        """Delete exactly the lock ``key_id`` (by id: a newer holder's lock of the same name survives)."""
        with contextlib.suppress(ClientError):
            delete_key_pair(self.ec2, key_id, name)

    def _acquire(self, name: str, run_id: str) -> str:
        deadline = time.monotonic() + self.lock_wait.total_seconds()
        while True:
            expires = utcnow() + self.lock_lease
            try:
                created = self.ec2.create_key_pair(
                    KeyName=name,
                    KeyType="ed25519",
                    TagSpecifications=[
                        {
                            "ResourceType": "key-pair",
                            "Tags": [
                                {"Key": aws.TAG_RUN_ID, "Value": run_id},
                                {"Key": aws.TAG_EXPIRES_AT, "Value": iso(expires)},
                                {"Key": aws.TAG_MANAGED_BY, "Value": aws.MANAGED_BY_BAKERY},
                                {"Key": "bakery:purpose", "Value": LOCK_PURPOSE},
                                {"Key": TAG_HOLDER, "Value": holders.this_process()},
                            ],
                        }
                    ],
                )
                created.pop("KeyMaterial", None)  # never kept, never logged
                key_id = str(created["KeyPairId"])
                if self._confirmed(name, key_id):
                    return key_id
                continue  # an endpoint that let two creates through (moto does): the other one won
            except ClientError as exc:
                if exc.response["Error"].get("Code") != "InvalidKeyPair.Duplicate":
                    raise
            holder = self._holder(name)
            if holder is None:
                continue  # released between our create and our look: try again at once
            holder_tags = tags_of(holder)
            holder_expires = parse_time(holder_tags.get(aws.TAG_EXPIRES_AT))
            holder_gone = holders.dead_here(holder_tags.get(TAG_HOLDER))
            if holder_expires is None or holder_expires < utcnow() or holder_gone:
                log.warning(
                    "breaking stale promotion lock %s of run %s (%s)",
                    name,
                    holder_tags.get(aws.TAG_RUN_ID, "?"),
                    f"its process {holder_tags.get(TAG_HOLDER)} is gone"
                    if holder_gone
                    else f"expired {holder_tags.get(aws.TAG_EXPIRES_AT, '?')}",
                )
                self._delete_lock(name, str(holder["KeyPairId"]))
                continue
            if time.monotonic() > deadline:
                raise JobFailed(
                    f"aws: another promotion holds {name} (run {holder_tags.get(aws.TAG_RUN_ID, '?')}, "
                    f"lease until {holder_tags.get(aws.TAG_EXPIRES_AT, '?')}); nothing changed, try again"
                )
            time.sleep(0.2 + random.random() * 0.3)  # noqa: S311 (jitter, not crypto)

    def _confirmed(self, name: str, key_id: str) -> bool:
        """After a settle time, is the lock under ``name`` still ours? EC2 refuses a duplicate name
        outright; this guards endpoints whose create is check-then-insert (moto), where a racing create
        replaces ours. Reads may lag just after a create (eventual consistency): a miss is re-read."""
        for _ in range(10):
            time.sleep(self.settle)
            holder = self._holder(name)
            if holder is not None:
                return holder.get("KeyPairId") == key_id
        return False

    def _holder(self, name: str) -> dict[str, Any] | None:
        try:
            pairs = self.ec2.describe_key_pairs(KeyNames=[name])["KeyPairs"]
        except ClientError as exc:
            if exc.response["Error"].get("Code") == "InvalidKeyPair.NotFound":
                return None
            raise
        return pairs[0] if pairs else None

    def write_intent(self, family: str, intent: Intent) -> None:
        """A ``bakery:promotion-intent`` tag on the new AMI (EC2 keeps it; every promoter and sweep reads it)."""
        self.ec2.create_tags(Resources=[intent.new], Tags=[{"Key": TAG_INTENT, "Value": intent.to_text()}])

    def read_intent(self, family: str) -> Intent | None:
        for image in self._with_intent():
            if family_of_tags(tags_of(image)) == family:
                return Intent.from_text(family, image["ImageId"], tags_of(image)[TAG_INTENT])
        return None

    def clear_intent(self, family: str, intent: Intent) -> None:
        self.ec2.delete_tags(Resources=[intent.new], Tags=[{"Key": TAG_INTENT}])

    def families_with_intent(self) -> list[str]:
        return sorted({f for f in (family_of_tags(tags_of(i)) for i in self._with_intent()) if f})

    def _with_intent(self) -> list[dict[str, Any]]:
        found = self.ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag-key", "Values": [TAG_INTENT]}])
        return [i for i in found["Images"] if "ManagedBy" in tags_of(i) and TAG_INTENT in tags_of(i)]

    def after_change(self, family: str, production: StagedImage, record: PromotionRecord) -> None:
        """The consumers' view: the seed's lookup must return exactly ``production``; then SSM."""
        found = seed_lookup(self.ec2, family)
        ids = [i["ImageId"] for i in found]
        record.published["terraform lookup"] = ids[0] if ids else "(no result)"
        if self.publish_ssm:
            parameter = SSM_PARAMETER.format(family=family)
            self.ssm.put_parameter(
                Name=parameter,
                Value=production.id,
                Type="String",
                Overwrite=True,
                Description=f"production AMI of {family} (bakery run {record.run_id})",
            )
            record.published[parameter] = production.id
        if ids != [production.id]:
            others = ", ".join(
                f"{i['ImageId']} (family {family_of_tags(tags_of(i))})" for i in found if i["ImageId"] != production.id
            )
            message = (
                f"{production.label} is production, but the seed's lookup (tag:Name={family}-*, "
                f"tag:status=production) also finds {others}: another family's name starts with "
                f"'{family}-'; use a Family-distinct name or a Family tag filter in Terraform"
            )
            record.notes.append(message)
            raise ProblemAfterPromotion(message, record)

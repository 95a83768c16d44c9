"""AWS leftovers of crashed runs: bakery-tagged instances, volumes, security groups and key pairs, and
Packer's own temporary builder resources. Plain boto3 (client factory and adaptive retries from client.py).

bakery's resources carry ``bakery:run-id``, ``bakery:expires-at`` and ``ManagedBy=bakery``; all three marks
are required (the run id and ManagedBy to be listed, the expiry to be removed before ``--max-age``).
Packer names its temporary key pair and security group ``packer_<time-ordered uuid>``, whose first eight
hex digits are the Unix time it was made: that is their age, as the API gives a security group none.
Its builder instance is recognised by that key pair or its default ``Name = Packer Builder`` tag.

Those untagged Packer resources may belong to another tool's Packer pipeline in the same account, so they
are listed only when asked explicitly (``include_packer``: ``bake sweep --packer-leftovers``). By default
the sweep removes only what carries bakery's run tags; bakery's own Packer builders carry them (the
template's ``run_tags``), with ``bakery:expires-at`` = build start + build time limit + TTL, so a long build is
never swept from under itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from tasks.targets.aws import client as aws
from tasks.targets.aws.client import aws_errors, delete_key_pair, gone, region, tags_of
from tasks.targets.aws.images import LIVE_INSTANCE_STATES
from tasks.targets.aws.instances import delete_security_group, terminate_and_wait
from tasks.targets.base import Leftover, bounded_map, key, parse_time

PACKER_NAME_RE = re.compile(r"^packer_([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PACKER_SG_DESCRIPTION = "Temporary group for Packer"
PACKER_BUILDER_NAME = "Packer Builder"


def packer_name_time(name: str) -> datetime | None:
    """When Packer made a ``packer_<time-ordered uuid>`` resource, or None if the name is not one."""
    match = PACKER_NAME_RE.match(name or "")
    return datetime.fromtimestamp(int(match.group(1), 16), UTC) if match else None


def is_bakery_tagged(tags: dict[str, str]) -> bool:
    return bool(tags.get(aws.TAG_RUN_ID)) and tags.get(aws.TAG_MANAGED_BY) == aws.MANAGED_BY_BAKERY


class AwsLeftovers:
    """One region's leftovers, as a sweep ``Source``."""

    provider = "aws"

    def __init__(
        self, ec2: Any = None, dependency_wait: float = 180.0, poll: float = 5.0, include_packer: bool = False
    ) -> None:
        self.ec2 = ec2 or aws.client("ec2", region=region())
        self.include_packer = include_packer
        self.dependency_wait = dependency_wait
        self.poll = poll

    # --- finding ----------------------------------------------------------------------------------------

    def find(self) -> list[Leftover]:
        with aws_errors("listing bakery-tagged and Packer's temporary resources"):
            pairs = self._key_pairs()
            packer_keys = sorted(i.name for i in pairs if packer_name_time(i.name))
            found = self._instances(packer_keys) + self._volumes() + self._security_groups() + pairs
        # Untagged Packer resources: another pipeline's as likely as ours; only when asked explicitly.
        return [i for i in found if i.labelled or self.include_packer]

    def _describe_instances(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[*filters, {"Name": "instance-state-name", "Values": list(LIVE_INSTANCE_STATES)}]
        )
        return [i for p in pages for r in p.get("Reservations", []) for i in r.get("Instances", [])]

    def _instances(self, packer_keys: list[str]) -> list[Leftover]:
        """bakery-tagged instances, and Packer builders: by its key pairs' exact names (wildcards in filters are
        not understood by every endpoint) or its default ``Name`` tag."""
        queries: list[list[dict[str, Any]]] = [
            [{"Name": "tag-key", "Values": [aws.TAG_RUN_ID]}],
            [{"Name": "tag:Name", "Values": [PACKER_BUILDER_NAME]}],
        ]
        queries += [
            [{"Name": "key-name", "Values": packer_keys[start : start + 200]}]
            for start in range(0, len(packer_keys), 200)
        ]
        seen: dict[str, dict[str, Any]] = {}
        for filters in queries:
            for instance in self._describe_instances(filters):
                seen[instance["InstanceId"]] = instance
        found = []
        for instance in seen.values():
            tags = tags_of(instance)
            extra = {
                "state": instance.get("State", {}).get("Name", ""),
                "key_name": instance.get("KeyName", ""),
                "security_groups": ",".join(g["GroupId"] for g in instance.get("SecurityGroups", [])),
            }
            common: dict[str, Any] = {
                "provider": self.provider,
                "kind": "instance",
                "id": instance["InstanceId"],
                "name": tags.get("Name", ""),
                "created": parse_time(instance.get("LaunchTime")),
                "extra": extra,
            }
            if is_bakery_tagged(tags):
                labelled: dict[str, Any] = {
                    "run_id": tags[aws.TAG_RUN_ID],
                    "expires_at": parse_time(tags.get(aws.TAG_EXPIRES_AT)),
                }
                found.append(Leftover(**common, **labelled))
            elif aws.TAG_MANAGED_BY in tags and tags[aws.TAG_MANAGED_BY] not in ("bakery", "packer"):
                continue  # someone else's tool owns it
            elif packer_name_time(instance.get("KeyName", "")) or tags.get("Name") == PACKER_BUILDER_NAME:
                found.append(Leftover(**common, labelled=False))
        return found

    def _volumes(self) -> list[Leftover]:
        pages = self.ec2.get_paginator("describe_volumes").paginate(
            Filters=[{"Name": "tag-key", "Values": [aws.TAG_RUN_ID]}, {"Name": "status", "Values": ["available"]}]
        )
        found = []
        for volume in (v for p in pages for v in p.get("Volumes", [])):
            tags = tags_of(volume)
            if is_bakery_tagged(tags):
                found.append(
                    Leftover(
                        provider=self.provider,
                        kind="volume",
                        id=volume["VolumeId"],
                        name=tags.get("Name", ""),
                        run_id=tags[aws.TAG_RUN_ID],
                        created=parse_time(volume.get("CreateTime")),
                        expires_at=parse_time(tags.get(aws.TAG_EXPIRES_AT)),
                    )
                )
        return found

    def _security_groups(self) -> list[Leftover]:
        seen: dict[str, dict[str, Any]] = {}
        for filters in (
            [{"Name": "tag-key", "Values": [aws.TAG_RUN_ID]}],
            [{"Name": "group-name", "Values": ["packer_*"]}],
        ):
            pages = self.ec2.get_paginator("describe_security_groups").paginate(Filters=filters)
            for group in (g for p in pages for g in p.get("SecurityGroups", [])):
                seen[group["GroupId"]] = group
        found = []
        for group in seen.values():
            name = group.get("GroupName", "")
            packer = bool(packer_name_time(name)) and group.get("Description") == PACKER_SG_DESCRIPTION
            row = self._tagged_or_packer(
                "security-group", group["GroupId"], name, tags_of(group), packer_name_time(name), packer
            )
            if row:
                found.append(row)
        return found

    def _key_pairs(self) -> list[Leftover]:
        found = []
        for pair in self.ec2.describe_key_pairs().get("KeyPairs", []):
            name = pair.get("KeyName", "")
            created = parse_time(pair.get("CreateTime")) or packer_name_time(name)
            row = self._tagged_or_packer(
                "key-pair", pair["KeyPairId"], name, tags_of(pair), created, bool(packer_name_time(name))
            )
            if row:
                found.append(row)
        return found

    def _tagged_or_packer(
        self, kind: str, id_: str, name: str, tags: dict[str, str], created: datetime | None, packer_match: bool
    ) -> Leftover | None:
        """A security group's or key pair's row: bakery-tagged, with its run id and expiry (made ``created``);
        else, if ``packer_match``, one of Packer's own, unlabelled, made when its ``packer_<uuid>`` name says;
        else none."""
        common: dict[str, Any] = {"provider": self.provider, "kind": kind, "id": id_, "name": name}
        if is_bakery_tagged(tags):
            expires = parse_time(tags.get(aws.TAG_EXPIRES_AT))
            return Leftover(**common, run_id=tags[aws.TAG_RUN_ID], created=created, expires_at=expires)
        if packer_match:
            return Leftover(**common, created=packer_name_time(name), labelled=False)
        return None

    def protect(self, leftovers: list[Leftover]) -> list[Leftover]:
        """Keep the security groups and key pairs of instances the sweep keeps (a build still running)."""
        kept = [i for i in leftovers if i.kind == "instance" and not i.remove]
        groups = {g: i.id for i in kept for g in i.extra.get("security_groups", "").split(",") if g}
        keys = {i.extra.get("key_name", ""): i.id for i in kept if i.extra.get("key_name")}
        result = []
        for item in leftovers:
            user = groups.get(item.id) if item.kind == "security-group" else None
            user = user or (keys.get(item.name) if item.kind == "key-pair" else None)
            if item.remove and user:
                item = replace(item, remove=False, reason=f"used by instance {user}, which stays")
            result.append(item)
        return result

    # --- removing ---------------------------------------------------------------------------------------

    def remove(self, leftovers: Sequence[Leftover]) -> dict[str, str]:
        """Terminate instances and wait until they are gone, then volumes, security groups, key pairs."""
        results: dict[str, str] = {}
        instances = [i for i in leftovers if i.kind == "instance"]
        if instances:
            results.update(self._terminate(instances))
        for kind, delete in (
            ("volume", self._delete_volume),
            ("security-group", self._delete_security_group),
            ("key-pair", self._delete_key_pair),
        ):
            mine = [i for i in leftovers if i.kind == kind]
            results.update({key(i): r for i, r in zip(mine, bounded_map(delete, mine), strict=True)})
        return results

    def _terminate(self, instances: list[Leftover]) -> dict[str, str]:
        done = terminate_and_wait(self.ec2, [i.id for i in instances], self.dependency_wait, self.poll)
        results = {f"instance {i}": "removed" for i in done.terminated}
        results.update({f"instance {i}": "already gone" for i in done.already_gone})
        results.update({f"instance {i}": f"failed: {exc}" for i, exc in done.refused.items()})
        results.update(
            {f"instance {i}": f"failed: not terminated in time ({done.wait_error})" for i in done.unfinished}
        )
        return results

    def _delete_volume(self, item: Leftover) -> str:
        return self._delete(lambda: self.ec2.delete_volume(VolumeId=item.id), "InvalidVolume.NotFound")

    def _delete_key_pair(self, item: Leftover) -> str:
        """By id, so a newer key pair of the same name survives; by name only if the endpoint ignored the id
        (moto does) and the pair under that name is still this very one."""
        return "removed" if delete_key_pair(self.ec2, item.id, item.name) else "already gone"

    def _delete_security_group(self, item: Leftover) -> str:
        """An instance's network interface lingers a while after termination: retry DependencyViolation."""
        deleted = delete_security_group(self.ec2, item.id, wait=self.dependency_wait, poll=self.poll)
        return "removed" if deleted else "already gone"

    @staticmethod
    def _delete(call: Any, gone_code: str) -> str:
        return "removed" if gone(call, gone_code) else "already gone"

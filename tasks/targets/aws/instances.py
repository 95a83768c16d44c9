"""AWS as a target: AMIs built by Packer, one throwaway test instance per run, stage tags on AMIs and snapshots.

boto3 behind small typed functions, with paginators and waiters; region, endpoint and credentials come from
the standard AWS variables (``client.py``), so a moto server needs no code path of its own.

A test instance gets a per-run key pair (the run's public key), a per-run security group that admits
tcp/22 from one CIDR only, and a per-run SSH host key injected through cloud-init user-data, so its host
key is known before the first connection. Everything is tagged *at creation* with ``bakery:run-id``,
``bakery:expires-at`` and ``ManagedBy=bakery``. A launch that fails part-way removes what it made and
re-raises the original error; ``teardown``/``teardown_run`` are idempotent (NotFound means done).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import paramiko
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError

from tasks.errors import JobFailed, UsageError
from tasks.request import AwsOptions
from tasks.ssh import new_ed25519_key
from tasks.targets.aws import client as aws
from tasks.targets.aws.client import (
    TRANSIENT_CODES,
    AwsFailed,
    aws_errors,
    delete_key_pair,
    error_code,
    family_of_tags,
    gone,
    tag_list,
    tags_of,
)
from tasks.targets.base import (
    TAG_LAST_RESULT,
    TAG_LAST_TEST_RUN,
    TAG_LAST_TESTED,
    Image,
    Instance,
    Run,
    SshEndpoint,
    is_managed,
    parse_time,
)

log = logging.getLogger(__name__)

HOST_KEY_NAME = "ssh_host_ed25519_key.pub"
_KEY_LINE = re.compile(
    r"\b(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|ssh-rsa) (AAAA[0-9A-Za-z+/]+=*)"
)
_FINGERPRINT_LINE = re.compile(r"\b\d+ (SHA256:[0-9A-Za-z+/]+=*) .*\((ED25519|ECDSA|RSA)\)")
_KEY_PREFERENCE = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
_FINGERPRINT_TYPES = {"ED25519": "ssh-ed25519", "ECDSA": "ecdsa-sha2-nistp256", "RSA": "rsa-sha2-512"}

T = TypeVar("T")

# botocore logs every request's parameters at DEBUG, RunInstances' UserData (the host key) included,
# and says which credentials and endpoint it found at INFO: keep it to warnings.
logging.getLogger("botocore").setLevel(logging.WARNING)

TAG_STATUS = "status"
TAG_STAGE_TIMES = {
    "staging": "bakery:staged-at",
    "production": "bakery:promoted-at",
    "superseded": "bakery:superseded-at",
}
LIVE_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")


# ------------------------------------------------------------------------------------------ settings


def waiter_delay() -> float:
    """Seconds between waiter polls: ``BAKERY_AWS_WAITER_DELAY`` (default 15, as EC2's own waiters)."""
    return float(os.environ.get("BAKERY_AWS_WAITER_DELAY", "15"))


def waiter_timeout() -> float:
    """How long a waiter polls before giving up: ``BAKERY_AWS_WAITER_TIMEOUT`` (default 900 s)."""
    return float(os.environ.get("BAKERY_AWS_WAITER_TIMEOUT", "900"))


def console_timeout() -> float:
    """How long to wait for host keys in the console output: ``BAKERY_AWS_CONSOLE_TIMEOUT`` (default 600 s)."""
    return float(os.environ.get("BAKERY_AWS_CONSOLE_TIMEOUT", "600"))


def ec2_client(region: str | None = None, *, quick: bool = False) -> Any:
    """The EC2 client of the configured region; ``quick`` for hooks that must not hang (short timeouts)."""
    where = region or aws.region()
    if not where:
        raise UsageError("--target aws: no region (set AWS_REGION or AWS_DEFAULT_REGION)")
    if not quick:
        return aws.client("ec2", region=where)
    config = Config(retries={"mode": "adaptive", "max_attempts": 3}, connect_timeout=5, read_timeout=20)
    return aws.client("ec2", region=where, config=config)


# -------------------------------------------------------------------------------------------- errors


def _retrying(call: Callable[[], T], retry_codes: frozenset[str], timeout: float, poll: float | None = None) -> T:
    """``call`` again while it fails with one of ``retry_codes`` (EC2's eventual consistency), up to ``timeout``,
    every ``poll`` seconds (default: from 1 s doubling up to the waiter delay)."""
    deadline = time.monotonic() + timeout
    delay = poll if poll is not None else min(1.0, waiter_delay())
    while True:
        try:
            return call()
        except ClientError as exc:
            if error_code(exc) not in retry_codes or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        if poll is None:
            delay = min(delay * 2, max(waiter_delay(), 0.1))


# -------------------------------------------------------------------------------------------- images


def snapshot_ids(image: dict[str, Any]) -> list[str]:
    return [
        m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings") or [] if (m.get("Ebs") or {}).get("SnapshotId")
    ]


def parse_artifact_id(artifact_id: str, region: str | None = None) -> tuple[str, str]:
    """Packer's ``region:ami-…`` (comma-separated with ``ami_regions``) → ``(region, ami id)``;
    the entry of ``region`` when there is one, else the first."""
    entries = []
    for part in artifact_id.split(","):
        where, sep, ami = part.strip().partition(":")
        if not sep or not ami.startswith("ami-"):
            raise JobFailed(f"aws: artifact id {artifact_id!r} from the manifest is not region:ami-...")
        entries.append((where, ami))
    return next((e for e in entries if e[0] == region), entries[0])


def describe_image(ec2: Any, image_id: str) -> dict[str, Any]:
    try:
        found = ec2.describe_images(ImageIds=[image_id])["Images"]
    except ClientError as exc:
        if error_code(exc).startswith("InvalidAMIID"):
            raise UsageError(f"--image {image_id!r}: no such AMI ({error_code(exc)})") from None
        raise
    if not found:
        raise UsageError(f"--image {image_id!r}: no such AMI")
    return dict(found[0])


def find_image_by_name(ec2: Any, name: str) -> dict[str, Any]:
    """The newest own AMI whose ``Name`` tag is ``name``."""
    pages = ec2.get_paginator("describe_images").paginate(
        Owners=["self"], Filters=[{"Name": "tag:Name", "Values": [name]}]
    )
    found: list[dict[str, Any]] = [image for page in pages for image in page.get("Images", [])]
    if not found:
        raise UsageError(f"--image {name!r}: no AMI of this account has Name={name}")
    return max(found, key=lambda i: str(i.get("CreationDate", "")))


def image_record(image: dict[str, Any], family: str = "", version: str = "") -> Image:
    tags = tags_of(image)
    created = parse_time(image.get("CreationDate"))
    return Image(
        target="aws",
        id=image["ImageId"],
        family=family_of_tags(tags) or family,
        version=tags.get("Version") or version,
        name=tags.get("Name") or image.get("Name", ""),
        created=created,
        stage=tags.get(TAG_STATUS),
        tags=tags,
    )


def build_tags(image: dict[str, Any], family: str, version: str, now: datetime | None = None) -> dict[str, str]:
    """The tags bakery relies on, written on a fresh AMI and its snapshots whatever the template set:
    ``Name = <family>-<version>`` and ``Version`` (the family rule and the seed's Terraform lookup),
    ``BuildTime`` (the template's, else the AMI's creation time) and ``ManagedBy`` (the template's when
    it names Packer or bakery, else ``bakery``: bakery built it, so retention may act on it)."""
    tags = tags_of(image)
    built = tags.get("BuildTime") or str(image.get("CreationDate") or "")
    if not built:
        built = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    managed = tags.get(aws.TAG_MANAGED_BY, "")
    return {
        "Name": f"{family}-{version}",
        "Version": version,
        "BuildTime": built,
        aws.TAG_MANAGED_BY: managed if is_managed(managed) else aws.MANAGED_BY_BAKERY,
        aws.TAG_BUILT_FAMILY: family,
    }


def require_managed(image: dict[str, Any]) -> None:
    if aws.TAG_MANAGED_BY not in tags_of(image):
        raise UsageError(f"--image {image['ImageId']}: no ManagedBy tag; bakery never touches images it did not build")


def stage_tags(stage: str, run_id: str, now: datetime | None = None) -> dict[str, str]:
    tags = {TAG_STATUS: stage, aws.TAG_RUN_ID: run_id}
    if stage in TAG_STAGE_TIMES:
        tags[TAG_STAGE_TIMES[stage]] = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    return tags


# ----------------------------------------------------------------------------------- test resources


def run_tags(run: Run) -> dict[str, str]:
    return {
        aws.TAG_RUN_ID: run.run_id,
        aws.TAG_EXPIRES_AT: run.expires_at.astimezone(UTC).isoformat(timespec="seconds"),
        aws.TAG_MANAGED_BY: aws.MANAGED_BY_BAKERY,
    }


def tag_specifications(tags: dict[str, str], *resource_types: str) -> list[dict[str, Any]]:
    return [{"ResourceType": kind, "Tags": tag_list(tags)} for kind in resource_types]


def resource_name(run: Run) -> str:
    """The key pair's and security group's name: unique per run."""
    return f"bakery-{run.run_id}"


@dataclass(frozen=True)
class Network:
    vpc_id: str
    cidr: str
    subnet_id: str | None


def find_network(ec2: Any, subnet: str | None) -> Network:
    """The subnet's VPC and its CIDR; without a subnet, the region's default VPC."""
    if subnet:
        try:
            found = ec2.describe_subnets(SubnetIds=[subnet])["Subnets"]
        except ClientError as exc:
            if error_code(exc) == "InvalidSubnetID.NotFound":
                raise UsageError(f"--subnet {subnet}: no such subnet in {ec2.meta.region_name}") from None
            raise
        vpc_id = found[0]["VpcId"]
        vpc = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]
    else:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise UsageError(f"--subnet: required, {ec2.meta.region_name} has no default VPC")
        vpc, vpc_id = vpcs[0], vpcs[0]["VpcId"]
    return Network(vpc_id, vpc["CidrBlock"], subnet)


def import_key_pair(ec2: Any, name: str, public_key: str, tags: dict[str, str]) -> str:
    """The run's public key as an EC2 key pair; returns its KeyPairId."""
    imported = ec2.import_key_pair(
        KeyName=name,
        PublicKeyMaterial=public_key.encode(),
        TagSpecifications=tag_specifications(tags, "key-pair"),
    )
    return str(imported["KeyPairId"])


def create_ssh_group(ec2: Any, name: str, vpc_id: str, cidr: str, tags: dict[str, str]) -> str:
    """A security group admitting tcp/22 from ``cidr`` only (and EC2's default all-egress rule)."""
    group_id = str(
        ec2.create_security_group(
            GroupName=name,
            Description="bakery test instance: ssh from the runner only",
            VpcId=vpc_id,
            TagSpecifications=tag_specifications({**tags, "Name": name}, "security-group"),
        )["GroupId"]
    )
    ranges = {"Ipv6Ranges": [{"CidrIpv6": cidr}]} if ":" in cidr else {"IpRanges": [{"CidrIp": cidr}]}
    ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, **ranges}],
    )
    return group_id


def run_instance(
    ec2: Any,
    *,
    image_id: str,
    options: AwsOptions,
    key_name: str,
    group_id: str,
    user_data: str | None,
    tags: dict[str, str],
    name: str,
) -> str:
    """One instance, tagged at creation together with its volumes and network interface."""
    params: dict[str, Any] = {
        "ImageId": image_id,
        "InstanceType": options.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "KeyName": key_name,
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "InstanceInitiatedShutdownBehavior": "terminate",
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tag_list({**tags, "Name": name})},
            *tag_specifications(tags, "volume", "network-interface"),
        ],
    }
    if options.ssh_address == "public" and options.subnet:
        params["NetworkInterfaces"] = [
            {"DeviceIndex": 0, "SubnetId": options.subnet, "Groups": [group_id], "AssociatePublicIpAddress": True}
        ]
    else:
        params["SecurityGroupIds"] = [group_id]
        if options.subnet:
            params["SubnetId"] = options.subnet
    if user_data:
        params["UserData"] = user_data
    if options.instance_profile:
        arn = options.instance_profile.startswith("arn:")
        params["IamInstanceProfile"] = {"Arn" if arn else "Name": options.instance_profile}
    return str(ec2.run_instances(**params)["Instances"][0]["InstanceId"])


def wait_for(
    ec2: Any, waiter: str, instance_ids: list[str], what: str, timeout: float | None = None, delay: float | None = None
) -> None:
    """EC2's ``waiter`` with bakery's delay and time limit (or these); a timeout is a final (not retried) failure.

    Each poll is an ordinary client call, so throttling is retried there (botocore's adaptive mode). A
    waiter that stops on an error response (one that outlived those retries) says so, and is retryable
    when the error is transient: it is not a time-out.
    """
    delay, timeout = delay or waiter_delay(), timeout or waiter_timeout()
    try:
        ec2.get_waiter(waiter).wait(
            InstanceIds=instance_ids,
            WaiterConfig={"Delay": delay, "MaxAttempts": max(1, math.ceil(timeout / max(delay, 0.01)))},
        )
    except WaiterError as exc:
        code = error_code(exc)
        if code:
            message = ((exc.last_response or {}).get("Error") or {}).get("Message", "")
            raise AwsFailed(
                f"aws: waiting for {', '.join(instance_ids)} to become {what}: {code}: {message}",
                retryable=code in TRANSIENT_CODES,
            ) from exc
        reason = exc.kwargs.get("reason", "") if hasattr(exc, "kwargs") else ""
        raise AwsFailed(
            f"aws: {', '.join(instance_ids)} did not become {what} within {timeout:.0f} s ({reason or exc})"
        ) from exc


def describe_instance(ec2: Any, instance_id: str) -> dict[str, Any]:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return dict(reservations[0]["Instances"][0])


def instance_address(instance: dict[str, Any], ssh_address: str) -> tuple[str, int]:
    """Where SSH of ``instance`` answers: its private or public address, port 22."""
    key = "PublicIpAddress" if ssh_address == "public" else "PrivateIpAddress"
    address = instance.get(key)
    if not address:
        hint = "; use a subnet that assigns public addresses, or --ssh-address private"
        hint = hint if ssh_address == "public" else ""
        raise JobFailed(f"aws: instance {instance['InstanceId']} has no {ssh_address} address{hint}")
    return str(address), 22


# ----------------------------------------------------------------------------------------- host keys


def generate_host_key() -> tuple[str, str]:
    """A fresh Ed25519 host key: ``(private key in OpenSSH PEM, "ssh-ed25519 AAAA...")``; never written."""
    private, public = new_ed25519_key()
    return private.decode(), public


def host_key_user_data(private_key: str, public_key: str) -> str:
    """cloud-init user-data that installs the given Ed25519 host key (cloud-init's ``ssh_keys``)."""
    document = {"ssh_keys": {"ed25519_private": private_key, "ed25519_public": public_key}}
    return "#cloud-config\n" + yaml.safe_dump(document, default_flow_style=False, sort_keys=False)


def host_key_path(run: Run, instance_id: str) -> Path:
    """The injected host key's public half, in the run's 0700 key directory."""
    return run.private_key.parent / f"{instance_id}.{HOST_KEY_NAME}"


def _console_block(text: str, title: str) -> Iterator[str]:
    """The lines between cloud-init's ``-----BEGIN <title>-----`` and ``-----END <title>-----`` markers (every
    such block: the console may hold more than one boot)."""
    inside = False
    for line in text.splitlines():
        if f"-----BEGIN {title}-----" in line:
            inside = True
        elif f"-----END {title}-----" in line:
            inside = False
        elif inside:
            yield line


def console_host_keys(text: str) -> list[str]:
    """``"TYPE BASE64"`` lines of cloud-init's ``SSH HOST KEY KEYS`` block, best type first."""
    keys = {
        f"{match.group(1)} {match.group(2)}"
        for line in _console_block(text, "SSH HOST KEY KEYS")
        if (match := _KEY_LINE.search(line))
    }
    return sorted(keys, key=lambda k: _KEY_PREFERENCE.index(k.split()[0]))


def console_fingerprints(text: str) -> dict[str, str]:
    """``{"ED25519": "SHA256:..."}`` from cloud-init's ``SSH HOST KEY FINGERPRINTS`` block."""
    found: dict[str, str] = {}
    for line in _console_block(text, "SSH HOST KEY FINGERPRINTS"):
        if match := _FINGERPRINT_LINE.search(line):
            found.setdefault(match.group(2), match.group(1))
    return found


def fingerprint(key: paramiko.PKey) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def scan_host_key(host: str, port: int, key_type: str, timeout: float) -> paramiko.PKey:
    """The host key ``host:port`` offers for ``key_type`` (only a handshake, no login), retried until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=5) as sock:
                transport = paramiko.Transport(sock)
                try:
                    transport.get_security_options().key_types = (key_type,)
                    transport.start_client(timeout=10)
                    return transport.get_remote_server_key()
                finally:
                    transport.close()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if time.monotonic() > deadline:
                raise JobFailed(f"ssh {host}:{port}: no host key offered within {timeout:.0f} s ({exc})") from None
        time.sleep(min(2.0, max(0.1, waiter_delay())))


def console_output(ec2: Any, instance_id: str) -> str:
    return str(ec2.get_console_output(InstanceId=instance_id).get("Output") or "")


# ------------------------------------------------------------------------------------------ teardown


def run_instances(ec2: Any, run_id: str) -> list[str]:
    """Ids of the run's instances that are not terminated yet (Packer's builder of the run included)."""
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": f"tag:{aws.TAG_RUN_ID}", "Values": [run_id]},
            {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
        ]
    )
    return [i["InstanceId"] for p in pages for r in p.get("Reservations", []) for i in r.get("Instances", [])]


def run_security_groups(ec2: Any, run_id: str) -> list[dict[str, Any]]:
    pages = ec2.get_paginator("describe_security_groups").paginate(
        Filters=[{"Name": f"tag:{aws.TAG_RUN_ID}", "Values": [run_id]}]
    )
    return [g for p in pages for g in p.get("SecurityGroups", [])]


def run_key_pairs(ec2: Any, run_id: str) -> list[dict[str, Any]]:
    found = ec2.describe_key_pairs(Filters=[{"Name": f"tag:{aws.TAG_RUN_ID}", "Values": [run_id]}])
    return list(found.get("KeyPairs", []))


@dataclass
class Termination:
    """What one terminate-and-wait did, per instance."""

    terminated: list[str]  # terminated, and the wait saw them so
    already_gone: list[str]
    refused: dict[str, ClientError]  # EC2 refused to terminate these
    unfinished: list[str]  # terminating still when the wait ended (``wait_error`` says why)
    wait_error: AwsFailed | None = None


def terminate_and_wait(
    ec2: Any, instance_ids: list[str], timeout: float | None = None, delay: float | None = None
) -> Termination:
    """Terminate the instances and wait until they are terminated (already gone is fine): the one way both
    the run's teardown and the sweep remove instances. ``timeout``/``delay``: the wait's (bakery's default)."""
    present: list[str] = []
    already_gone: list[str] = []
    refused: dict[str, ClientError] = {}
    try:
        if instance_ids:
            ec2.terminate_instances(InstanceIds=instance_ids)
        present = list(instance_ids)
    except ClientError:
        # One bad id fails the whole call: go one by one to find out which.
        for instance_id in instance_ids:
            try:
                found = gone(partial(ec2.terminate_instances, InstanceIds=[instance_id]), *_NO_INSTANCE)
            except ClientError as exc:
                refused[instance_id] = exc
                continue
            (present if found else already_gone).append(instance_id)
    if present:
        try:
            wait_for(ec2, "instance_terminated", present, "terminated", timeout, delay)
        except AwsFailed as exc:
            if error_code(exc.__cause__ or exc) not in _NO_INSTANCE:
                return Termination([], already_gone, refused, present, exc)
    return Termination(present, already_gone, refused, [])


def terminate(ec2: Any, instance_ids: list[str], timeout: float | None = None) -> list[str]:
    """Terminate and wait until terminated; returns the ids that existed. Already gone is fine; the first
    refusal, else a wait that ended first, is raised."""
    done = terminate_and_wait(ec2, instance_ids, timeout)
    if done.refused:
        raise next(iter(done.refused.values()))
    if done.wait_error is not None:
        raise done.wait_error
    return done.terminated


_NO_INSTANCE = ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed")
# A terminated instance's network interface lingers for a while: the group is "in use" until it goes.
_GROUP_BUSY = frozenset({"DependencyViolation", "InvalidGroup.InUse"})


def delete_security_group(
    ec2: Any, group_id: str, timeout: float | None = None, *, wait: float | None = None, poll: float | None = None
) -> bool:
    """Delete (already gone is fine: False); retried while the group is still in use, for ``wait`` seconds
    (default a third of the waiter time limit ``timeout``), every ``poll`` seconds (default: backing off)."""
    delete = partial(ec2.delete_security_group, GroupId=group_id)
    limit = wait if wait is not None else max((timeout or waiter_timeout()) / 3, 1.0)
    return _retrying(partial(gone, delete, "InvalidGroup.NotFound"), _GROUP_BUSY, timeout=limit, poll=poll)


def remove_resources(
    ec2: Any,
    instance_ids: list[str],
    groups: list[dict[str, Any]],
    key_pairs: list[dict[str, Any]],
    timeout: float | None = None,
) -> list[str]:
    """Instances first (and wait), then security groups and key pairs; every step runs even if one fails,
    except that the groups wait for the next attempt when the instances could not be terminated: EC2
    refuses to delete a group an instance still uses, and retrying that would only burn the time limit.

    Returns what was removed; raises one ``AwsFailed`` naming every step that failed or was put off.
    """
    removed: list[str] = []
    failures: list[str] = []
    if instance_ids:
        what = f"instance {', '.join(instance_ids)}"
        try:
            with aws_errors(f"removing {what}"):
                present = terminate(ec2, instance_ids, timeout)
            if present:
                removed.append(what)
        except AwsFailed as exc:
            failures.append(str(exc))
    steps: list[tuple[str, Callable[[], Any]]] = []
    for group in groups:
        what = f"security group {group['GroupId']}"
        if failures:
            failures.append(f"aws: {what}: not removed while its instance is not terminated")
        else:
            steps.append((what, partial(delete_security_group, ec2, group["GroupId"], timeout)))
    steps += [
        (f"key pair {k['KeyName']}", partial(delete_key_pair, ec2, k["KeyPairId"], k["KeyName"])) for k in key_pairs
    ]
    for what, step in steps:
        try:
            with aws_errors(f"removing {what}"):
                done = step()
        except AwsFailed as exc:
            failures.append(str(exc))
            continue
        if done:
            removed.append(what)
    if failures:
        raise AwsFailed("; ".join(failures), retryable=True)
    return removed


# ------------------------------------------------------------------------------------------- target


@dataclass
class _Made:
    """What a launch has created so far (undone when the launch fails)."""

    key_pair_id: str | None = None
    group_id: str | None = None
    instance_id: str | None = None


class AwsTarget:
    """AMIs in one account and region; stages are the ``status`` tag on each AMI and its snapshots."""

    name = "aws"

    def __init__(self, options: AwsOptions | None = None, ec2: Any = None, timeout: float | None = None) -> None:
        self.options = options or AwsOptions()
        self.ec2 = ec2 or ec2_client()
        self.timeout = timeout or waiter_timeout()

    @property
    def region(self) -> str:
        return str(self.ec2.meta.region_name)

    # --- images -----------------------------------------------------------------------------------

    def image_from_artifact(self, artifact_id: str, family: str, version: str) -> Image:
        """The AMI of Packer's manifest entry ``region:ami-…``."""
        where, ami = parse_artifact_id(artifact_id, self.region)
        if where != self.region:
            log.warning("the AMI was built in %s, not %s: testing it there", where, self.region)
            self.ec2 = ec2_client(where)
        with aws_errors(f"reading {ami}"):
            found = describe_image(self.ec2, ami)
        return image_record(found, family, version)

    def adopt_build(self, artifact_id: str, family: str, version: str, run_id: str) -> Image:
        """The AMI Packer built, with the tags bakery relies on (``build_tags``) on it and its snapshots,
        so a template that sets none still yields an image retention, promotion and Terraform find."""
        image = self.image_from_artifact(artifact_id, family, version)
        with aws_errors(f"tagging {image.id}"):
            found = describe_image(self.ec2, image.id)
            tags = build_tags(found, family, version)
            self.ec2.create_tags(Resources=[image.id, *snapshot_ids(found)], Tags=tag_list(tags))
        return image_record({**found, "Tags": tag_list({**tags_of(found), **tags})}, family, version)

    def image(self, reference: str) -> Image:
        """An AMI by id (``ami-…`` or ``region:ami-…``), by ``Name`` tag, or as ``family:version``."""
        with aws_errors(f"looking up {reference}"):
            if reference.startswith("ami-") or ":ami-" in reference:
                _, ami = parse_artifact_id(reference if ":" in reference else f"{self.region}:{reference}")
                found = describe_image(self.ec2, ami)
            else:
                family, sep, version = reference.partition(":")
                found = find_image_by_name(self.ec2, f"{family}-{version}" if sep else reference)
        require_managed(found)
        image = image_record(found)
        if not image.family:
            raise UsageError(f"--image {reference}: no Family tag, and its Name does not end in -<Version>")
        return image

    def set_stage(self, image: Image, stage: str, run_id: str) -> None:
        """The ``status`` tag (with ``bakery:run-id`` and the stage's time) on the AMI and its snapshots."""
        with aws_errors(f"tagging {image.id} {stage}"):
            found = describe_image(self.ec2, image.id)
            require_managed(found)
            self.ec2.create_tags(Resources=[image.id, *snapshot_ids(found)], Tags=tag_list(stage_tags(stage, run_id)))

    def current_stage(self, image: Image) -> str | None:
        """The ``status`` tag as EC2 holds it now."""
        with aws_errors(f"reading the stage of {image.id}"):
            return tags_of(describe_image(self.ec2, image.id)).get(TAG_STATUS)

    def release(self, image: Image) -> list[str]:
        """An AMI has no copy on this machine."""
        return []

    def record_test_result(self, image: Image, result: str, run_id: str) -> None:
        """``bakery:last-tested``/``bakery:last-result``/``bakery:last-test-run`` on the AMI and its snapshots;
        ``status`` and the stage times are not touched."""
        with aws_errors(f"recording the test result of {image.id}"):
            found = describe_image(self.ec2, image.id)
            require_managed(found)
            tags = {
                TAG_LAST_TESTED: datetime.now(UTC).isoformat(timespec="seconds"),
                TAG_LAST_RESULT: result,
                TAG_LAST_TEST_RUN: run_id,
            }
            self.ec2.create_tags(Resources=[image.id, *snapshot_ids(found)], Tags=tag_list(tags))

    # --- test instances ---------------------------------------------------------------------------

    def preflight(self) -> None:
        """Before a build: the subnet (or the default VPC) exists, and the credentials work."""
        with aws_errors("checking the test instance's network"):
            find_network(self.ec2, self.options.subnet)

    def launch(self, image: Image, run: Run) -> Instance:
        """Key pair, security group, instance (with its host key in user-data); waits for status ok.

        A failure part-way removes whatever was made and re-raises the original error.
        """
        made = _Made()
        with aws_errors(f"launching a test instance of {image.id}"):
            try:
                self._launch(image, run, made)
            except BaseException as exc:
                self._undo(made, run, exc)
                raise
        assert made.instance_id is not None
        return Instance(self.name, made.instance_id, image.id, run.run_id)

    def _launch(self, image: Image, run: Run, made: _Made) -> None:
        tags = run_tags(run)
        name = resource_name(run)
        network = find_network(self.ec2, self.options.subnet)
        cidr = self.options.ssh_cidr or network.cidr
        if cidr in ("0.0.0.0/0", "::/0"):
            log.warning("the test instance's SSH port is open to %s (--ssh-cidr)", cidr)
        elif self.options.ssh_address == "public" and not self.options.ssh_cidr:
            log.warning("--ssh-address public without --ssh-cidr: only %s (the VPC) may reach port 22", cidr)
        made.key_pair_id = import_key_pair(self.ec2, name, run.public_key, tags)
        made.group_id = create_ssh_group(self.ec2, name, network.vpc_id, cidr, tags)
        user_data = public_host_key = None
        if self.options.host_key == "user-data":
            private_host_key, public_host_key = generate_host_key()
            user_data = host_key_user_data(private_host_key, public_host_key)
        made.instance_id = run_instance(
            self.ec2,
            image_id=image.id,
            options=self.options,
            key_name=name,
            group_id=made.group_id,
            user_data=user_data,
            tags=tags,
            name=f"bakery-test-{run.family}",
        )
        if public_host_key:
            host_key_path(run, made.instance_id).write_text(public_host_key + "\n")
        log.info(
            "test instance %s (%s) from %s in %s, ssh from %s; waiting for its status checks",
            made.instance_id,
            self.options.instance_type,
            image.id,
            network.subnet_id or f"the default subnet of {network.vpc_id}",
            cidr,
        )
        wait_for(self.ec2, "instance_running", [made.instance_id], "running", self.timeout)
        wait_for(self.ec2, "instance_status_ok", [made.instance_id], "status ok", self.timeout)

    def _undo(self, made: _Made, run: Run, failure: BaseException) -> None:
        """Remove what a failed launch made; a failure here is logged, never raised over ``failure``."""
        instances = [made.instance_id] if made.instance_id else []
        groups = [{"GroupId": made.group_id}] if made.group_id else []
        keys = [{"KeyPairId": made.key_pair_id, "KeyName": resource_name(run)}] if made.key_pair_id else []
        try:
            removed = remove_resources(self.ec2, instances, groups, keys, self.timeout)
            if removed:
                log.warning("launch failed (%s); removed %s", _short(failure), ", ".join(removed))
        except Exception as exc:
            log.error("launch failed, and removing what it made failed too: %s (bake sweep will find it)", exc)

    def endpoint(self, instance: Instance, run: Run) -> SshEndpoint:
        with aws_errors(f"reading instance {instance.id}"):
            described = describe_instance(self.ec2, instance.id)
        host, port = instance_address(described, self.options.ssh_address)
        return SshEndpoint(
            host=host,
            port=port,
            user=self.options.ssh_user,
            key_path=run.private_key,
            host_key=self._host_key(instance, run, host, port),
        )

    def _host_key(self, instance: Instance, run: Run, host: str, port: int) -> str:
        """The injected key; else the console's key block (or a key matching its fingerprints); else
        trust on first use when asked for; else fail closed."""
        injected = host_key_path(run, instance.id)
        if injected.is_file():
            return " ".join(injected.read_text().split()[:2])
        found = self._from_console(instance.id, host, port)
        if found:
            return found
        if not self.options.trust_on_first_use:
            raise JobFailed(
                f"aws: no host key for {instance.id}: none injected (--host-key-source console) and none in its "
                "console output; refusing to connect (--trust-on-first-use accepts the first key offered)"
            )
        key = scan_host_key(host, port, "ssh-ed25519", console_timeout())
        log.warning(
            "trusting the host key %s offered by %s:%d on first use (--trust-on-first-use)",
            fingerprint(key),
            host,
            port,
        )
        return f"{key.get_name()} {key.get_base64()}"

    def _from_console(self, instance_id: str, host: str, port: int) -> str | None:
        """Poll the console output until cloud-init's host key block (or its fingerprints) shows up."""
        deadline = time.monotonic() + console_timeout()
        while True:
            with aws_errors(f"reading the console output of {instance_id}"):
                text = console_output(self.ec2, instance_id)
            keys = console_host_keys(text)
            if keys:
                return keys[0]
            prints = console_fingerprints(text)
            for kind in ("ED25519", "ECDSA", "RSA"):
                if kind in prints:
                    key = scan_host_key(host, port, _FINGERPRINT_TYPES[kind], console_timeout())
                    if fingerprint(key) != prints[kind]:
                        raise JobFailed(
                            f"ssh {host}:{port}: offers host key {fingerprint(key)}, but the console of "
                            f"{instance_id} says {prints[kind]}; refusing to connect"
                        )
                    return f"{key.get_name()} {key.get_base64()}"
            if time.monotonic() > deadline:
                return None
            time.sleep(max(waiter_delay(), 0.1))

    def teardown(self, instance: Instance) -> None:
        """Terminate the instance and wait, then delete the run's security group and key pair."""
        with aws_errors(f"removing test instance {instance.id}"):
            groups = run_security_groups(self.ec2, instance.run_id)
            keys = run_key_pairs(self.ec2, instance.run_id)
        remove_resources(self.ec2, [instance.id], groups, keys, self.timeout)

    def teardown_run(self, run_id: str) -> list[str]:
        """Remove every instance, security group and key pair tagged with ``run_id`` (crash/cancel hooks)."""
        with aws_errors(f"finding the resources of run {run_id}"):
            instances = run_instances(self.ec2, run_id)
            groups = run_security_groups(self.ec2, run_id)
            keys = run_key_pairs(self.ec2, run_id)
        return remove_resources(self.ec2, instances, groups, keys, self.timeout)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__

"""bakery's retention vs the seed's ``cleanup-old-amis.sh``, on identical fixtures, in the same run.

A moto server (in this process, on 127.0.0.1) holds N managed AMIs of family app-base, each with its own
snapshot and a distinct creation date (set in moto's backend: moto stamps "now" with 1 s resolution). The
seed's script runs verbatim with the aws CLI pointed at it through ``AWS_ENDPOINT_URL``; then the fixture
is rebuilt from scratch and ``bake retention --target aws --family app-base --keep 5 --apply`` runs
against a running Prefect server (as a team's would be). Both must end with the same five AMIs.

Prints both wall times, the API calls each made (counted at the moto server, by action) and the ratio.
Targets: bakery at least 20x faster; at most 3 API calls per deleted image plus a constant (deregister, delete
its snapshot, and read its launch permissions again just before: the one re-read with no batch form).

Run: .venv/bin/python bench/retention_speed.py [--images N] [--keep K]
(needs the aws CLI in the venv: .venv/bin/pip install awscli)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._run import timed
from tests.support.moto import CountingMotoServer, ec2_backend, moto_server
from tests.support.servers import prefect_server

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FAMILY = "app-base"
T0 = datetime(2026, 1, 1, tzinfo=UTC)

# The seed's scripts/cleanup-old-amis.sh, verbatim.
SEED_SCRIPT = """#!/bin/bash
# scripts/cleanup-old-amis.sh
# Keep the 5 most recent images per image family, delete the rest
IMAGE_NAME="app-base"
KEEP_COUNT=5
AMI_IDS=$(aws ec2 describe-images \\
--owners self \\
--filters "Name=tag:Name,Values=${IMAGE_NAME}-*" "Name=tag:ManagedBy,Values=packer" \\
--query "sort_by(Images, &CreationDate)[:-${KEEP_COUNT}].ImageId" \\
--output text)
for AMI_ID in $AMI_IDS; do
echo "Deregistering $AMI_ID"
SNAP_IDS=$(aws ec2 describe-images --image-ids "$AMI_ID" \\
--query 'Images[0].BlockDeviceMappings[*].Ebs.SnapshotId' --output text)
aws ec2 deregister-image --image-id "$AMI_ID"
for SNAP_ID in $SNAP_IDS; do
echo "Deleting snapshot $SNAP_ID"
aws ec2 delete-snapshot --snapshot-id "$SNAP_ID"
done
done
"""


def build_fixture(server: CountingMotoServer, count: int) -> dict[str, str]:
    """``count`` managed AMIs of app-base (status testing), oldest first; returns version → snapshot id."""
    import boto3

    server.reset()
    ec2 = boto3.client("ec2")

    def make(n: int) -> tuple[str, str]:
        version = f"1.0.{n}"
        image_id = ec2.register_image(Name=f"{FAMILY}-{version}-{1700000000 + n}")["ImageId"]
        tags = {"Name": f"{FAMILY}-{version}", "Version": version, "ManagedBy": "packer", "status": "testing"}
        ec2.create_tags(Resources=[image_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
        return image_id, version

    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(make, range(count)))
    backend = ec2_backend()
    snapshots = {}
    for n, (image_id, version) in enumerate(made):
        backend.amis[image_id].creation_date = T0 + timedelta(hours=n)
        snapshots[version] = backend.amis[image_id].ebs_snapshot.id
    server.counter.reset()
    return snapshots


def end_state(snapshots: dict[str, str]) -> tuple[list[str], int]:
    """(versions of the AMIs left, how many of the fixture's snapshots are left)."""
    import boto3

    ec2 = boto3.client("ec2")
    images = ec2.describe_images(Owners=["self"])["Images"]
    versions = sorted(t["Value"] for i in images for t in i.get("Tags", []) if t["Key"] == "Version")
    left = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    return versions, len(left & set(snapshots.values()))


def calls_text(calls: dict[str, int]) -> str:
    return ", ".join(f"{action} {n}" for action, n in sorted(calls.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--keep", type=int, default=5)
    opts = parser.parse_args()
    if not (BIN / "aws").exists():
        raise SystemExit("the aws CLI is missing: .venv/bin/pip install awscli")
    doomed = opts.images - opts.keep
    expected = sorted(f"1.0.{n}" for n in range(doomed, opts.images))

    with moto_server() as server, prefect_server() as api_url, tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "PREFECT_API_URL": api_url,
            "BAKERY_STATE_DIR": tmp,
            "BAKERY_LOG_LEVEL": "WARNING",
        }
        script = Path(tmp) / "cleanup-old-amis.sh"
        script.write_text(SEED_SCRIPT.replace("KEEP_COUNT=5", f"KEEP_COUNT={opts.keep}"))

        snapshots = build_fixture(server, opts.images)
        seed_time, _ = timed(["bash", str(script)], REPO, env)
        seed_calls = dict(server.counter.calls)
        seed_state = end_state(snapshots)

        snapshots = build_fixture(server, opts.images)
        bake_args = [str(BIN / "bake"), "retention", "--target", "aws", "--family", FAMILY]
        bake_time, _ = timed([*bake_args, "--keep", str(opts.keep), "--apply"], REPO, env)
        bake_calls = dict(server.counter.calls)
        bake_state = end_state(snapshots)

        # where bakery's time goes: the same work in-process, without process start-up or Prefect
        from tasks import retention
        from tasks.targets.aws.images import AwsImages

        snapshots = build_fixture(server, opts.images)
        started = time.monotonic()
        store = AwsImages()
        images, usage = store.inventory()
        plan = retention.plan_retention(images, usage, keep=opts.keep, families=[FAMILY], target="aws")
        retention.execute(plan, store)
        core_time = time.monotonic() - started
        core_state = end_state(snapshots)

    for name, state in (("seed", seed_state), ("bake", bake_state), ("in-process", core_state)):
        if state != (expected, opts.keep):
            raise SystemExit(f"{name}: wrong end state {state}; expected {expected} and {opts.keep} snapshots")
    seed_total, bake_total = sum(seed_calls.values()), sum(bake_calls.values())
    per_image = sum(bake_calls.get(a, 0) for a in ("DeregisterImage", "DeleteSnapshot", "DescribeImageAttribute"))
    constant = bake_total - per_image
    print(f"fixture: {opts.images} managed AMIs of {FAMILY}, one snapshot each; keep {opts.keep}, delete {doomed}")
    print(f"seed cleanup-old-amis.sh: {seed_time:7.2f} s  {seed_total} API calls ({calls_text(seed_calls)})")
    print(f"bake retention --apply:   {bake_time:7.2f} s  {bake_total} API calls ({calls_text(bake_calls)})")
    print(f"  (the same plan + deletions in-process, no process start-up or Prefect: {core_time:.2f} s)")
    print(f"bakery API calls: {per_image} for {doomed} deleted images ({per_image / doomed:.2f} each) + {constant}")
    print(f"speed-up: {seed_time / bake_time:.1f}x (target >= 20x); both left {', '.join(expected)}")


if __name__ == "__main__":
    main()

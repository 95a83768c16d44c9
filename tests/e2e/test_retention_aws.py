"""Retention of AMIs through `bake retention`, against a moto server: the cases cleanup scripts get wrong.

One account holds, for family app-base (oldest first): a production AMI, one used by a running instance,
one referenced only by a non-default launch template version, one used by an Auto Scaling group's launch
configuration, plain old ones (one whose only instance is terminated, one disabled, one failed), two AMIs
sharing one snapshot, one sharing its snapshot with the newest AMI, one used by a stopped instance, the
newest three; an unmanaged AMI whose name matches the family; and a family whose name starts the same
(app-base-web), which the seed's `Name=app-base-*` filter would sweep up.

moto's API cannot make two AMIs share a snapshot, nor set a creation date: both are set in moto's
backend here, at the test seam.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from tests.e2e.conftest import Bake
from tests.support.moto import CountingMotoServer, ec2_backend, moto_server

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
def moto() -> Iterator[CountingMotoServer]:
    with moto_server() as server:
        server.reset()
        yield server


@dataclass
class Account:
    ec2: Any
    ids: dict[str, str] = field(default_factory=dict)  # label → AMI id
    snapshots: dict[str, str] = field(default_factory=dict)  # label → its snapshot id

    def ami(
        self,
        label: str,
        family: str,
        version: str,
        day: int,
        *,
        managed: bool = True,
        status: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> str:
        name = f"{family}-{version}"
        image_id = self.ec2.register_image(Name=f"{name}-{1700000000 + day}")["ImageId"]
        all_tags = {"Name": name, "Version": version, "BuildTime": str(1700000000 + day), **(extra or {})}
        if status:
            all_tags["status"] = status
        if managed:
            all_tags["ManagedBy"] = "packer"
        self.ec2.create_tags(Resources=[image_id], Tags=[{"Key": k, "Value": v} for k, v in all_tags.items()])
        backend = ec2_backend()
        backend.amis[image_id].creation_date = T0 + timedelta(days=day)  # test seam: moto stamps "now"
        self.ids[label] = image_id
        self.snapshots[label] = backend.amis[image_id].ebs_snapshot.id
        return image_id

    def share_snapshot(self, owner: str, borrower: str) -> None:
        """Test seam: ``borrower`` now references ``owner``'s snapshot (moto's API cannot do this)."""
        backend = ec2_backend()
        own = backend.amis[self.ids[borrower]].ebs_snapshot
        backend.amis[self.ids[borrower]].ebs_snapshot = backend.amis[self.ids[owner]].ebs_snapshot
        backend.snapshots.pop(own.id)
        self.snapshots[borrower] = self.snapshots[owner]


def build_account() -> Account:
    ec2 = boto3.client("ec2")
    autoscaling = boto3.client("autoscaling")
    acct = Account(ec2)
    acct.ami("unmanaged", "app-base", "0.9", day=0, managed=False)
    acct.ami("a01-production", "app-base", "1.01", day=1, status="production")
    acct.ami(
        "a02-running",
        "app-base",
        "1.02",
        day=2,
        status="superseded",
        extra={"bakery:superseded-at": "2026-01-20T00:00:00Z"},
    )
    acct.ami("a03-lt-v2", "app-base", "1.03", day=3, status="staging")
    acct.ami("a04-asg-lc", "app-base", "1.04", day=4, status="superseded")
    acct.ami("a05-terminated", "app-base", "1.05", day=5, status="staging")
    acct.ami("a06-shared", "app-base", "1.06", day=6)
    acct.ami("a07-shared-disabled", "app-base", "1.07", day=7)
    acct.ami("a08-shared-with-newest", "app-base", "1.08", day=8)
    acct.ami("a09-stopped", "app-base", "1.09", day=9)
    acct.ami("a10-failed", "app-base", "1.10", day=10, status="failed")
    acct.ami("a11", "app-base", "1.11", day=11, status="staging", extra={"bakery:staged-at": "2026-01-16T00:00:00Z"})
    acct.ami("a12", "app-base", "1.12", day=12, status="testing")
    acct.ami(
        "a13-newest", "app-base", "1.13", day=13, status="staging", extra={"bakery:staged-at": "2026-01-18T00:00:00Z"}
    )
    for n in range(1, 5):  # built by bakery: its own mark, so retention without --family covers them
        acct.ami(f"web{n}", "app-base-web", f"2.{n}", day=n, extra={"bakery:family": "app-base-web"})
    acct.share_snapshot("a06-shared", "a07-shared-disabled")
    acct.share_snapshot("a08-shared-with-newest", "a13-newest")
    ec2.disable_image(ImageId=acct.ids["a07-shared-disabled"])

    ids = acct.ids
    ec2.run_instances(ImageId=ids["a02-running"], MinCount=1, MaxCount=1)
    stopped = ec2.run_instances(ImageId=ids["a09-stopped"], MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[stopped])
    gone = ec2.run_instances(ImageId=ids["a05-terminated"], MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.terminate_instances(InstanceIds=[gone])

    template = ec2.create_launch_template(
        LaunchTemplateName="app", LaunchTemplateData={"ImageId": ids["a13-newest"], "InstanceType": "t3.micro"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=template, LaunchTemplateData={"ImageId": ids["a03-lt-v2"]})
    autoscaling.create_launch_configuration(
        LaunchConfigurationName="app-lc", ImageId=ids["a04-asg-lc"], InstanceType="t3.micro"
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="app-asg",
        LaunchConfigurationName="app-lc",
        MinSize=0,
        MaxSize=0,
        AvailabilityZones=["us-east-1a"],
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="app-mixed",
        MixedInstancesPolicy={
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {"LaunchTemplateId": template, "Version": "$Default"},
                "Overrides": [{"InstanceType": "t3.micro"}],
            }
        },
        MinSize=0,
        MaxSize=0,
        AvailabilityZones=["us-east-1a"],
    )
    return acct


EXPECTED = {
    "a13-newest": ("keep", ["newest 3 (#1)", "current staging image", "launch template app", "app-mixed"]),
    "a12": ("keep", ["newest 3 (#2)"]),
    "a11": ("keep", ["newest 3 (#3)"]),
    "a10-failed": ("delete", ["older than the newest 3"]),
    "a09-stopped": ("keep", ["in use: instance i-", "(stopped)"]),
    "a08-shared-with-newest": ("delete", ["older than the newest 3"]),
    "a07-shared-disabled": ("delete", ["older than the newest 3"]),
    "a06-shared": ("delete", ["older than the newest 3"]),
    "a05-terminated": ("delete", ["older than the newest 3"]),
    "a04-asg-lc": ("keep", ["in use: launch configuration app-lc, used by Auto Scaling group app-asg"]),
    "a03-lt-v2": ("keep", ["in use: launch template app (lt-", "version 2"]),
    "a02-running": ("keep", ["rollback target (newest superseded)", "(running)"]),
    "a01-production": ("keep", ["status production"]),
    "unmanaged": ("skip", ["not managed by bakery (no ManagedBy)"]),
}
DELETED = [label for label, (decision, _) in EXPECTED.items() if decision == "delete"]


def by_label(acct: Account, doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    labels = {v: k for k, v in acct.ids.items()}
    return {labels[row["image"]]: row for row in doc["images"]}


def test_plan_then_apply_keeps_everything_protected(moto: CountingMotoServer, bake: Bake) -> None:
    acct = build_account()
    ec2 = acct.ec2
    # the v2-only AMI really is referenced by nothing but a non-default version
    versions = ec2.describe_launch_template_versions(LaunchTemplateName="app")["LaunchTemplateVersions"]
    refs = {(v["VersionNumber"], v["DefaultVersion"]): v["LaunchTemplateData"]["ImageId"] for v in versions}
    assert refs == {(1, True): acct.ids["a13-newest"], (2, False): acct.ids["a03-lt-v2"]}

    # dry run: the plan, exactly; nothing changes
    dry = bake("--json", "retention", "--target", "aws", "--family", "app-base", "--keep", "3")
    assert dry.returncode == 0, dry.stderr[-3000:]
    plan = json.loads(dry.stdout)
    rows = by_label(acct, plan)
    assert {label: row["decision"] for label, row in rows.items()} == {k: v[0] for k, v in EXPECTED.items()}
    for label, (_, phrases) in EXPECTED.items():
        for phrase in phrases:
            assert phrase in rows[label]["reason"], (label, rows[label]["reason"])
    snapshots = {s["snapshot"]: s for s in plan["snapshots"]}
    shared = acct.snapshots["a08-shared-with-newest"]
    assert snapshots[shared]["decision"] == "keep"
    assert snapshots[shared]["reason"] == f"still used by {acct.ids['a13-newest']}"
    assert snapshots[acct.snapshots["a06-shared"]]["images"] == ", ".join(
        sorted([acct.ids["a06-shared"], acct.ids["a07-shared-disabled"]])
    )
    assert {s for s, v in snapshots.items() if v["decision"] == "delete"} == {
        acct.snapshots[label] for label in DELETED if label != "a08-shared-with-newest"
    }
    assert plan["families"] == {
        "app-base": "app-base: 13 images, keep 8 (newest 3, production 1, staging 1, rollback 1, in use 5), "
        "delete 5 with 3 snapshots (1 shared snapshot kept); 1 unmanaged image left alone"
    }
    assert len(ec2.describe_images(Owners=["self"])["Images"]) == 18

    # apply: exactly the plan, with one call per image and per unshared snapshot
    moto.counter.reset()
    applied = bake("--json", "retention", "--target", "aws", "--family", "app-base", "--keep", "3", "--apply")
    assert applied.returncode == 0, applied.stderr[-3000:]
    result = json.loads(applied.stdout)
    assert sorted(result["deleted_images"]) == sorted(acct.ids[label] for label in DELETED)
    assert result["failures"] == []
    assert {r["result"] for r in result["images"] if r["decision"] == "delete"} == {"deleted"}
    assert moto.counter.calls["DeregisterImage"] == 5
    assert moto.counter.calls["DeleteSnapshot"] == 3
    assert "deleted 5/5 images and 3 snapshots" in result["families"]["app-base"]

    remaining = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    assert remaining == {acct.ids[label] for label in acct.ids if label not in DELETED}
    snaps = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    for label in DELETED:
        assert (acct.snapshots[label] in snaps) == (label == "a08-shared-with-newest"), label
    for label in acct.ids:
        if label not in DELETED:
            assert acct.snapshots[label] in snaps, label

    # a second run finds nothing more to delete
    again = bake("--json", "retention", "--target", "aws", "--family", "app-base", "--keep", "3", "--apply")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["deleted_images"] == []


def test_every_family_dry_run_table(moto: CountingMotoServer, bake: Bake) -> None:
    acct = build_account()
    result = bake("retention", "--target", "aws", "--keep", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.startswith("Retention plan (dry run; --apply deletes): target aws, keep 3 per family")
    header = out.splitlines()[2].split()
    assert header == ["IMAGE", "FAMILY", "VERSION", "CREATED", "STATUS", "DECISION", "REASON"]
    assert "app-base-web: 4 images, keep 3 (newest 3), delete 1 with 1 snapshot" in out
    web1 = next(line for line in out.splitlines() if line.startswith(acct.ids["web1"]))
    assert web1.split()[1:3] == ["app-base-web", "2.1"]
    assert " delete " in web1
    assert len(acct.ec2.describe_images(Owners=["self"])["Images"]) == 18  # a dry run changes nothing
    assert moto.counter.calls["DeregisterImage"] == 0


# --- what bakery owns (issue 11, item 4) ------------------------------------------------------------------------


def test_without_family_another_pipelines_amis_are_not_touched(moto: CountingMotoServer, bake: Bake) -> None:
    """ManagedBy=packer is what any Packer pipeline may set: without --family, retention covers only AMIs
    bakery marked as its own build (and families.yaml's families); the other pipeline's only when named."""
    acct = Account(boto3.client("ec2"))
    for n in range(1, 4):
        acct.ami(f"ours{n}", "own-web", f"1.{n}", day=n, extra={"bakery:family": "own-web"})
        acct.ami(f"theirs{n}", "other-pipeline", f"1.{n}", day=n)
    dry = bake("--json", "retention", "--target", "aws", "--keep", "1", "--apply")
    assert dry.returncode == 0, dry.stderr[-3000:]
    doc = json.loads(dry.stdout)
    assert sorted(doc["deleted_images"]) == sorted([acct.ids["ours1"], acct.ids["ours2"]])
    rows = by_label(acct, doc)
    for n in range(1, 4):
        assert rows[f"theirs{n}"]["decision"] == "skip"
        assert "only with --family other-pipeline" in rows[f"theirs{n}"]["reason"]
    remaining = {i["ImageId"] for i in acct.ec2.describe_images(Owners=["self"])["Images"]}
    assert {acct.ids[f"theirs{n}"] for n in range(1, 4)} <= remaining
    named = bake("--json", "retention", "--target", "aws", "--family", "other-pipeline", "--keep", "1")
    assert named.returncode == 0, named.stderr[-3000:]
    planned = {r["image"] for r in json.loads(named.stdout)["images"] if r["decision"] == "delete"}
    assert planned == {acct.ids["theirs1"], acct.ids["theirs2"]}


def test_public_and_shared_amis_are_kept(moto: CountingMotoServer, bake: Bake) -> None:
    """A public AMI and one with a launch permission for another account are kept (reason shared), with
    their snapshots, dry run and --apply alike."""
    acct = Account(boto3.client("ec2"))
    for n in range(1, 5):
        acct.ami(f"v{n}", "own-shared", f"1.{n}", day=n, extra={"bakery:family": "own-shared"})
    acct.ec2.modify_image_attribute(ImageId=acct.ids["v1"], LaunchPermission={"Add": [{"Group": "all"}]})
    acct.ec2.modify_image_attribute(ImageId=acct.ids["v2"], LaunchPermission={"Add": [{"UserId": "111122223333"}]})
    applied = bake("--json", "retention", "--target", "aws", "--family", "own-shared", "--keep", "1", "--apply")
    assert applied.returncode == 0, applied.stderr[-3000:]
    doc = json.loads(applied.stdout)
    rows = by_label(acct, doc)
    assert rows["v1"]["decision"] == "keep" and rows["v1"]["reason"].startswith("shared")
    assert rows["v2"]["decision"] == "keep" and "shared: launch permission for 111122223333" in rows["v2"]["reason"]
    assert doc["deleted_images"] == [acct.ids["v3"]]
    snaps = {s["SnapshotId"] for s in acct.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert acct.snapshots["v1"] in snaps and acct.snapshots["v2"] in snaps


def test_an_ami_launched_after_the_plan_is_skipped(moto: CountingMotoServer) -> None:
    """The plan says delete; between the plan and the deletions, one AMI is launched from, one promoted, one
    shared with another account, one made public and one deregistered by someone else: each is skipped with
    that reason (the AMI and its snapshot stay), the gone one counts as gone, and the rest go. All of them
    in one batched re-read (one DescribeImages and one DescribeInstances for the batch)."""
    from tasks import retention
    from tasks.targets.aws.images import AwsImages

    acct = Account(boto3.client("ec2"))
    for n in range(1, 9):
        acct.ami(f"v{n}", "own-late", f"1.{n}", day=n, extra={"bakery:family": "own-late"})
    store = AwsImages(acct.ec2, boto3.client("autoscaling"))
    images, usage = store.inventory()
    plan = retention.plan_retention(images, usage, keep=1, families=["own-late"])
    assert {d.image.ref for d in plan.deletions} == {acct.ids[f"v{n}"] for n in range(1, 8)}
    acct.ec2.run_instances(ImageId=acct.ids["v1"], MinCount=1, MaxCount=1)
    acct.ec2.create_tags(Resources=[acct.ids["v2"]], Tags=[{"Key": "status", "Value": "production"}])
    acct.ec2.modify_image_attribute(ImageId=acct.ids["v3"], LaunchPermission={"Add": [{"UserId": "111122223333"}]})
    acct.ec2.modify_image_attribute(ImageId=acct.ids["v4"], LaunchPermission={"Add": [{"Group": "all"}]})
    acct.ec2.deregister_image(ImageId=acct.ids["v5"])
    moto.counter.reset()
    outcome = retention.execute(plan, store)
    result = {label: outcome.images[acct.ids[label]] for label in ("v1", "v2", "v3", "v4", "v5", "v6", "v7")}
    assert result["v1"].startswith("kept: in use since the plan: instance i-")
    assert result["v2"] == "kept: stage changed since the plan: now production"
    assert result["v3"] == "kept: shared: launch permission for 111122223333"
    assert result["v4"] == "kept: shared: public"
    assert result["v5"] == "already gone"
    assert result["v6"] == result["v7"] == "deleted"
    assert moto.counter.calls["DescribeImages"] == 1
    assert moto.counter.calls["DescribeInstances"] == 1
    assert moto.counter.calls["DescribeImageAttribute"] == 5  # not public, not gone: v1 v2 v3 v6 v7
    remaining = {i["ImageId"] for i in acct.ec2.describe_images(Owners=["self"])["Images"]}
    assert {acct.ids[f"v{n}"] for n in range(1, 5)} <= remaining
    assert not {acct.ids["v6"], acct.ids["v7"]} & remaining
    snaps = {s["SnapshotId"] for s in acct.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert {acct.snapshots[f"v{n}"] for n in range(1, 5)} <= snaps
    assert not {acct.snapshots["v6"], acct.snapshots["v7"]} & snaps


def test_api_calls_grow_by_at_most_three_per_deleted_image(moto: CountingMotoServer, bake: Bake) -> None:
    """``bake retention --apply`` over many AMIs: one DeregisterImage, one DeleteSnapshot and one
    DescribeImageAttribute (launch permissions, which has no batch form) per deleted image; the re-read
    before the deletions is otherwise batched, and made once (not in the plan and again before deleting).
    The dry run reads launch permissions once per image it would delete."""
    total, keep = 64, 4
    acct = Account(boto3.client("ec2"))
    for n in range(total):
        acct.ami(f"v{n}", "many", f"1.{n}", day=n, extra={"bakery:family": "many"})
    doomed = total - keep

    moto.counter.reset()
    dry = bake("--json", "retention", "--target", "aws", "--family", "many", "--keep", str(keep))
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert len([r for r in json.loads(dry.stdout)["images"] if r["decision"] == "delete"]) == doomed
    calls = dict(moto.counter.calls)
    assert calls.get("DescribeImageAttribute") == doomed, calls
    assert moto.counter.total <= doomed + 12, calls

    moto.counter.reset()
    applied = bake("--json", "retention", "--target", "aws", "--family", "many", "--keep", str(keep), "--apply")
    assert applied.returncode == 0, applied.stderr[-3000:]
    assert len(json.loads(applied.stdout)["deleted_images"]) == doomed
    calls = dict(moto.counter.calls)
    assert calls["DeregisterImage"] == calls["DeleteSnapshot"] == calls["DescribeImageAttribute"] == doomed, calls
    assert calls["DescribeImages"] <= 3 and calls["DescribeInstances"] <= 3, calls  # inventory + 2 batches of 50
    assert moto.counter.total <= 3 * doomed + 12, calls

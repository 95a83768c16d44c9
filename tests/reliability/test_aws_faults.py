"""A fault at each stage of `bake run --target aws` / `bake test --target aws` on a moto server.

One table, one row per stage: packer fails mid-build, the launch fails (refused, or no capacity on every
attempt), the status wait times out, a check fails, the SSH connection drops mid-check, a teardown step
fails once. After every row, counted from the EC2 API itself (not bakery's bookkeeping): no live
instance, no key pair, no security group but the default; no per-run key directory; bake's last line
shows the original error; the exit code is the contract's; the AMI is ``failed`` where the test stage
failed (``staging`` where a retried teardown let the run pass).

Faults go in at seams (``tests/aws_seam.py``: botocore event handlers on the clients bakery makes, the
sshd container standing in for the instance, a broken copy of the test template), never through product
code.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from docker.models.containers import Container

from tasks.request import keys_root
from tests.aws_seam import (
    FAILING_SPEC,
    FIXTURE,
    PASSING_SPEC,
    bakery_test_instances,
    client_error,
    ec2,  # noqa: F401  (fixture)
    join_seam,
    on_ec2,
    own_images,
    sshd_container,  # noqa: F401  (fixture)
    stages_of,
    tags_of,
    version,
)
from tests.e2e.conftest import REPO
from tests.reliability.conftest import AwsLeaks, Baked

pytestmark = pytest.mark.e2e
TARGET = "aws"

DROP_SPEC = """
command:
  drop the connection:
    exec: "pkill -KILL -f 'sshd: ubuntu' ; sleep 5"
    exit-status: 0
    timeout: 20000
"""

LIVE = ["pending", "running", "shutting-down", "stopping", "stopped"]


@dataclass
class Stage:
    """What a row's fault can reach: the test's monkeypatch and EC2 client, a place for files, counters."""

    monkeypatch: pytest.MonkeyPatch
    ec2: Any
    tmp_path: Path
    request: pytest.FixtureRequest
    calls: Counter[str] = field(default_factory=Counter)  # what the fault handlers saw
    answered: Counter[str] = field(default_factory=Counter)  # what EC2 (moto) answered
    notes: dict[str, Any] = field(default_factory=dict)
    template_dir: str = str(REPO / FIXTURE)
    joined: list[str] | None = None

    def record(self) -> None:
        """Count every EC2 call bakery's clients make that got an answer, by operation (``answered``)."""

        def answered(**kwargs: Any) -> None:
            self.answered[kwargs["model"].name] += 1

        on_ec2(self.monkeypatch, "after-call.ec2", answered)

    def seam(self) -> list[str]:
        """Join the moto instance to a local sshd container (started only for rows that need it)."""
        container: Container = self.request.getfixturevalue("sshd_container")
        self.joined = join_seam(self.monkeypatch, container, self.ec2)
        return self.joined

    def run_resources(self) -> tuple[int, int]:
        """Key pairs and non-default security groups there are right now."""
        pairs = len(self.ec2.describe_key_pairs()["KeyPairs"])
        groups = [g for g in self.ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"]
        return pairs, len(groups)

    def live_test_instances(self) -> list[str]:
        return [i["InstanceId"] for i in bakery_test_instances(self.ec2) if i["State"]["Name"] in LIVE]


@dataclass(frozen=True)
class Fault:
    id: str
    description: str  # the scenario in one line (the report's)
    command: str  # "run" (build included) or "test" (of an AMI `bake build` made first)
    inject: Callable[[Stage], None]
    says: tuple[str, ...]  # each of these is in bake's last line
    exit_code: int = 1
    stage: str | None = "failed"  # the AMI's status afterwards; None: there is no AMI
    spec: str = PASSING_SPEC
    env: dict[str, str] = field(default_factory=dict)
    check: Callable[[Stage, Baked], None] | None = None  # what else the row proves

    def __str__(self) -> str:
        return self.id


def request_body(handler_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request's parameters as EC2's query protocol sends them (``GroupId``, ``InstanceId.1``, ...)."""
    return dict(handler_kwargs["params"]["body"])


# --- the faults ------------------------------------------------------------------------------------------


def broken_template(stage: Stage) -> None:
    """The test template with a provisioner that fails once Packer's builder instance is running."""
    copy = stage.tmp_path / "packer-aws"
    shutil.copytree(REPO / FIXTURE, copy)
    build = copy / "build.pkr.hcl"
    build.write_text(
        build.read_text().replace(
            'sources = ["source.amazon-ebs.base"]\n',
            'sources = ["source.amazon-ebs.base"]\n\n'
            '  provisioner "shell-local" {\n'
            '    inline = ["echo injected-fault >&2", "exit 7"]\n'
            "  }\n",
            1,
        )
    )
    stage.template_dir = str(copy)


def packer_builder_gone(stage: Stage, baked: Baked) -> None:
    builders = stage.ec2.describe_instances(Filters=[{"Name": "tag:bakery:purpose", "Values": ["packer-builder"]}])
    states = [i["State"]["Name"] for r in builders["Reservations"] for i in r["Instances"]]
    assert states == ["terminated"], "packer's builder ran, then was terminated by packer's own cleanup"
    assert bakery_test_instances(stage.ec2) == []


def refuse_run_instances(code: str, message: str) -> Callable[[Stage], None]:
    """RunInstances fails after the run's key pair and security group exist (recorded at each call)."""

    def inject(stage: Stage) -> None:
        def refuse(**kwargs: Any) -> None:
            stage.calls["RunInstances"] += 1
            stage.notes.setdefault("resources at RunInstances", []).append(stage.run_resources())
            raise client_error(code, message, "RunInstances")

        on_ec2(stage.monkeypatch, "before-call.ec2.RunInstances", refuse)

    return inject


def refused_once(stage: Stage, baked: Baked) -> None:
    assert stage.calls["RunInstances"] == 1, "a final error is not retried"
    assert stage.notes["resources at RunInstances"] == [(1, 1)]
    assert bakery_test_instances(stage.ec2) == []


def each_attempt_rolled_back(stage: Stage, baked: Baked) -> None:
    assert stage.calls["RunInstances"] == 3, "a capacity error is retried (launch task: 2 retries)"
    # Each attempt found exactly its own key pair and group: the previous attempt had removed its own.
    assert stage.notes["resources at RunInstances"] == [(1, 1)] * 3
    assert bakery_test_instances(stage.ec2) == []


def status_never_ok(stage: Stage) -> None:
    """DescribeInstanceStatus answers "initializing" forever; the waiter gives up after 2 s."""

    def initializing(**kwargs: Any) -> Any:
        stage.calls["DescribeInstanceStatus"] += 1
        body = request_body(kwargs)
        ids = [v for k, v in body.items() if k.startswith("InstanceId.")]
        body = {"InstanceStatuses": [{"InstanceId": i, "InstanceStatus": {"Status": "initializing"}} for i in ids]}
        return AWSResponse("http://127.0.0.1", 200, {}, None), body

    on_ec2(stage.monkeypatch, "before-call.ec2.DescribeInstanceStatus", initializing)


def launched_once_and_terminated(stage: Stage, baked: Baked) -> None:
    (instance,) = bakery_test_instances(stage.ec2)  # a time-out is final: not launched again
    assert instance["State"]["Name"] == "terminated"
    assert stage.calls["DescribeInstanceStatus"] >= 2


def through_the_seam(stage: Stage) -> None:
    stage.seam()


def checked_and_terminated(stage: Stage, baked: Baked) -> None:
    (instance,) = bakery_test_instances(stage.ec2)
    assert stage.joined == [instance["InstanceId"]]
    assert instance["State"]["Name"] == "terminated"


def dropped_quickly(stage: Stage, baked: Baked) -> None:
    checked_and_terminated(stage, baked)
    assert baked.seconds < 120, "a dropped connection fails the run; it does not hang"


def group_in_use_once(stage: Stage) -> None:
    """DeleteSecurityGroup: DependencyViolation once (the terminated instance's interface lingers)."""
    stage.seam()

    def busy_once(**kwargs: Any) -> None:
        stage.calls["DeleteSecurityGroup"] += 1
        if stage.calls["DeleteSecurityGroup"] == 1:
            group = request_body(kwargs)["GroupId"]
            raise client_error("DependencyViolation", f"resource {group} has a dependent object", "DeleteSecurityGroup")

    on_ec2(stage.monkeypatch, "before-call.ec2.DeleteSecurityGroup", busy_once)


def group_deleted_on_retry(stage: Stage, baked: Baked) -> None:
    checked_and_terminated(stage, baked)
    assert stage.calls["DeleteSecurityGroup"] == 2
    assert stage.answered["TerminateInstances"] == 1, "retried inside the teardown, not by a second teardown"


def terminate_fails_once(stage: Stage) -> None:
    """TerminateInstances fails once (an error botocore's retries did not get past); and, as EC2 does and
    moto does not, DeleteSecurityGroup is refused while an instance of the run is still alive."""
    stage.seam()

    def fail_once(**kwargs: Any) -> None:
        stage.calls["TerminateInstances"] += 1
        if stage.calls["TerminateInstances"] == 1:
            raise client_error("InternalError", "An internal error has occurred", "TerminateInstances")

    def in_use_while_alive(**kwargs: Any) -> None:
        stage.calls["DeleteSecurityGroup"] += 1
        if stage.live_test_instances():
            stage.calls["DependencyViolation"] += 1
            group = request_body(kwargs)["GroupId"]
            raise client_error("DependencyViolation", f"resource {group} has a dependent object", "DeleteSecurityGroup")

    on_ec2(stage.monkeypatch, "before-call.ec2.TerminateInstances", fail_once)
    on_ec2(stage.monkeypatch, "before-call.ec2.DeleteSecurityGroup", in_use_while_alive)


def teardown_retried_promptly(stage: Stage, baked: Baked) -> None:
    checked_and_terminated(stage, baked)
    assert stage.calls["TerminateInstances"] == 2, "the teardown task retried the whole teardown"
    # While the instance was alive its group was not tried over and over (each refusal costs time).
    assert stage.calls["DependencyViolation"] == 0
    assert baked.seconds < 60


FAULTS = [
    Fault(
        "build-provisioner-fails",
        "packer fails mid-build (a provisioner exits 7 once the builder runs): packer's cleanup, exit 1, no AMI",
        "run",
        broken_template,
        says=("packer build failed", "injected-fault", "exit status: 7"),
        stage=None,
        check=packer_builder_gone,
    ),
    Fault(
        "launch-refused",
        "RunInstances refused (Unsupported) after the key pair and group exist: both removed, not retried",
        "test",
        refuse_run_instances("Unsupported", "The requested configuration is currently not supported."),
        says=("Unsupported: The requested configuration is currently not supported.",),
        check=refused_once,
    ),
    Fault(
        "launch-no-capacity",
        "RunInstances: InsufficientInstanceCapacity on every attempt: 3 attempts, each rolled back, exit 1",
        "run",
        refuse_run_instances("InsufficientInstanceCapacity", "There is no capacity for t3.micro."),
        says=("InsufficientInstanceCapacity",),
        check=each_attempt_rolled_back,
    ),
    Fault(
        "status-wait-times-out",
        "the status checks never pass: the wait gives up after its limit, the instance is terminated",
        "test",
        status_never_ok,
        says=("did not become status ok within 2 s",),
        env={"BAKERY_AWS_WAITER_TIMEOUT": "2"},
        check=launched_once_and_terminated,
    ),
    Fault(
        "verify-fails",
        "a check fails on the instance: exit 1 naming it, the instance terminated, the AMI failed",
        "run",
        through_the_seam,
        says=("no-such-package installed",),
        spec=FAILING_SPEC,
        check=checked_and_terminated,
    ),
    Fault(
        "ssh-drops-mid-check",
        "a check kills its own SSH session: the run fails instead of hanging, the instance terminated",
        "run",
        through_the_seam,
        says=("drop the connection",),
        spec=DROP_SPEC,
        check=dropped_quickly,
    ),
    Fault(
        "teardown-group-in-use-once",
        "DeleteSecurityGroup: DependencyViolation once: retried, the run passes, the AMI staging",
        "run",
        group_in_use_once,
        says=("stage=staging",),
        exit_code=0,
        stage="staging",
        check=group_deleted_on_retry,
    ),
    Fault(
        "teardown-terminate-fails-once",
        "TerminateInstances fails once: the teardown task retries at once, the run passes, the AMI staging",
        "run",
        terminate_fails_once,
        says=("stage=staging",),
        exit_code=0,
        stage="staging",
        env={"BAKERY_AWS_WAITER_TIMEOUT": "120"},
        check=teardown_retried_promptly,
    ),
]


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_fault_at_a_stage(
    fault: Fault,
    aws_bake: Callable[..., Baked],
    aws_leaks: AwsLeaks,
    ec2: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """A fault at one stage of an AWS run: the original error shown, the contract's exit code, nothing left."""
    for name, value in fault.env.items():
        monkeypatch.setenv(name, value)
    spec = tmp_path / "spec.yaml"
    spec.write_text(fault.spec)
    stage = Stage(monkeypatch, ec2, tmp_path, request)
    stage.record()
    v = version()
    if fault.command == "test":
        built = aws_bake("build", "--target", "aws", "--template-dir", stage.template_dir, "--version", v)
        assert built.code == 0, built.err[-3000:]
        (ami,) = own_images(ec2)
        fault.inject(stage)
        argv: tuple[str, ...] = ("test", "--target", "aws", "--image", ami)
    else:
        fault.inject(stage)
        argv = ("run", "--target", "aws", "--template-dir", stage.template_dir, "--version", v)
    baked = aws_bake(*argv, "--spec", spec, "--ssh-timeout", "60s")

    assert baked.code == fault.exit_code, baked.err[-4000:]
    for text in fault.says:
        assert text in baked.last_line, baked.err[-4000:]
    aws_leaks.assert_none()
    runs = {tags_of(i)["bakery:run-id"] for i in bakery_test_instances(ec2)}
    assert not any((keys_root() / run).exists() for run in runs)
    images = own_images(ec2)
    if fault.stage is None:
        assert images == []
    else:
        (ami,) = images
        assert set(stages_of(ec2, ami)) == {fault.stage}, "the AMI and each of its snapshots"
    if fault.check:
        fault.check(stage, baked)
    print(f"{fault.id}: exit {baked.code} in {baked.seconds:.1f} s: {baked.last_line}")

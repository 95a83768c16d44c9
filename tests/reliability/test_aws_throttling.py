"""EC2 throttling: RequestLimitExceeded on 30% of the requests bakery's EC2 clients send.

The fault goes in at the seam ``tests/aws_seam.py`` (``on_ec2``: a ``before-send.ec2`` handler on every
client ``tasks.aws.client`` makes). It answers instead of moto with an EC2 throttling error as it comes
over the wire, inside botocore's retry loop, so botocore parses it and its retry handler decides, as it
would for a real one (HTTP 400, so it is retried for its error code alone, not for a 5xx status). The
decision is a seeded RNG per (operation, n-th request of it): the same requests are throttled on every
run, whatever the interleaving of the waiters' polls.

Packer's own EC2 calls (the build) are made by Packer, not through bakery's clients, and are not
throttled here.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import ClientError
from docker.models.containers import Container

from tasks.targets.aws import client as aws
from tests.aws_seam import (
    FIXTURE,
    PASSING_SPEC,
    bakery_test_instances,
    ec2,  # noqa: F401  (fixture)
    error_response,
    join_seam,
    on_ec2,
    own_images,
    sshd_container,  # noqa: F401  (fixture)
    stages_of,
    version,
)
from tests.e2e.conftest import REPO
from tests.reliability.conftest import AwsLeaks, Baked

pytestmark = pytest.mark.e2e
TARGET = "aws"

SHARE = 0.3
# A seed under which, among the rest, the first request of RunInstances, of TerminateInstances and of
# DescribeInstanceStatus (polled by the instance_status_ok waiter alone) is throttled.
SEED = 33


class Throttle:
    """A ``before-send`` handler: RequestLimitExceeded for a seeded 30% of requests, else sent to moto."""

    def __init__(self, share: float = SHARE, seed: int = SEED) -> None:
        self.share, self.seed = share, seed
        self.lock = threading.Lock()
        self.sends: Counter[str] = Counter()  # requests per operation, retries included
        self.throttled: Counter[str] = Counter()
        self.passed: Counter[str] = Counter()
        self.passed_on_retry: Counter[str] = Counter()  # sent by botocore's retry (attempt >= 2), and through
        self.retries_absorbed = 0  # the sum of (attempt - 1) of requests that went through

    def __call__(self, request: AWSPreparedRequest, event_name: str, **kwargs: Any) -> AWSResponse | None:
        operation = event_name.rsplit(".", 1)[-1]
        attempt = int(((request.context or {}).get("retries") or {}).get("attempt", 1))
        with self.lock:
            n = self.sends[operation]
            self.sends[operation] += 1
            if random.Random(f"{self.seed}/{operation}/{n}").random() < self.share:
                self.throttled[operation] += 1
                return error_response("RequestLimitExceeded", "Request limit exceeded.", status=400)
            self.passed[operation] += 1
            if attempt > 1:
                self.passed_on_retry[operation] += 1
                self.retries_absorbed += attempt - 1
        return None

    def summary(self) -> str:
        total = sum(self.sends.values())
        return (
            f"{sum(self.throttled.values())} of {total} EC2 requests throttled "
            f"({', '.join(f'{op} {n}' for op, n in sorted(self.throttled.items()))}); "
            f"{sum(self.passed_on_retry.values())} requests went through on a botocore retry"
        )


@pytest.fixture
def throttle(monkeypatch: pytest.MonkeyPatch) -> Throttle:
    handler = Throttle()
    on_ec2(monkeypatch, "before-send.ec2", handler)
    return handler


def test_throttled_run_passes_on_botocore_adaptive_retries(
    throttle: Throttle,
    aws_bake: Callable[..., Baked],
    aws_leaks: AwsLeaks,
    ec2: Any,  # noqa: F811
    sshd_container: Container,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """RequestLimitExceeded on 30% of bakery's EC2 requests: `bake run --target aws` still passes on
    botocore's adaptive retries (waiters included), and leaves nothing behind."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(PASSING_SPEC)
    joined = join_seam(monkeypatch, sshd_container, ec2)
    baked = aws_bake(
        "--json",
        "run",
        "--target",
        "aws",
        "--template-dir",
        REPO / FIXTURE,
        "--version",
        version(),
        "--spec",
        spec,
        "--ssh-timeout",
        "60s",
    )
    print(f"throttled run: exit {baked.code} in {baked.seconds:.1f} s; {throttle.summary()}")
    assert baked.code == 0, baked.err[-4000:]
    result = json.loads(baked.out)
    assert result["stage"] == "staging"
    (ami,) = own_images(ec2)
    assert set(stages_of(ec2, ami)) == {"staging"}
    aws_leaks.assert_none()

    # The throttling was real and everywhere: the launch, a waiter's poll, the teardown.
    for operation in ("RunInstances", "DescribeInstanceStatus", "TerminateInstances"):
        assert throttle.throttled[operation] >= 1, operation
    # Every throttled request went through on botocore's retry of the same request, not on a retry of
    # bakery's own (Prefect task retries, the launch's second attempt, a second teardown):
    assert throttle.retries_absorbed == sum(throttle.throttled.values())
    (instance,) = bakery_test_instances(ec2)
    assert joined == [instance["InstanceId"]]
    assert throttle.passed["RunInstances"] == 1, "launched once"
    assert throttle.passed["TerminateInstances"] == 1, "torn down once"
    assert instance["State"]["Name"] == "terminated"


def test_without_retries_the_same_throttling_fails_calls(
    throttle: Throttle, aws_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control: the same throttling with botocore's retries off (BAKERY_AWS_MAX_ATTEMPTS=1) fails calls,
    so it is the retry mode that carries the run above."""
    results: dict[str, list[str]] = {}
    for attempts in ("1", "10"):
        monkeypatch.setenv("BAKERY_AWS_MAX_ATTEMPTS", attempts)
        client = aws.client("ec2", region=aws.region())
        outcomes = []
        for _ in range(8):
            try:
                client.describe_key_pairs()
                outcomes.append("ok")
            except ClientError as exc:
                outcomes.append(str(exc.response["Error"]["Code"]))
        results[attempts] = outcomes
    assert "RequestLimitExceeded" in results["1"]
    assert set(results["1"]) == {"ok", "RequestLimitExceeded"}
    assert results["10"] == ["ok"] * 8
    assert throttle.throttled["DescribeKeyPairs"] >= results["1"].count("RequestLimitExceeded") + 1

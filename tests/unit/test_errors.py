"""bakery's errors keep what they carry through pickling: Prefect pickles a flow's exception for its caller."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

from tasks.errors import BakeryError, JobFailed, UsageError
from tasks.retention import RetentionFailed
from tasks.targets.aws.instances import AwsFailed
from tasks.targets.aws.stages import ProblemAfterPromotion
from tasks.targets.base import PromotionRecord


def roundtrip(exc: BakeryError) -> BakeryError:
    copy: BakeryError = pickle.loads(pickle.dumps(exc))
    assert type(copy) is type(exc) and str(copy) == str(exc) and copy.exit_code == exc.exit_code
    return copy


def test_the_partial_result_survives() -> None:
    assert roundtrip(RetentionFailed("2 deletions failed", {"deleted_images": ["ami-1"]})).result == {
        "deleted_images": ["ami-1"]
    }
    assert roundtrip(JobFailed("rebuild: 1 of 2 failed", {"families": []})).result == {"families": []}
    assert roundtrip(UsageError("--keep 0: expected at least 1")).result is None


def test_retryable_aws_failures_stay_retryable() -> None:
    assert roundtrip(AwsFailed("throttled", retryable=True)).retryable is True  # type: ignore[attr-defined]
    assert roundtrip(AwsFailed("no such subnet")).retryable is False  # type: ignore[attr-defined]


def test_a_problem_after_promotion_carries_its_record_as_the_result() -> None:
    record = PromotionRecord(
        action="promote",
        target="aws",
        family="app-base",
        image="ami-1",
        name="app-base-1.0",
        to="production",
        at=datetime(2026, 11, 27, tzinfo=UTC),
        run_id="r1",
    )
    copy = roundtrip(ProblemAfterPromotion("two production images", record))
    assert copy.record == record  # type: ignore[attr-defined]
    assert copy.result == record.to_dict() and copy.result["image"] == "ami-1"

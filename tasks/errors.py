"""The two ways a bakery request ends badly, mapped to the exit codes of the contract."""

from __future__ import annotations


class BakeryError(Exception):
    """The job ran and failed (exit 1): a check failed, a build failed, soak not met."""

    exit_code = 1


class UsageError(BakeryError):
    """The request was wrong (exit 2): bad option, value, template or spec. Nothing was launched."""

    exit_code = 2


class JobFailed(BakeryError):
    """The job ran and did not succeed (exit 1)."""

    exit_code = 1

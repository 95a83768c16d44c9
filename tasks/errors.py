"""The two ways a bakery request ends badly, mapped to the exit codes of the contract."""

from __future__ import annotations

from typing import Any


class BakeryError(Exception):
    """The job ran and failed (exit 1): a check failed, a build failed, soak not met.

    ``result`` is what the job did before it failed (a retention report, a rebuild summary, a promotion
    record): ``bake --json`` still prints it as the one document on stdout.
    """

    exit_code = 1

    def __init__(self, message: str = "", result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        # Prefect pickles a flow's exception; keep the result through that.
        return (type(self), (str(self), self.result))


class UsageError(BakeryError):
    """The request was wrong (exit 2): bad option, value, template or spec. Nothing was launched."""

    exit_code = 2


class JobFailed(BakeryError):
    """The job ran and did not succeed (exit 1)."""

    exit_code = 1

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
        # Prefect pickles a flow's exception: rebuild it without calling a subclass's own __init__, and keep
        # everything it carries (the result, an AWS failure's retryable, a promotion record).
        return (_rebuilt, (type(self), str(self), self.__dict__))


def _rebuilt(cls: type[BakeryError], message: str, state: dict[str, Any]) -> BakeryError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class UsageError(BakeryError):
    """The request was wrong (exit 2): bad option, value, template or spec. Nothing was launched."""

    exit_code = 2


class JobFailed(BakeryError):
    """The job ran and did not succeed (exit 1)."""

    exit_code = 1

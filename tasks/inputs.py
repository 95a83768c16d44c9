"""Checks on values that reach a shell, a tag or a name: each failure is one clear UsageError."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Literal, cast, get_args

from tasks.errors import UsageError

TargetName = Literal["docker", "aws"]
TARGETS: tuple[TargetName, ...] = get_args(TargetName)
# A version ends up in image names, Docker tags and AWS tags: letters, digits, dot, dash, underscore.
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")
# A family is a Docker repository name and the prefix of an AMI Name tag.
FAMILY_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
DURATION_RE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def check_target(value: str) -> TargetName:
    if value not in TARGETS:
        raise UsageError(f"--target {value!r}: unknown target (expected one of {', '.join(TARGETS)})")
    return cast(TargetName, value)


def check_version(value: str) -> str:
    if not VERSION_RE.match(value):
        raise UsageError(
            f"--version {value!r}: not a valid image version (expected 1-64 characters of "
            "letters, digits, '.', '_' or '-', starting with a letter or digit)"
        )
    return value


def check_family(value: str) -> str:
    if len(value) > 64 or not FAMILY_RE.match(value):
        raise UsageError(
            f"--family {value!r}: not a valid image family (expected lowercase letters and digits, "
            "separated by single '.', '_' or '-', at most 64 characters)"
        )
    return value


def parse_duration(value: str, option: str) -> timedelta:
    """Reads ``90s``, ``15m``, ``2h``, ``7d``."""
    match = DURATION_RE.match(value.strip())
    if not match:
        raise UsageError(f"{option} {value!r}: not a duration (expected a number and s, m, h or d: 90s, 15m, 2h, 7d)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_var(text: str) -> tuple[str, str]:
    """Reads a ``--var K=V``; ``image_version`` is not allowed here because it comes from ``--version``."""
    name, sep, value = text.partition("=")
    if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_-]*$", name):
        raise UsageError(f"--var {text!r}: expected NAME=VALUE with NAME a Packer variable name")
    if name in ("image_version", "manifest_path"):
        option = "--version" if name == "image_version" else "the run's work directory"
        raise UsageError(f"--var {name}: set by bakery from {option}, not as a --var")
    return name, value


# Variable names that hold secrets: their values go to packer through the environment, never as Prefect
# flow parameters (which the API stores and the UI shows), and are masked in packer's output.
SECRET_NAME = re.compile(r"pass|secret|token|credential|private|key", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def move_secret_vars_to_env(variables: dict[str, str], environ: MutableMapping[str, str]) -> dict[str, str]:
    """Put secret-named variables into ``environ`` as ``PKR_VAR_<name>``; return the others."""
    for name, value in variables.items():
        if is_secret_name(name):
            environ[f"PKR_VAR_{name}"] = value
    return {name: value for name, value in variables.items() if not is_secret_name(name)}


def default_version(now: datetime | None = None) -> str:
    """A UTC timestamp version such as ``20261126.153501``: sortable, and valid everywhere."""
    return (now or datetime.now(UTC)).strftime("%Y%m%d.%H%M%S")

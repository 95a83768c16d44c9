"""Checks on values that reach a shell, a tag or a name: each failure is one clear UsageError."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from typing import Literal, cast, get_args

from tasks.errors import UsageError

# The names of tasks/targets/registry.py's PLATFORMS, spelled out: pydantic and the Prefect UI form need a
# Literal, and the table cannot be imported here (it builds on this module). tests/unit/test_targets_table.py
# holds the two equal.
TargetName = Literal["docker", "aws"]
TARGETS: tuple[TargetName, ...] = get_args(TargetName)
DEFAULT_TARGET: TargetName = "docker"
TARGET_HELP = f"{' or '.join(TARGETS)} (default: {DEFAULT_TARGET})"  # --target's help, wherever it is an option
# The one definition of a valid family and version. packer/variables.pkr.hcl's ``image_name`` and
# ``image_version`` validation blocks carry the very same patterns (tests/unit/test_inputs.py holds them
# equal), so a value bakery accepts is one the template accepts. Matched with ``fullmatch``: ``$`` alone
# would let a trailing newline through.
# A version ends up in image names, Docker tags and AWS tags: letters, digits, dot, dash, underscore.
VERSION_PATTERN = "^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$"
# A family is a Docker repository name, a GCE image family and the prefix of an AMI Name tag.
FAMILY_PATTERN = "^[a-z][a-z0-9-]{0,39}$"
VERSION_RE = re.compile(VERSION_PATTERN)
FAMILY_RE = re.compile(FAMILY_PATTERN)
DURATION_RE = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# Longest duration accepted anywhere (--ttl, --max-age, --min-soak, ...): ten years. Larger values would
# overflow a datetime when added to now.
MAX_DURATION = timedelta(days=3650)


def check_target(value: str) -> TargetName:
    if value not in TARGETS:
        raise UsageError(f"--target {value!r}: unknown target (expected one of {', '.join(TARGETS)})")
    return cast(TargetName, value)


# What a bad value is told, after the option or field and the value (``--family 'X': <this>``).
VERSION_PROBLEM = (
    "not a valid image version (expected 1-64 characters of letters, digits, '.', '_' or '-', "
    "starting with a letter or digit)"
)
FAMILY_PROBLEM = (
    f"not a valid image family (expected {FAMILY_PATTERN}: lowercase letters, digits and '-', "
    "starting with a letter, at most 40 characters)"
)
DURATION_PROBLEM = "not a duration (expected a number and s, m, h or d: 90s, 15m, 2h, 7d)"
DURATION_PATTERN = r"^\s*[0-9]+[smhd]\s*$"


def check_version(value: str) -> str:
    if not isinstance(value, str) or not VERSION_RE.fullmatch(value):
        raise UsageError(f"--version {value!r}: {VERSION_PROBLEM}")
    return value


def check_family(value: str) -> str:
    if not isinstance(value, str) or not FAMILY_RE.fullmatch(value):
        raise UsageError(f"--family {value!r}: {FAMILY_PROBLEM}")
    return value


def duration_problem(value: object) -> str | None:
    """What is wrong with a duration (``90s``, ``15m``, ``2h``, ``7d``), or None."""
    match = DURATION_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        return DURATION_PROBLEM
    count = int(match.group(1))
    if count > MAX_DURATION.total_seconds() or timedelta(**{_UNITS[match.group(2)]: count}) > MAX_DURATION:
        return f"too long (at most {MAX_DURATION.days}d)"
    return None


def parse_duration(value: str, option: str) -> timedelta:
    """Reads ``90s``, ``15m``, ``2h``, ``7d``."""
    problem = duration_problem(value)
    if problem:
        raise UsageError(f"{option} {value!r}: {problem}")
    match = DURATION_RE.fullmatch(value.strip())
    assert match is not None
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_var(text: str) -> tuple[str, str]:
    """Reads a ``--var K=V``; ``image_version`` is not allowed here because it comes from ``--version``."""
    name, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
        raise UsageError(f"--var {text!r}: expected NAME=VALUE with NAME a Packer variable name")
    if name in ("image_version", "manifest_path"):
        option = "--version" if name == "image_version" else "the run's work directory"
        raise UsageError(f"--var {name}: set by bakery from {option}, not as a --var")
    return name, value


# Variable names that hold secrets. Their values reach packer only through its own process environment
# (``PKR_VAR_<name>``, tasks/packer.py ``subprocess_environment``), never as ``-var`` (ps shows a command
# line) nor as Prefect flow parameters (the API stores them, the UI shows them), and they are masked in
# everything packer prints. ``key`` alone, not ``key_id``/``key_name``/``keypair``: those name a key.
SECRET_NAME = re.compile(r"pass|secret|token|credential|private|key(?!_?(?:id|name|pair))", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def read_text_file(path: str | os.PathLike[str], what: str) -> str:
    """A user's file as UTF-8 text; unreadable or not UTF-8 is one UsageError naming the file and ``what``
    it was meant to be (``--families deployments/families.yaml``...)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"{what}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None


def default_version(now: datetime | None = None) -> str:
    """A UTC timestamp version such as ``20261126.153501``: sortable, and valid everywhere."""
    return (now or datetime.now(UTC)).strftime("%Y%m%d.%H%M%S")

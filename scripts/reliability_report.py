#!/usr/bin/env python3
"""Render docs/reliability.md: every scenario of the reliability suite with its result and duration.

    scripts/reliability_report.py                      run `pytest tests/reliability` (needs dockerd; minutes)
    scripts/reliability_report.py --junit FILE         render from an existing JUnit XML file of that suite
    scripts/reliability_report.py -- -k aws            extra arguments after `--` go to pytest

The suite's conftest gives each test case two JUnit properties: ``scenario`` (one line: the test's
docstring, or its parametrized case) and ``target`` (docker / aws). Exit status: 0 when every scenario
passed or was skipped, 1 when any failed, pytest's own status when it could not run the suite.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = "tests/reliability"
DEFAULT_OUTPUT = REPO / "docs" / "reliability.md"


@dataclass(frozen=True)
class Scenario:
    module: str  # tests/reliability/test_x.py
    test_id: str  # tests/reliability/test_x.py::test_y[case]
    description: str
    target: str
    result: str  # pass, fail, error, skip
    seconds: float
    message: str = ""


def run_suite(junit: Path, pytest_args: list[str]) -> int:
    command = [sys.executable, "-m", "pytest", SUITE, f"--junitxml={junit}", "-p", "no:cacheprovider", *pytest_args]
    print("+ " + " ".join(command), file=sys.stderr)
    return subprocess.run(command, cwd=REPO, check=False).returncode


def _module_path(classname: str) -> str:
    """``tests.reliability.test_x`` (pytest's JUnit classname; a class name may follow) → a file path."""
    parts = classname.split(".")
    for end in range(len(parts), 0, -1):
        candidate = "/".join(parts[:end]) + ".py"
        if (REPO / candidate).is_file():
            return candidate
    return "/".join(parts) + ".py"


def _result(case: ET.Element) -> tuple[str, str]:
    for tag, result in (("failure", "fail"), ("error", "error"), ("skipped", "skip")):
        found = case.find(tag)
        if found is not None:
            text = found.get("message") or (found.text or "").strip()
            return result, text
    return "pass", ""


def read_junit(path: Path) -> tuple[list[Scenario], dict[str, str]]:
    """The suite's scenarios in a JUnit file, and the run's ``timestamp``."""
    root = ET.parse(path).getroot()  # noqa: S314  (pytest's own output, not untrusted input)
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    scenarios = []
    run: dict[str, str] = {}
    for suite in suites:
        run.setdefault("timestamp", suite.get("timestamp", ""))
        for case in suite.iter("testcase"):
            if not _module_path(case.get("classname", "")).startswith(f"{SUITE}/"):
                continue  # a JUnit file of a wider run: only this suite's scenarios
            properties = {p.get("name", ""): p.get("value") or "" for p in case.iter("property")}
            module = _module_path(case.get("classname", ""))
            result, message = _result(case)
            scenarios.append(
                Scenario(
                    module=module,
                    test_id=f"{module}::{case.get('name', '')}",
                    description=properties.get("scenario") or case.get("name") or "",
                    target=properties.get("target", "?"),
                    result=result,
                    seconds=float(case.get("time", 0) or 0),
                    message=message,
                )
            )
    return scenarios, run


def module_summary(module: str) -> str:
    """The first paragraph of a test module's docstring, read without importing it."""
    try:
        doc = ast.get_docstring(ast.parse((REPO / module).read_text())) or ""
    except (OSError, SyntaxError):
        return ""
    return " ".join(doc.split("\n\n")[0].split())


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


MARK = {"pass": "pass", "fail": "**FAIL**", "error": "**ERROR**", "skip": "skip"}


def render(scenarios: list[Scenario], run: dict[str, str]) -> str:
    """The whole page: an introduction, the run's totals, one table per test module, what did not pass."""
    counts = {r: sum(s.result == r for s in scenarios) for r in ("pass", "fail", "error", "skip")}
    when = run.get("timestamp", "")
    with contextlib.suppress(ValueError):
        when = datetime.fromisoformat(when).strftime("%Y-%m-%d %H:%M %Z").strip()
    targets = sorted({t.strip() for s in scenarios for t in s.target.split(",")})
    lines = [
        "# Reliability",
        "",
        "What bakery does when things go wrong: a fault at every stage of a run (build, launch, the wait for",
        "the instance, verify, a dropped SSH connection, teardown), crashes (SIGTERM, SIGKILL then `bake sweep`),",
        "throttling of the EC2 API, bad input, and secrets. After every scenario the test counts what is left",
        "from Docker and from the EC2 API themselves (never from bakery's own records): containers, instances,",
        "key pairs, security groups, per-run private key directories. AWS runs against a moto server on",
        "127.0.0.1, with a local sshd container standing in for the instance at the test seam",
        "(`tests/aws_seam.py`); faults go in at seams, never through switches in product code.",
        "",
        "This page is generated; do not edit it by hand. To regenerate (the suite takes a few minutes and",
        "needs dockerd and the local base image):",
        "",
        "    .venv/bin/python scripts/reliability_report.py                 # runs pytest tests/reliability",
        "    .venv/bin/python scripts/reliability_report.py --junit FILE    # from an existing JUnit XML file",
        "",
        f"**Run of {when or 'unknown date'}:** {len(scenarios)} scenarios ({', '.join(targets)}): "
        f"{counts['pass']} passed, {counts['fail'] + counts['error']} failed, {counts['skip']} skipped; "
        f"{_seconds(sum(s.seconds for s in scenarios))} in all.",
        "",
        "A duration includes the scenario's set-up and tear-down: the first scenario to need a shared fixture",
        "(the Prefect server, the moto server, a built image) pays for it.",
        "",
    ]
    number = 0
    for module in dict.fromkeys(s.module for s in scenarios):
        rows = [s for s in scenarios if s.module == module]
        lines += [f"## `{module}`", ""]
        summary = module_summary(module)
        if summary:
            lines += [summary, ""]
        lines += ["| # | Scenario | Target | Result | Duration | Test id |", "|---:|---|---|---|---:|---|"]
        for s in rows:
            number += 1
            name = s.test_id.split("::", 1)[1]
            lines.append(
                f"| {number} | {_cell(s.description)} | {_cell(s.target)} | {MARK[s.result]} "
                f"| {s.seconds:.1f} s | `{_cell(name)}` |"
            )
        lines.append("")
    problems = [s for s in scenarios if s.result != "pass"]
    if problems:
        lines += ["## Not passed", ""]
        for s in problems:
            first = (s.message.strip().splitlines() or [""])[0][:300]
            lines.append(f"- `{s.test_id}` ({s.result}): {_cell(first)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


HAND_WRITTEN = "<!-- hand-written from here on; scripts/reliability_report.py keeps it -->"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in args:
        at = args.index("--")
        args, pytest_args = args[:at], args[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--junit", type=Path, help="render from this JUnit XML file instead of running the suite")
    parser.add_argument("--keep-junit", type=Path, help="when running the suite, keep its JUnit XML here")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown file (default: %(default)s)")
    options = parser.parse_args(args)

    status = 0
    if options.junit:
        junit = options.junit
    else:
        junit = options.keep_junit or Path(tempfile.mkstemp(prefix="reliability-", suffix=".xml")[1])
        started = time.monotonic()
        status = run_suite(junit, pytest_args)
        print(f"pytest exited {status} after {time.monotonic() - started:.0f} s", file=sys.stderr)
        if status not in (0, 1):  # 1: some tests failed (still a report); else pytest could not run them
            return status
    scenarios, run = read_junit(junit)
    if not options.junit and not options.keep_junit:
        os.unlink(junit)
    kept = ""  # the hand-written part after HAND_WRITTEN (scenarios per issue item) survives regeneration
    if options.output.exists() and HAND_WRITTEN in options.output.read_text():
        kept = "\n" + options.output.read_text()[options.output.read_text().index(HAND_WRITTEN) :]
    options.output.write_text(render(scenarios, run) + kept)
    failed = sum(s.result in ("fail", "error") for s in scenarios)
    print(f"{options.output}: {len(scenarios)} scenarios, {failed} failed", file=sys.stderr)
    return 1 if failed else status


if __name__ == "__main__":
    sys.exit(main())

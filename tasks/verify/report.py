"""A VerifyResult as text for people (stderr, logs), JUnit XML, JSON and a markdown table (Prefect artifact)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict
from typing import Any

from tasks.verify.model import CheckResult, VerifyResult


def _headline(result: VerifyResult) -> str:
    c = result.counts
    verdict = "PASSED" if result.passed else "FAILED"
    return (
        f"{verdict}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped of {c['total']} checks "
        f"on {result.host or 'the host'} ({result.spec}, {result.duration:.2f} s)"
    )


def _titled(check: CheckResult) -> str:
    return f"{check.name} ({check.title})" if check.title else check.name


def check_line(check: CheckResult) -> str:
    line = f"{check.status} {check.resource_type} {_titled(check)}"
    if check.skipped:
        return line
    if check.ok:
        return f"{line}: {check.found}"
    line = f"{line}: expected {check.expected}, found {check.found}"
    return f"{line} ({check.message})" if check.message else line


def summary_lines(result: VerifyResult) -> list[str]:
    """One line per checked attribute, notes, then the verdict."""
    return [*(check_line(c) for c in result.checks), *(f"note: {n}" for n in result.notes), _headline(result)]


def summary(result: VerifyResult) -> str:
    return "\n".join(summary_lines(result)) + "\n"


def _failure_text(check: CheckResult) -> str:
    text = f"expected: {check.expected}\nfound: {check.found}"
    return f"{text}\n{check.message}" if check.message else text


def to_junit(result: VerifyResult, suite: str | None = None) -> str:
    """JUnit XML: one ``<testcase>`` per checked attribute, ``classname`` = resource type,
    ``name`` = ``"<id> <attribute>"``; a failure says expected vs found."""
    c = result.counts
    root = ET.Element("testsuites", tests=str(c["total"]), failures=str(c["failed"]), errors="0")
    root.set("skipped", str(c["skipped"]))
    root.set("time", f"{result.duration:.3f}")
    suite_element = ET.SubElement(
        root,
        "testsuite",
        name=suite or result.spec,
        tests=str(c["total"]),
        failures=str(c["failed"]),
        errors="0",
        skipped=str(c["skipped"]),
        time=f"{result.duration:.3f}",
        hostname=result.host,
    )
    properties = ET.SubElement(suite_element, "properties")
    ET.SubElement(properties, "property", name="spec", value=result.spec)
    ET.SubElement(properties, "property", name="remote_user", value=result.remote_user)
    for note in result.notes:
        ET.SubElement(properties, "property", name="note", value=note)
    for check in result.checks:
        case = ET.SubElement(
            suite_element, "testcase", classname=check.resource_type, name=check.name, time=f"{check.duration:.3f}"
        )
        if check.title or check.meta is not None:  # goss's title and meta, kept for the reader
            case_properties = ET.SubElement(case, "properties")
            if check.title:
                ET.SubElement(case_properties, "property", name="title", value=check.title)
            if check.meta is not None:
                ET.SubElement(case_properties, "property", name="meta", value=json.dumps(check.meta, sort_keys=True))
        if check.skipped:
            ET.SubElement(case, "skipped", message=check.message)
        elif not check.ok:
            failure = ET.SubElement(
                case, "failure", message=f"expected {check.expected}, found {check.found}", type="CheckFailed"
            )
            failure.text = _failure_text(check)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def to_dict(result: VerifyResult) -> dict[str, Any]:
    return {
        "passed": result.passed,
        "spec": result.spec,
        "host": result.host,
        "remote_user": result.remote_user,
        "duration": round(result.duration, 3),
        "counts": result.counts,
        "notes": list(result.notes),
        "checks": [{**asdict(c), "name": c.name, "status": c.status} for c in result.checks],
        "inventory": result.inventory.to_dict() if result.inventory else None,
    }


def to_json(result: VerifyResult) -> str:
    return json.dumps(to_dict(result), indent=2) + "\n"


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "'")


def to_markdown(result: VerifyResult, title: str | None = None) -> str:
    """A table for a Prefect artifact; failures first so they are seen."""
    lines = [f"## {title or 'Verification'}", "", f"**{_headline(result)}**", ""]
    lines += [f"> {_cell(n)}" for n in result.notes]
    lines += ["", "| Result | Type | Check | Expected | Found |", "|---|---|---|---|---|"]
    ordered = sorted(result.checks, key=lambda c: (c.ok or c.skipped, c.skipped))
    for c in ordered:
        found = c.found + (f" — {c.message}" if c.message and not c.ok and not c.skipped else "")
        mark = {"PASS": "✅ pass", "FAIL": "❌ FAIL", "SKIP": "⏭ skip"}[c.status]
        name = f"`{_cell(c.name)}`" + (f" {_cell(c.title)}" if c.title else "")
        if c.meta is not None:
            name += f" <sub>{_cell(json.dumps(c.meta, sort_keys=True))}</sub>"
        lines.append(f"| {mark} | {c.resource_type} | {name} | `{_cell(c.expected)}` | {_cell(found)} |")
    return "\n".join(lines) + "\n"

"""Reports of a VerifyResult: the summary, JUnit XML per the contract, JSON and markdown."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from tasks.verify import VerifyResult, parse_spec, report
from tasks.verify.model import CheckResult, Fact, Unavailable
from tasks.verify.runner import evaluate

SPEC = """
package:
  nginx: {installed: true}
port:
  tcp:80: {listening: true}
user:
  deploy: {exists: true, groups: [sudo, docker]}
service:
  cron: {running: true, skip: true}
"""


def result() -> VerifyResult:
    spec = parse_spec(SPEC, "packer/test/image_spec.yaml")
    package, port, user, _ = spec.resources
    checks = [
        *evaluate(package, {"installed": True}),
        *evaluate(port, {"listening": Fact(False, "listening on tcp6 ::; write tcp6:80")}),
        *evaluate(user, {"exists": True, "groups": ["deploy", "sudo"]}),
        CheckResult("service", "cron", "running", "true", "", False, True, "skip: true"),
    ]
    return VerifyResult(spec.path, "127.0.0.1:2222", tuple(checks), 0.25, "deploy (as root)")


def test_junit_has_one_testcase_per_checked_attribute() -> None:
    root = ET.fromstring(report.to_junit(result(), suite="app-base:1.0.0"))
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("name") == "app-base:1.0.0"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "2", "1")
    cases = [(c.get("classname"), c.get("name")) for c in suite.iter("testcase")]
    assert cases == [
        ("package", "nginx installed"),
        ("port", "tcp:80 listening"),
        ("user", "deploy exists"),
        ("user", "deploy groups"),
        ("service", "cron running"),
    ]
    failures = {c.get("name"): c.find("failure") for c in suite.iter("testcase")}
    port = failures["tcp:80 listening"]
    assert port is not None
    assert port.get("message") == "expected true, found false (listening on tcp6 ::; write tcp6:80)"
    groups = failures["deploy groups"]
    assert groups is not None and groups.text is not None
    assert groups.text.splitlines() == ["expected: [sudo, docker]", "found: [deploy, sudo]", "missing docker"]
    assert failures["nginx installed"] is None
    assert next(c for c in suite.iter("testcase") if c.get("name") == "cron running").find("skipped") is not None


def test_summary_has_a_line_per_attribute_and_a_verdict() -> None:
    lines = report.summary_lines(result())
    assert lines[0] == "PASS package nginx installed: true"
    assert lines[1] == "FAIL port tcp:80 listening: expected true, found false (listening on tcp6 ::; write tcp6:80)"
    assert lines[3] == "FAIL user deploy groups: expected [sudo, docker], found [deploy, sudo] (missing docker)"
    assert lines[4] == "SKIP service cron running"
    assert lines[-1].startswith("FAILED: 2 passed, 2 failed, 1 skipped of 5 checks on 127.0.0.1:2222")


def test_json_round_trips() -> None:
    data = json.loads(report.to_json(result()))
    assert data["passed"] is False
    assert data["counts"] == {"total": 5, "passed": 2, "failed": 2, "skipped": 1}
    assert data["checks"][3]["name"] == "deploy groups"
    assert data["checks"][3]["status"] == "FAIL"


def test_markdown_lists_failures_first_and_escapes_cells() -> None:
    base = result()
    odd = CheckResult("command", "echo a|b", "stdout", "[x]", "'a|b\\n'", False)
    text = report.to_markdown(VerifyResult(base.spec, base.host, (*base.checks, odd), 0.1), title="Verification")
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert all("FAIL" in row for row in rows[:3])
    assert "`echo a\\|b stdout`" in text


def test_unavailable_facts_fail_with_the_reason_as_found() -> None:
    spec = parse_spec("file:\n  /etc/shadow: {contents: [root]}\n", "s.yaml")
    (check,) = evaluate(spec.resources[0], {"contents": Unavailable("unreadable as uid 1000")})
    assert (check.ok, check.found) == (False, "<unreadable as uid 1000>")


def test_an_all_skipped_or_all_passing_result_passes() -> None:
    checks = (CheckResult("process", "sshd", "running", "true", "true", True),)
    assert VerifyResult("s.yaml", "h", checks, 0.1).passed
    assert "PASSED" in report.summary(VerifyResult("s.yaml", "h", checks, 0.1))


def test_goss_title_and_meta_reach_every_report() -> None:
    spec = parse_spec("service:\n  sshd:\n    title: SSH daemon\n    meta: {cis: '5.2'}\n    running: true\n", "s.yaml")
    checks = tuple(evaluate(spec.resources[0], {"running": False}))
    outcome = VerifyResult("s.yaml", "h:22", checks, 0.1, "root")
    case = ET.fromstring(report.to_junit(outcome)).find("testsuite/testcase")
    assert case is not None and case.get("name") == "sshd running"  # the contract's name is kept
    properties = {p.get("name"): p.get("value") for p in case.findall("properties/property")}
    assert properties == {"title": "SSH daemon", "meta": '{"cis": "5.2"}'}
    check = json.loads(report.to_json(outcome))["checks"][0]
    assert (check["title"], check["meta"]) == ("SSH daemon", {"cis": "5.2"})
    assert "`sshd running` SSH daemon" in report.to_markdown(outcome)
    assert "FAIL service sshd running (SSH daemon): expected true" in report.summary(outcome)

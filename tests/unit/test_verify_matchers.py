"""goss matchers: plain values, /regex/, ! negation, lists that must contain all, advanced matchers."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.verify.matchers import build


def ok(kind: str, expected: Any, found: Any) -> bool:
    return build(kind, expected, "x").test(found)


def test_plain_values_compare_by_equality() -> None:
    assert ok("bool", True, True)
    assert not ok("bool", True, False)
    assert ok("int", 1000, 1000)
    assert not ok("int", 1000, 1001)
    assert ok("int", "1000", 1000)
    assert ok("str", "root", "root")
    assert not ok("str", "root", "roots")
    assert ok("str", 1, "1")  # kernel-param value: 1
    assert ok("mode", "0644", "0644")
    assert ok("mode", "644", "0644")
    assert not ok("mode", "0644", "0640")


def test_regex_strings() -> None:
    assert ok("str", "/^ro+t$/", "root")
    assert not ok("str", "/^ro+t$/", "reboot")
    assert ok("int", "/^10/", 1000)
    assert ok("mode", "/^07[0-7]5$/", "0755")


def test_negation() -> None:
    assert ok("str", "!root", "nobody")
    assert not ok("str", "!root", "root")
    assert ok("str", "!/^ro/", "nobody")
    assert not ok("str", "!/^ro/", "root")
    assert ok("int", "!0", 3)
    assert ok("mode", "!0644", "0600")
    assert ok("str", "\\!bang", "!bang")  # escaped: a literal "!"


def test_lists_must_contain_all_elements() -> None:
    assert ok("list", ["sudo", "bakers"], ["deploy", "bakers", "sudo"])
    assert not ok("list", ["sudo", "wheel"], ["deploy", "sudo"])
    assert ok("list", ["/^1\\.9/"], ["1.9.13p3"])
    assert ok("list", ["!wheel"], ["deploy", "sudo"])
    assert not ok("list", ["!sudo"], ["deploy", "sudo"])
    assert ok("list", [], ["anything"])


def test_text_patterns_are_checked_line_by_line() -> None:
    text = "Port 22\nPermitRootLogin no\nPasswordAuthentication no\n"
    assert ok("text", ["PermitRootLogin no", "/^Port 22$/"], text)
    assert not ok("text", ["PermitRootLogin yes"], text)
    assert ok("text", ["!PermitRootLogin yes", "!/^Password.*yes/"], text)
    assert not ok("text", ["!/^Password/"], text)
    assert not ok("text", ["/^PermitRootLogin$/"], text)  # anchors are per line
    assert ok("text", ["\\!literal"], "a !literal bang")


def test_a_text_string_must_equal_the_whole_output() -> None:
    assert ok("text", "root", "root\n")
    assert not ok("text", "root", "root\nother\n")
    assert ok("text", "", "")


def test_advanced_matchers() -> None:
    assert ok("str", {"have-prefix": "ro"}, "root")
    assert ok("str", {"have-suffix": "ot"}, "root")
    assert ok("str", {"contain-substring": "oo"}, "root")
    assert ok("str", {"match-regexp": "^r"}, "root")
    assert ok("str", {"not": "nobody"}, "root")
    assert ok("str", {"gt": 100}, "4194304")  # kernel-param values are strings, compared as numbers
    assert not ok("str", {"lt": 100}, "4194304")
    assert not ok("str", {"gt": 1}, "not a number")
    assert ok("int", {"and": [{"ge": 1000}, {"le": 60000}]}, 1500)
    assert ok("int", {"or": [0, 1500]}, 1500)
    assert ok("list", {"contain-element": {"have-prefix": "1.9"}}, ["1.9.13"])
    assert ok("list", {"consist-of": ["b", {"have-prefix": "a"}]}, ["abc", "b"])
    assert not ok("list", {"consist-of": ["b"]}, ["abc", "b"])
    assert ok("list", {"have-len": 2}, ["a", "b"])
    assert ok("list", {"equal": ["a", "b"]}, ["a", "b"])
    assert not ok("list", {"equal": ["a", "b"]}, ["b", "a"])
    assert ok("text", {"contain-element": {"match-regexp": "^Port"}}, "Port 22\nX\n")


@pytest.mark.parametrize(
    ("kind", "expected", "found", "explanation"),
    [
        ("list", ["sudo", "wheel"], ["sudo"], "missing wheel"),
        ("list", ["!sudo"], ["sudo"], "unexpected sudo (found [sudo])"),
        ("text", ["PermitRootLogin yes"], "x\n", "not found: PermitRootLogin yes"),
        ("text", ["!/^Pass/"], "x\nPassword yes\n", "found /^Pass/ at line 2"),
    ],
)
def test_failures_explain_what_is_missing(kind: str, expected: Any, found: Any, explanation: str) -> None:
    matcher = build(kind, expected, "x")
    assert not matcher.test(found)
    assert matcher.explain(found) == explanation


def test_descriptions_read_like_the_spec() -> None:
    assert build("bool", True, "x").describe() == "true"
    assert build("list", ["a", "!b"], "x").describe() == "[a, !b]"
    assert build("str", "!/^ro/", "x").describe() == "!/^ro/"
    assert build("mode", "644", "x").describe() == "0644"
    assert build("int", {"gt": 3}, "x").describe() == "> 3"

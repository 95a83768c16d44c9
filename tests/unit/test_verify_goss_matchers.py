"""goss's matchers added for issue 13: semver-constraint, have-key(-with-value), gjson, advanced matchers on
booleans, and Go RE2 regular expressions."""

from __future__ import annotations

import re

import pytest

from tasks.verify import regex
from tasks.verify.matchers import SpecError, build, parse_version


def matcher(kind: str, value: object):  # type: ignore[no-untyped-def]
    return build(kind, value, "x")


@pytest.mark.parametrize(
    ("constraint", "found", "ok"),
    [
        (">1.0.0 <2.0.0 !=1.5.0", ["1.0.1", "1.9.9"], True),
        (">1.0.0 <2.0.0 !=1.5.0", ["1.0.1", "1.5.0", "1.9.9"], False),
        (">5.0.0 || < 1.5.0", "1.0.1", True),
        (">5.0.0 || < 1.5.0", "3.0.0", False),
        (">=3.0.2", "3.0.11", True),  # numeric, not string, order
        (">=3.0.2", "3.0.2-rc1", False),  # a prerelease sorts before its release
        ("1.x", "1.7.3", True),
        ("1.x", "2.0.0", False),
        (">=1.22", "1:1.22.1-9", True),  # a Debian epoch is dropped
        (">=1.0.0", "not a version", False),
        (">=1.0.0", [], False),
    ],
)
def test_semver_constraint(constraint: str, found: object, ok: bool) -> None:
    assert matcher("list", {"semver-constraint": constraint}).test(found) is ok


def test_semver_bad_constraint_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="bad semver constraint"):
        matcher("list", {"semver-constraint": ">=banana"})
    with pytest.raises(SpecError, match="bad semver constraint"):  # a dangling operator, not a weaker range
        matcher("list", {"semver-constraint": ">=1.0.0 <"})
    assert parse_version("v2.3")[0][:3] == (2, 3, 0)


def test_have_key_and_with_value_and_gjson() -> None:
    content = '{"foo": "bar", "moo": {"nested": "cow"}, "count": "15", "items": [{"n": 1}, {"n": 2}]}'
    gjson = matcher(
        "any",
        {
            "gjson": {
                "moo.nested": "cow",
                "foo": {"have-prefix": "b"},
                "count": {"le": 25},
                "@this": {"have-key": "foo"},
                "moo": {"and": [{"have-key": "nested"}, {"not": {"have-key": "nested2"}}]},
                "items.#": 2,
                "items.#.n": [1, 2],
                "items.1.n": 2,
            }
        },
    )
    assert gjson.test(content)
    assert not matcher("any", {"gjson": {"moo.nested": "horse"}}).test(content)
    assert not matcher("any", {"gjson": {"absent.path": {"have-len": 0}}}).test(content)
    assert matcher("any", {"have-key-with-value": {"foo": "bar"}}).test({"foo": "bar"})
    assert not matcher("any", {"have-key-with-value": {"foo": "baz"}}).test({"foo": "bar"})
    assert not matcher("any", {"have-key": "x"}).test("not a map")


def test_advanced_matchers_on_booleans() -> None:
    either = matcher("bool", {"or": [True, False]})
    assert either.test(True) and either.test(False)
    assert matcher("bool", {"not": True}).test(False)
    with pytest.raises(SpecError, match="expected true or false"):
        matcher("bool", "yes")


def test_matching_content_uses_goss_generic_forms() -> None:
    assert matcher("any", [1, 2]).test([1, 2, 3])  # a list: contain-elements
    assert not matcher("any", [1, 4]).test([1, 2, 3])
    assert matcher("any", 0).test(0) and matcher("any", "42").test(42)
    assert matcher("any", {"gt": 0}).test(14)
    assert matcher("any", {"consist-of": ["foo", {"have-prefix": "m"}, "bar"]}).test(["foo", "bar", "moo"])


@pytest.mark.parametrize(
    ("pattern", "text", "ok"),
    [
        (r"\Qa.b*c\E", "xa.b*cx", True),  # Go's literal quoting
        (r"\Qa.b*c\E", "aXbbc", False),
        (r"^[[:alpha:]]+[[:digit:]]$", "abc1", True),
        (r"^[[:alpha:]]+$", "abc1", False),
        (r"end\z", "the end", True),
        (r"(?P<year>\d{4})", "in 2026", True),
        (r"(?i)debian", "DEBIAN", True),
    ],
)
def test_go_re2_syntax(pattern: str, text: str, ok: bool) -> None:
    assert (regex.compile(pattern).search(text) is not None) is ok
    assert (re.compile(regex.translate(pattern)).search(text) is not None) is ok  # the fallback agrees


def test_patterns_use_re2_and_bad_ones_name_the_field() -> None:
    assert matcher("text", [r"/^Port\s+[[:digit:]]+$/"]).test("Port 22\n")
    with pytest.raises(SpecError, match=r"bad regex /a\(b/ \(Go RE2 syntax\)"):
        matcher("text", ["/a(b/"])
    with pytest.raises(SpecError, match="bad regex"):
        matcher("str", r"/(?=lookahead)/")  # RE2 has no lookaround; re would accept it silently

"""One definition of a valid family and version: bakery's check and the template's validation agree."""

from __future__ import annotations

import re
from pathlib import Path

import hcl2
import pytest

from tasks import inputs
from tasks.errors import UsageError

REPO = Path(__file__).resolve().parents[2]


def template_pattern(variable: str) -> str:
    """The regex in ``regex_replace(var.<variable>, "<pattern>", "")`` of the variable's validation block."""
    document = hcl2.loads((REPO / "packer" / "variables.pkr.hcl").read_text())
    for block in document["variable"]:
        body = block.get(variable) or block.get(f'"{variable}"')
        if body:
            condition = str(body["validation"][0]["condition"])
            match = re.search(r'regex_replace\(var\.\w+, \\?"(.*?)\\?", \\?"\\?"\)', condition)
            assert match, condition
            return match.group(1).replace("\\\\", "\\")
    raise AssertionError(f"variable {variable} not in packer/variables.pkr.hcl")


def test_family_pattern_is_the_templates() -> None:
    assert template_pattern("image_name") == inputs.FAMILY_PATTERN


def test_version_pattern_is_the_templates() -> None:
    assert template_pattern("image_version") == inputs.VERSION_PATTERN


@pytest.mark.parametrize("family", ["app-base\n", "app_base", "app.base", "1app", "a" * 41, "App", "", "-a"])
def test_family_refused(family: str) -> None:
    with pytest.raises(UsageError, match="--family"):
        inputs.check_family(family)


@pytest.mark.parametrize("family", ["app-base", "a", "a" * 40, "web2"])
def test_family_accepted(family: str) -> None:
    assert inputs.check_family(family) == family


@pytest.mark.parametrize("version", ["1.0\n", "1.0\r\n", " 1.0", "9" * 65, ""])
def test_version_refused(version: str) -> None:
    with pytest.raises(UsageError, match="--version"):
        inputs.check_version(version)


@pytest.mark.parametrize("value", ["99999999999d", "999999999999999999999999s", "3651d", "87601h"])
def test_duration_too_long(value: str) -> None:
    with pytest.raises(UsageError, match=f"--ttl '{value}': too long"):
        inputs.parse_duration(value, "--ttl")


def test_duration_limit_itself() -> None:
    assert inputs.parse_duration("3650d", "--ttl").days == 3650


def test_not_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_bytes(b"a: caf\xe9\n")
    with pytest.raises(UsageError, match=r"f.yaml: not UTF-8 text \(byte 0xe9 at offset 6\)"):
        inputs.read_text_file(path, str(path))

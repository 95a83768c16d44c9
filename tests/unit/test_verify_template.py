"""goss's Go templates: the subset real goss files use, and errors that name what is outside it."""

from __future__ import annotations

import pytest

from tasks.verify.template import TemplateError, render

VARS = {
    "users": ["alice", "bob"],
    "os": "Debian",
    "packages": {"nginx": ["1.22"], "curl": []},
    "port": 8080,
    "enabled": True,
    "empty": "",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ .Vars.os }}", "Debian"),
        ("{{.Vars.port}}", "8080"),
        ("{{ .Env.BAKERY_TEMPLATE_TEST }}", "from-env"),
        ('{{ getEnv "BAKERY_NOT_SET" "fallback" }}', "fallback"),
        ("{{ if .Vars.enabled }}on{{ else }}off{{ end }}", "on"),
        ('{{ if eq .Vars.os "RedHat" }}rh{{ else if eq .Vars.os "Debian" }}deb{{ else }}?{{ end }}', "deb"),
        ('{{ if ne .Vars.os "RedHat" }}not rh{{ end }}', "not rh"),
        ("{{ range .Vars.users }}[{{ . }}]{{ end }}", "[alice][bob]"),
        ("{{ range $i, $u := .Vars.users }}{{ $i }}={{ $u }} {{ end }}", "0=alice 1=bob "),
        ("{{ range $name, $v := .Vars.packages }}{{ $name }}:{{ len $v }} {{ end }}", "curl:0 nginx:1 "),
        ("{{ range .Vars.nothing_here_is_fine }}x{{ else }}none{{ end }}", "<missing>"),
        ("{{ with .Vars.os }}{{ . | toLower }}{{ end }}", "debian"),
        ("{{ .Vars.os | toUpper }} {{ upper .Vars.os }} {{ lower .Vars.os }}", "DEBIAN DEBIAN debian"),
        ('{{ .Vars.empty | default "dflt" }} {{ default "x" .Vars.os }}', "dflt Debian"),
        ('{{ if .Vars.os | regexMatch "^[Dd]eb" }}yes{{ end }}', "yes"),
        ('{{ if contains "bia" .Vars.os }}c{{ end }}{{ if hasPrefix "Deb" .Vars.os }}p{{ end }}', "cp"),
        ("{{ if and .Vars.enabled (gt .Vars.port 1024) }}high{{ end }}", "high"),
        ("{{ if or (eq .Vars.port 80) (eq .Vars.port 8080) }}web{{ end }}", "web"),
        ("{{ if not .Vars.empty }}blank{{ end }}", "blank"),
        ('{{ index .Vars.packages "nginx" 0 }}', "1.22"),
        ('{{ range mkSlice "/etc/passwd" "/etc/group" }}{{ . }};{{ end }}', "/etc/passwd;/etc/group;"),
        ('{{ $x := "v" }}{{ $x }}{{ $x = "w" }}{{ $x }}', "vw"),
        ('{{ printf "%s:%d" .Vars.os .Vars.port }}', "Debian:8080"),
        ('{{ join "," .Vars.users }} {{ .Vars.users | join "+" }}', "alice,bob alice+bob"),
        ('{{ "hello!" | upper | repeat 2 }}', "HELLO!HELLO!"),
        ("a\n  {{- /* a comment */ -}}\n  b", "ab"),
        ("x {{- .Vars.os }}", "xDebian"),
        ('{{ trimPrefix "De" .Vars.os }} {{ replace "e" "E" .Vars.os }} {{ quote .Vars.os }}', 'bian DEbian "Debian"'),
        ("{{ .Vars.users }} {{ .Vars.packages.curl }}", "[alice bob] []"),
    ],
)
def test_renders_like_go(text: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAKERY_TEMPLATE_TEST", "from-env")
    if expected == "<missing>":  # goss renders with missingkey=error: a missing variable stops it
        with pytest.raises(TemplateError, match="nothing_here_is_fine: no such variable"):
            render(text, VARS)
        return
    assert render(text, VARS) == expected


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("a\n{{ .Vars.missing }}", "template: .Vars.missing: no such variable", 2),
        ("{{ .Env.BAKERY_SURELY_UNSET_VAR }}", "environment variable BAKERY_SURELY_UNSET_VAR is not set", 1),
        ("x\ny\n{{ sha256sum .Vars.os }}", "function 'sha256sum' is not supported", 3),
        ('{{ define "x" }}{{ end }}', "{{define}} is not supported", 1),
        ("{{ if .Vars.os }}\nno end", "missing {{end}} for the block opened on line 1", 1),
        ("{{ end }}", "unexpected {{end}}", 1),
        ("{{ .Vars.os ", "unclosed action", 1),
        ('{{ if eq .Vars.port "8080" }}{{ end }}', "incompatible types for comparison", 1),
        ("{{ .Vars.os.name }}", "can't evaluate field name in a string", 1),
        ("{{ $nope }}", "undefined variable $nope", 1),
    ],
)
def test_errors_name_the_problem_and_line(text: str, message: str, line: int) -> None:
    with pytest.raises(TemplateError) as caught:
        render(text, VARS)
    assert message in caught.value.message
    assert caught.value.line == line


def test_a_goss_file_with_a_vars_file_shape() -> None:
    text = (
        "package:\n"
        '{{- range $name, $vers := index .Vars .Vars.os "packages" }}\n'
        "  {{ $name }}:\n"
        "    installed: true\n"
        "{{- end }}\n"
    )
    variables = {"os": "debian", "debian": {"packages": {"nginx": ["1.22"], "curl": []}}}
    assert render(text, variables) == "package:\n  curl:\n    installed: true\n  nginx:\n    installed: true\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", "2"),
        ("{{ $x := 0 }}{{ range (list 1 2 3) }}{{ $x = . }}{{ end }}{{ $x }}", "3"),
        ("{{ $x := 0 }}{{ with 7 }}{{ $x = . }}{{ end }}{{ $x }}", "7"),
        ("{{ $x := 0 }}{{ if true }}{{ $x := 5 }}{{ $x }}{{ end }}{{ $x }}", "50"),  # := shadows
    ],
)
def test_assignment_in_a_block_changes_the_outer_variable_as_in_go(text: str, expected: str) -> None:
    assert render(text, {}) == expected

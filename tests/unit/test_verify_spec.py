"""Spec loading and strict validation: every problem is a UsageError naming the file and the field."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from tasks.errors import UsageError
from tasks.verify import load_spec, parse_spec
from tasks.verify.matchers import AllOf, Equal, Mode, Regex

SPEC = "packer/test/image_spec.yaml"


def error(text: str) -> str:
    """The message with its line number taken out (the line is checked on its own below)."""
    return re.sub(rf"^{re.escape(SPEC)}:\d+: ", f"{SPEC}: ", error_with_line(text))


def error_with_line(text: str) -> str:
    with pytest.raises(UsageError) as caught:
        parse_spec(textwrap.dedent(text), SPEC)
    assert caught.value.exit_code == 2
    return str(caught.value)


def test_the_seed_checks_parse() -> None:
    spec = parse_spec(
        textwrap.dedent(
            """
            package:
              nginx: {installed: true}
            service:
              nginx: {enabled: true, running: true}
            port:
              tcp:80: {listening: true}
            file:
              /etc/ssh/sshd_config:
                contents: ["/^PermitRootLogin no/", "/^PasswordAuthentication no/"]
            command:
              openssl version:
                exit-status: 0
                stdout: ["/OpenSSL 3/"]
            user:
              deploy:
                exists: true
                groups: [sudo]
            """
        ),
        SPEC,
    )
    assert [(r.type, r.id) for r in spec.resources] == [
        ("package", "nginx"),
        ("service", "nginx"),
        ("port", "tcp:80"),
        ("file", "/etc/ssh/sshd_config"),
        ("command", "openssl version"),
        ("user", "deploy"),
    ]
    assert spec.check_count == 9


def test_unknown_attribute_names_file_path_and_choices() -> None:
    message = error("service:\n  nginx:\n    enabeld: true\n")
    assert message.startswith(
        f"{SPEC}: service.nginx.enabeld: unknown attribute "
        "(expected one of enabled, running, runlevels, skip, title, meta)"
    )
    assert "did you mean enabled?" in message


def test_unknown_and_unsupported_resource_types() -> None:
    assert error("pakage:\n  nginx: {installed: true}\n").startswith(f"{SPEC}: pakage: unknown resource type")
    for kind in ("http", "addr", "mount", "interface", "dns", "matching"):  # goss's, all supported now
        assert "unknown resource type" not in error(f"{kind}:\n  x: {{}}\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("package:\n  nginx: {installed: yes please}\n", "package.nginx.installed: expected true or false"),
        ("package:\n  nginx: {installed: 1}\n", "package.nginx.installed: expected true or false"),
        ("user:\n  deploy: {uid: [1]}\n", "user.deploy.uid: expected an integer"),
        ("user:\n  deploy: {uid: abc}\n", "user.deploy.uid: expected an integer"),
        ("user:\n  deploy: {groups: sudo}\n", "user.deploy.groups: expected a list"),
        ("file:\n  /etc/x.conf: {mode: 0644}\n", 'file."/etc/x.conf".mode: expected a quoted octal string like "0644"'),
        ("file:\n  /etc/x: {mode: '0999'}\n", "file./etc/x.mode: expected an octal mode"),
        ("file:\n  /etc/x: {contents: 3}\n", "file./etc/x.contents: expected a list of patterns or a string"),
        ("file:\n  /etc/x: {contents: [a, [b]]}\n", "file./etc/x.contents[1]: expected a string pattern"),
        ("command:\n  uptime: {exit-status: 0, timeout: -1}\n", "command.uptime.timeout: expected a whole number >= 0"),
        ("service:\n  nginx: true\n", "service.nginx: expected a mapping of attributes"),
        ("service: [nginx]\n", "service: expected a mapping of service names"),
        ("service:\n  nginx: {skip: 1}\n", "service.nginx.skip: expected true or false"),
        ("service:\n  nginx: {runlevels: 3}\n", "service.nginx.runlevels: expected a list"),
        ("service:\n  nginx: {}\n", "service.nginx: nothing to check"),
    ],
)
def test_wrong_types_name_the_field(text: str, expected: str) -> None:
    assert error(text).startswith(f"{SPEC}: {expected}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("file:\n  /etc/x: {contents: ['/a(b/']}\n", "file./etc/x.contents[0]: bad regex /a(b/"),
        ("file:\n  /etc/x: {contents: ['!/[z-a]/']}\n", "file./etc/x.contents[0]: bad regex /[z-a]/"),
        ("user:\n  deploy: {home: '/(/'}\n", "user.deploy.home: bad regex /(/"),
        ("user:\n  deploy: {groups: ['/*/']}\n", "user.deploy.groups[0]: bad regex /*/"),
        ("kernel-param:\n  kernel.ostype: {value: {match-regexp: '('}}\n", 'kernel-param."kernel.ostype".value'),
    ],
)
def test_bad_regex_names_the_field(text: str, expected: str) -> None:
    message = error(text)
    assert message.startswith(f"{SPEC}: {expected}"), message
    assert "bad regex" in message


def test_bad_names_are_refused_before_anything_runs() -> None:
    assert "port.http: bad port name" in error("port:\n  http: {listening: true}\n")
    assert "port.tcp:65536: bad port name" in error("port:\n  tcp:65536: {listening: true}\n")
    assert "a command name must be a non-empty string" in error("command:\n  true: {exit-status: 0}\n")
    assert "file.etc/passwd: bad file name" in error("file:\n  etc/passwd: {exists: true}\n")
    assert "package.-rf: bad package name" in error("package:\n  -rf: {installed: true}\n")
    assert 'user."a b": bad user name' in error("user:\n  a b: {exists: true}\n")


def test_advanced_matchers_unknown_ones_are_refused_with_a_suggestion() -> None:
    message = error("package:\n  nginx: {versions: {semver-constrain: '>1.0'}}\n")
    assert "unknown matcher 'semver-constrain'; did you mean semver-constraint?" in message
    assert "exactly one key" in error("user:\n  deploy: {uid: {gt: 1, lt: 5}}\n")


def test_yaml_syntax_errors_have_a_line() -> None:
    message = error_with_line("service:\n  nginx:\n    enabled: true\n   running: true\n")
    assert message.startswith(f"{SPEC}:4:")
    assert "YAML syntax error" in message


def test_duplicate_keys_are_refused_with_their_line() -> None:
    message = error_with_line(
        "file:\n  /a: {exists: true}\nservice:\n  x: {running: true}\nfile:\n  /b: {exists: true}\n"
    )
    assert message.startswith(f"{SPEC}:5:")
    assert "duplicate key 'file' (also on line 1" in message


def test_empty_and_non_mapping_specs() -> None:
    assert "the spec is empty" in error("")
    assert "expected a mapping of resource types" in error("- package\n")


def test_goss_aliases_and_overrides() -> None:
    spec = parse_spec(
        textwrap.dedent(
            """
            file:
              sshd config:
                path: /etc/ssh/sshd_config
                contains: [Port 22]
                title: old goss name for contents
                meta: {owner: team}
            command:
              version:
                exec: openssl version
                exit-status: 0
                timeout: 5000
            service:
              web: {name: nginx, running: true, skip: true}
            """
        ),
        SPEC,
    )
    file, command, service = spec.resources
    assert (file.target, list(file.checks)) == ("/etc/ssh/sshd_config", ["contents"])
    assert (command.target, command.options["timeout"]) == ("openssl version", 5000)
    assert service.skip and service.target == "nginx"


def test_matchers_are_compiled_by_kind() -> None:
    spec = parse_spec(
        "file:\n  /x: {exists: true, mode: '0644', owner: '/^ro/', contents: [a]}\nuser:\n  u: {groups: [a, b]}\n",
        SPEC,
    )
    checks = spec.resources[0].checks
    assert checks["exists"] == Equal(True)
    assert checks["mode"] == Mode(0o644)
    assert isinstance(checks["owner"], Regex)
    assert isinstance(spec.resources[1].checks["groups"], AllOf)


def test_load_spec_reads_files_and_names_unreadable_ones(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("process:\n  sshd: {running: true}\n")
    assert load_spec(path).resources[0].id == "sshd"
    with pytest.raises(UsageError, match=r"missing\.yaml: cannot read spec: No such file"):
        load_spec(tmp_path / "missing.yaml")


# ---------------------------------------------------------------------------- goss semantics (issue 13)


def test_empty_lists_and_null_are_unset_as_in_goss() -> None:
    spec = parse_spec(
        "file:\n  /etc: {exists: true, filetype: directory, contents: []}\n"
        "command:\n  'true': {exit-status: 0, stdout: [], stderr: []}\n"
        "user:\n  root: {exists: true, groups: [], home: null}\n",
        SPEC,
    )
    assert [list(r.checks) for r in spec.resources] == [["exists", "filetype"], ["exit-status"], ["exists"]]


def test_merge_keys_take_the_defaults_and_the_override_wins() -> None:
    spec = parse_spec(
        textwrap.dedent(
            """
            file:
              /etc/a: &default {exists: true, owner: root, mode: "0644"}
              /etc/b:
                <<: *default
                mode: "0600"
            """
        ),
        SPEC,
    )
    b = spec.resources[1]
    assert b.checks["mode"] == Mode(0o600) and b.checks["owner"] == Equal("root") and b.checks["exists"] == Equal(True)


def test_title_and_meta_are_kept() -> None:
    spec = parse_spec("service:\n  sshd:\n    title: SSH is up\n    meta: {cis: 5.2.1}\n    running: true\n", SPEC)
    assert (spec.resources[0].title, spec.resources[0].meta) == ("SSH is up", {"cis": "5.2.1"})


def test_command_timeout_zero_exec_retry_and_service_runlevels() -> None:
    spec = parse_spec(
        textwrap.dedent(
            """
            command:
              kernel version:
                exec: uname -r
                exit-status: 0
                timeout: 0
                retry_count: 2
                retry_delay: 250ms
            service:
              cron: {runlevels: ["2", "3", "4", "5"]}
            """
        ),
        SPEC,
    )
    command, service = spec.resources
    assert command.target == "uname -r"
    assert command.options == {"exec": "uname -r", "timeout": 0, "retry_count": 2, "retry_delay": 250.0}
    assert list(service.checks) == ["runlevels"]
    assert "retry_delay: expected milliseconds" in error("command:\n  x: {exit-status: 0, retry_delay: soon}\n")


def test_every_problem_is_listed_at_once_with_file_line_and_hint() -> None:
    message = error_with_line(
        textwrap.dedent(
            """\
            service:
              nginx: {enabeld: true}
            pakage:
              curl: {installed: true}
            file:
              /etc/x: {mode: 644, contents: [/^Port: 22/]}
            user:
              deploy: {uid: {gtt: 5}}
            """
        )
    )
    lines = message.split("\n")
    assert lines[0] == "5 problems in the spec:"
    assert f"{SPEC}:2: service.nginx.enabeld: unknown attribute" in lines[1] and "did you mean enabled?" in lines[1]
    assert f"{SPEC}:3: pakage: unknown resource type 'pakage'; did you mean 'package'?" in message
    assert f"{SPEC}:6: file./etc/x.mode: expected a quoted octal string" in message
    assert 'quote the whole pattern, e.g. "/^Port: 22/"' in message
    assert f"{SPEC}:8: user.deploy.uid: unknown matcher 'gtt'; did you mean gt?" in message


def test_a_stray_tag_is_explained_with_what_to_quote() -> None:
    message = error_with_line("command:\n  check:\n    exit-status: 0\n    stdout:\n      - !ok all good\n")
    assert message.startswith(f"{SPEC}:5: YAML read '!ok' as a tag")
    assert 'quote it, e.g. "!ok all good"' in message


def test_a_template_is_rendered_with_vars() -> None:
    spec = parse_spec("package:\n  {{ .Vars.pkg }}: {installed: true}\n", SPEC, {"pkg": "nginx"})
    assert spec.resources[0].id == "nginx"
    message = error_with_line("package:\n\n  {{ .Vars.pkg }}: {installed: true}\n")
    assert message.startswith(f"{SPEC}:3: template: .Vars.pkg: no such variable")
    assert "--var pkg=VALUE" in message


def test_includes_are_relative_globs_with_their_own_vars(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "a.yaml").write_text("package:\n  {{ .Vars.name }}: {installed: true}\n")
    (tmp_path / "parts" / "b.yaml").write_text("service:\n  cron: {running: true}\n")
    (tmp_path / "curl.vars").write_text("name: curl\n")
    (tmp_path / "goss.yaml").write_text(
        "gossfile:\n  parts/*.yaml: {skip: false, vars-inline: {name: nginx}}\n  parts/a.yaml: {vars: curl.vars}\n"
        "  missing/*.yaml: {}\n  parts/skipped.yaml: {skip: true}\n"
        "service:\n  cron: {running: false}\n"
    )
    (tmp_path / "curl.vars").write_text("name: curl\n")
    spec = load_spec(tmp_path)  # a directory means its goss.yaml
    ids = [(r.type, r.id) for r in spec.resources]
    assert ("package", "nginx") in ids and ("package", "curl") in ids
    cron = next(r for r in spec.resources if r.id == "cron")
    assert cron.checks["running"] == Equal(False)  # the including file wins
    assert cron.source.endswith("goss.yaml")


def test_an_include_loop_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("gossfile:\n  b.yaml: {}\nprocess:\n  sshd: {running: true}\n")
    (tmp_path / "b.yaml").write_text("gossfile:\n  a.yaml: {}\n")
    with pytest.raises(UsageError, match="an include loop"):
        load_spec(tmp_path / "a.yaml")


def test_the_goss_resource_types_a_host_can_be_asked_about() -> None:
    spec = parse_spec(
        textwrap.dedent(
            """
            mount:
              /: {exists: true, opts: [rw], filesystem: overlay, usage: {lt: 95}}
            interface:
              lo: {exists: true, addrs: [127.0.0.1/8], mtu: 65536}
            http:
              http://127.0.0.1:8080/health:
                status: 200
                body: [ok]
                headers: ["Content-Type: text/plain"]
                timeout: 0
                no-follow-redirects: true
                allow-insecure: true
                request-headers: ["X-Probe: 1"]
                method: POST
                request-body: '{"a": 1}'
            addr:
              tcp://127.0.0.1:22: {reachable: true, timeout: 500}
            dns:
              localhost: {resolvable: true, addrs: {contain-element: 127.0.0.1}}
              A:example.org: {resolvable: true, server: 127.0.0.1:53}
            matching:
              counts:
                content: {instances: 14}
                matches: {have-key-with-value: {instances: {gt: 0}}}
            """
        ),
        SPEC,
    )
    assert [r.type for r in spec.resources] == ["mount", "interface", "http", "addr", "dns", "dns", "matching"]
    http = spec.resources[2]
    assert http.options["request-headers"] == ["X-Probe: 1"] and http.options["no-follow-redirects"] is True
    assert "needs server" in error("dns:\n  MX:example.org: {resolvable: true}\n")
    assert "unsupported attribute" in error("http:\n  https://x/: {status: 200, proxy: 'http://p:3128'}\n")
    assert "bad http name" in error("http:\n  ftp://x/: {status: 200}\n")
    assert "bad addr name" in error("addr:\n  example.org:22: {reachable: true}\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("file:\n  /etc/hosts:\n    size: !!int abc\n", "YAML value error"),
        ("file:\n  ? !!set {a: null}\n  : {exists: true}\n", "YAML value error"),
        ('package:\n  {{ "\\xZZ" }}: {installed: true}\n', "template:"),
        ("package:\n  {{ 'ab' }}: {installed: true}\n", "template:"),
        ('package:\n  {{ values "x" }}: {installed: true}\n', "template:"),
        ('package:\n  {{ printf "%c" -1 }}: {installed: true}\n', "template:"),
    ],
)
def test_malformed_values_and_templates_are_spec_problems_not_tracebacks(text: str, expected: str) -> None:
    assert expected in error_with_line(text)


def test_a_vars_file_with_a_bad_tagged_value_is_exit_2(tmp_path: Path) -> None:
    from tasks.verify.spec import read_vars

    bad = tmp_path / "vars.yaml"
    bad.write_text("port: !!int abc\n")
    with pytest.raises(UsageError, match=r"vars\.yaml: vars file: YAML value error"):
        read_vars(bad)


def test_vars_problems_name_the_vars_file_and_the_spec_variable(tmp_path: Path) -> None:
    from tasks.verify.spec import read_vars, spec_variables

    with pytest.raises(UsageError, match=r"nope\.yaml: cannot read vars file"):
        read_vars(tmp_path / "nope.yaml")
    with pytest.raises(UsageError, match=r"spec variable 'oops' \(--spec-var"):
        spec_variables(None, ["oops"])

"""``bake spec check`` and ``bake spec render``: every problem of every file at once, exit 0 or 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main


def test_spec_check_lists_every_problem_of_every_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("package:\n  {{ .Vars.pkg }}: {installed: true}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("service:\n  nginx: {enabeld: true}\nfile:\n  /x: {mode: 644}\nbogus: {}\n")
    assert main(["spec", "check", str(good), str(bad), "--var", "pkg=nginx"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[:3] == [
        f"{bad}:2: service.nginx.enabeld: unknown attribute "
        "(expected one of enabled, running, runlevels, skip, title, meta); did you mean enabled?",
        f'{bad}:4: file./x.mode: expected a quoted octal string like "0644", got the number 644 '
        "(YAML reads an unquoted 0644 as the number 420: quote the mode)",
        f"{bad}:5: bogus: unknown resource type (expected one of package, service, port, file, command, user, "
        "group, process, kernel-param, mount, interface, http, addr, dns, matching, pending-updates, gossfile)",
    ]
    assert err[-1] == "bake spec: 3 problem(s) in 2 spec(s)"
    assert main(["spec", "check", str(good), "--var", "pkg=nginx"]) == 0
    assert main(["spec", "check", str(good)]) == 2
    assert "--var pkg=VALUE" in capsys.readouterr().err
    assert main(["spec", "check", str(tmp_path / "missing.yaml")]) == 2


def test_spec_render_prints_the_one_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "extra.yaml").write_text("process:\n  sshd: {running: true}\n")
    main_spec = tmp_path / "goss.yaml"
    main_spec.write_text(
        "gossfile:\n  extra.yaml: {}\nuser:\n{{ range .Vars.users }}  {{ . }}: {exists: true}\n{{ end }}"
    )
    (tmp_path / "vars.yaml").write_text("users: [alice, bob]\n")
    assert main(["spec", "render", str(main_spec), "--vars", str(tmp_path / "vars.yaml")]) == 0
    assert capsys.readouterr().out == (
        "process:\n  sshd:\n    running: true\nuser:\n  alice:\n    exists: true\n  bob:\n    exists: true\n"
    )


def test_the_pipeline_request_takes_a_spec_directory_and_its_variables(tmp_path: Path) -> None:
    from tasks.errors import UsageError
    from tasks.request import prepare

    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "goss.yaml").write_text("gossfile:\n  parts/*.yaml: {}\n")
    (spec_dir / "parts").mkdir()
    (spec_dir / "parts" / "web.yaml").write_text("package:\n  {{ .Vars.web.pkg }}: {installed: true}\n")
    vars_file = tmp_path / "vars.yaml"
    vars_file.write_text("web: {pkg: apache2}\n")
    request = prepare(spec=spec_dir, spec_vars_file=vars_file, spec_vars=["web.pkg=nginx"], template_dir=tmp_path)
    assert request.spec_variables() == {"web": {"pkg": "nginx"}}  # --spec-var over the file's
    from tasks.verify import load_spec

    assert [r.id for r in load_spec(request.spec, request.spec_variables()).resources] == ["nginx"]
    with pytest.raises(UsageError, match=r"--vars .*: no such readable file"):
        prepare(spec=spec_dir, spec_vars_file=tmp_path / "nope.yaml", template_dir=tmp_path)
    with pytest.raises(UsageError, match="--spec-var 'oops': expected NAME=VALUE"):
        prepare(spec=spec_dir, spec_vars=["oops"], template_dir=tmp_path)
    with pytest.raises(UsageError, match=r"--spec-var api.password: a secret by its name.*\.Env\.PASSWORD"):
        prepare(spec=spec_dir, spec_vars=["api.password=hunter2"], template_dir=tmp_path)


def test_the_spec_hash_covers_includes_from_elsewhere_and_the_variables(tmp_path: Path) -> None:
    from tasks import provenance

    plain = tmp_path / "plain.yaml"
    plain.write_text("process:\n  sshd: {running: true}\n")
    assert provenance.spec_hash(plain) == provenance._digest(provenance.tree_chunks(plain))  # as it always was
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "base.yaml").write_text("service:\n  ssh: {running: true}\n")
    specs = tmp_path / "specs"
    specs.mkdir()
    main_spec = specs / "goss.yaml"
    main_spec.write_text("gossfile:\n  ../shared/*.yaml: {}\npackage:\n  {{ .Vars.pkg }}: {installed: true}\n")
    vars_file = tmp_path / "vars.yaml"
    vars_file.write_text("pkg: nginx\n")
    before = provenance.spec_hash(main_spec, vars_file)
    (shared / "base.yaml").write_text("service:\n  ssh: {running: false}\n")
    after_include = provenance.spec_hash(main_spec, vars_file)
    vars_file.write_text("pkg: apache2\n")
    after_vars = provenance.spec_hash(main_spec, vars_file)
    with_var = provenance.spec_hash(main_spec, vars_file, {"pkg": "curl"})
    assert len({before, after_include, after_vars, with_var}) == 4

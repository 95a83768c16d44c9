"""The fact script and its parsing, run with the local /bin/sh (no SSH): quoting, sections, observations."""

from __future__ import annotations

import hashlib
import os
import subprocess
import textwrap
from pathlib import Path

from tasks.verify import parse_spec
from tasks.verify.facts import Script
from tasks.verify.model import CheckResult
from tasks.verify.resources import TYPES
from tasks.verify.resources.package import installed_versions
from tasks.verify.resources.port import listeners
from tasks.verify.runner import build_script, evaluate


def run_locally(spec_text: str) -> list[CheckResult]:
    spec = parse_spec(textwrap.dedent(spec_text), "local.yaml")
    script = build_script(spec)
    done = subprocess.run(["/bin/sh", "-s"], input=script.text.encode(), capture_output=True, timeout=30, check=False)
    facts = script.parse(done.stdout)
    results: list[CheckResult] = []
    for index, resource in enumerate(spec.resources):
        observe = TYPES[resource.type].observe
        assert observe is not None
        results += evaluate(resource, observe(resource, index, facts))
    return results


def test_sections_keep_exact_bytes_and_exit_status() -> None:
    script = Script()
    script.add("a", "printf 'no newline'")
    script.add("b", "printf 'two\\nlines\\n\\n'; false")
    script.add("c", f"echo '@@bakery-{'0' * 24}@@ fake'")  # a marker without the nonce is just text
    done = subprocess.run(["/bin/sh", "-s"], input=script.text.encode(), capture_output=True, check=True)
    facts = script.parse(done.stdout)
    assert (facts["a"].body, facts["a"].rc) == (b"no newline", 0)
    assert (facts["b"].body, facts["b"].rc) == (b"two\nlines\n\n", 1)
    assert facts["c"].text == f"@@bakery-{'0' * 24}@@ fake\n"
    assert facts.uid == str(os.getuid())
    assert "missing" not in facts and facts["missing"].rc is None


def test_file_facts(tmp_path: Path) -> None:
    target = tmp_path / "app.conf"
    target.write_bytes(b"listen 8080\nPermitRootLogin no\n")
    target.chmod(0o640)
    (tmp_path / "link").symlink_to(target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    results = run_locally(
        f"""
        file:
          {target}:
            exists: true
            mode: "0640"
            size: 31
            filetype: file
            contents: [PermitRootLogin no, "/^listen [0-9]+$/", "!yes"]
            sha256: {digest}
            uid: {os.getuid()}
          {tmp_path}/link: {{filetype: symlink, linked-to: {target}}}
          {tmp_path}: {{filetype: directory}}
          {tmp_path}/missing: {{exists: false, mode: "0644"}}
        """
    )
    assert [(c.name.rsplit(" ", 1)[1], c.ok) for c in results] == [
        ("exists", True),
        ("mode", True),
        ("size", True),
        ("filetype", True),
        ("contents", True),
        ("sha256", True),
        ("uid", True),
        ("filetype", True),
        ("linked-to", True),
        ("filetype", True),
        ("exists", True),
        ("mode", False),
    ]
    assert results[-1].found == "<no such file>"


def test_names_are_quoted_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    results = run_locally(
        f"""
        file:
          "{tmp_path}/x'$(touch {marker})'`touch {marker}`;touch {marker}": {{exists: false}}
        process:
          "x'$(false)'`false`;false": {{running: false}}
        """
    )
    assert not marker.exists()
    assert [(c.found, c.ok) for c in results] == [("false", True), ("false", True)]


def test_user_group_process_and_kernel_facts() -> None:
    results = run_locally(
        """
        user:
          root: {exists: true, uid: 0, gid: 0, home: /root, groups: [root]}
          no-such-user-here: {exists: false}
        group:
          root: {exists: true, gid: 0}
          no-such-group-here: {exists: false}
        process:
          no-such-process-here: {running: false}
        kernel-param:
          kernel.ostype: {value: Linux}
        """
    )
    assert [c.name for c in results if not c.ok] == []


def test_proc_net_tables_are_read() -> None:
    tcp = textwrap.dedent(
        """\
          sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
           0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0
           1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0
           2: 0100007F:1F91 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0
        """
    )
    assert listeners(tcp, "tcp") == {22: ["0.0.0.0"], 8080: ["127.0.0.1"]}
    tcp6 = (
        "header\n   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 0 0 0 0 0 1\n"
        "   1: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 0 0 0 0 0 1\n"
    )
    assert listeners(tcp6, "tcp6") == {22: ["::"], 80: ["::1"]}
    udp = "header\n   0: 00000000:14E9 00000000:0000 07 0 0 0 0 0 1\n   1: 0100007F:0035 0100007F:1234 01 0 0 0 0 0 1\n"
    assert listeners(udp, "udp") == {5353: ["0.0.0.0"]}


def test_package_manager_outputs_are_read() -> None:
    dpkg = ["nginx\tnginx\tinstall ok installed\t1.22.1-9", "libc6:amd64\tlibc6\tinstall ok installed\t2.36-9"]
    assert installed_versions("dpkg", dpkg, "nginx") == ["1.22.1-9"]
    assert installed_versions("dpkg", dpkg, "libc6") == ["2.36-9"]
    assert installed_versions("dpkg", ["x\tx\tdeinstall ok config-files\t1.0"], "x") == []
    rpm = ["openssl\topenssl.x86_64\t1:3.0.7-27.el9", "glibc\tglibc.i686\t2.34-1", "glibc\tglibc.x86_64\t2.34-1"]
    assert installed_versions("rpm", rpm, "openssl") == ["1:3.0.7-27.el9"]
    assert installed_versions("rpm", rpm, "openssl.x86_64") == ["1:3.0.7-27.el9"]
    assert installed_versions("rpm", rpm, "glibc") == ["2.34-1"]
    assert installed_versions("rpm", rpm, "nginx") == []
    apk = ["musl-1.2.4-r2", "musl-utils-1.2.4-r2"]
    assert installed_versions("apk", apk, "musl") == ["1.2.4-r2"]

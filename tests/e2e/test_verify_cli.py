"""``bake verify`` as a user runs it (a subprocess) against the known-state host (tests/support/verify_host.py).

Exit 0 all checks pass, 1 any fails (or the host key does not match: refused before any check),
2 a bad request (spec, key, host key, known_hosts, options), found before anything connects.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tasks import ssh
from tests.e2e.conftest import BAKE, REPO
from tests.support.verify_host import Host, write_spec

pytest_plugins = ("tests.support.verify_host",)
pytestmark = pytest.mark.e2e

PASSING = """
package:
  openssh-server: {installed: true}
  bakery-dummy: {installed: true, versions: ["1.0"]}
user:
  deploy: {exists: true, uid: 1500, groups: [bakers]}
group:
  bakers: {gid: 2500}
file:
  /etc/bakery/app.conf: {mode: "0640", owner: root, contents: ["/^listen 8080$/"]}
port:
  tcp:22: {listening: true}
command:
  echo hello: {exit-status: 0, stdout: [hello]}
"""
PASSING_CASES = {
    ("package", "openssh-server installed"),
    ("package", "bakery-dummy installed"),
    ("package", "bakery-dummy versions"),
    ("user", "deploy exists"),
    ("user", "deploy uid"),
    ("user", "deploy groups"),
    ("group", "bakers gid"),
    ("file", "/etc/bakery/app.conf mode"),
    ("file", "/etc/bakery/app.conf owner"),
    ("file", "/etc/bakery/app.conf contents"),
    ("port", "tcp:22 listening"),
    ("command", "echo hello exit-status"),
    ("command", "echo hello stdout"),
}
FAILING = """
package:
  nginx: {installed: true}
user:
  deploy: {uid: 1500, shell: /bin/zsh}
"""
MARKER = "/tmp/bakery-verify-ran"
TOUCHES = f"command:\n  touch {MARKER}: {{exit-status: 0}}\n"


def bake_verify(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BAKE, "verify", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def target(host: Host, user: str = "deploy") -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(host.port), "--user", user, "--key", str(host.key_path)]


def closed_port() -> int:
    """A port nothing listens on: connecting there would be retried until --ssh-timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nowhere(key: Path) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(closed_port()), "--user", "deploy", "--key", str(key)]


def assert_bad_request(done: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, done.stderr
    assert lines[-1].startswith("bake verify: ")
    for phrase in phrases:
        assert phrase in done.stderr


def marker_exists(host: Host) -> bool:
    code, _ = host.container.exec_run(["test", "-e", MARKER])
    return code == 0


def test_all_checks_pass_exit_0_with_junit_and_json(sshd_host: Host, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, PASSING)
    junit, report = tmp_path / "junit.xml", tmp_path / "result.json"
    done = bake_verify(
        *target(sshd_host), "--host-key", sshd_host.host_key(), "--spec", str(spec),
        "--junit", str(junit), "--json", str(report),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "PASS user deploy uid: 1500" in done.stderr
    assert f"PASSED: 13 passed, 0 failed, 0 skipped of 13 checks on 127.0.0.1:{sshd_host.port}" in done.stderr
    assert done.stdout == ""  # logs and the summary go to stderr

    suite = ET.parse(junit).getroot()
    cases = suite.findall(".//testcase")
    assert {(c.get("classname"), c.get("name")) for c in cases} == PASSING_CASES
    assert len(cases) == len(PASSING_CASES)  # one <testcase> per checked attribute
    assert suite.find(".//failure") is None
    assert (suite.get("tests"), suite.get("failures")) == ("13", "0")

    result = json.loads(report.read_text())
    assert result["passed"] is True
    assert result["counts"] == {"total": 13, "passed": 13, "failed": 0, "skipped": 0}
    assert result["remote_user"] == "deploy (as root)"
    assert {c["name"] for c in result["checks"]} == {name for _, name in PASSING_CASES}
    assert result["inventory"]["manager"] == "dpkg"
    assert result["inventory"]["packages"]["bakery-dummy"] == ["1.0"]


def test_a_failed_check_exits_1_and_is_named_with_expected_and_found(sshd_host: Host, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, FAILING)
    junit, report = tmp_path / "junit.xml", tmp_path / "result.json"
    done = bake_verify(
        *target(sshd_host), "--host-key", sshd_host.host_key(), "--spec", str(spec),
        "--junit", str(junit), "--json", str(report),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "FAIL package nginx installed: expected true, found false" in done.stderr
    assert "FAIL user deploy shell: expected /bin/zsh, found /bin/bash" in done.stderr
    assert "PASS user deploy uid: 1500" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "bake verify: 2 of 3 checks failed on 127.0.0.1"
    assert "Traceback" not in done.stderr

    failures = {
        c.get("name"): c.find("failure")
        for c in ET.parse(junit).getroot().findall(".//testcase")
        if c.find("failure") is not None
    }
    assert set(failures) == {"nginx installed", "deploy shell"}
    assert failures["nginx installed"].get("message") == "expected true, found false"  # type: ignore[union-attr]
    assert "expected: /bin/zsh\nfound: /bin/bash" in (failures["deploy shell"].text or "")  # type: ignore[union-attr]
    result = json.loads(report.read_text())
    assert result["passed"] is False and result["counts"]["failed"] == 2


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ("service:\n  ssh: {enabeld: true}\n", "service.ssh.enabeld", "unknown attribute"),
        ("servce:\n  ssh: {enabled: true}\n", "servce", "unknown resource type"),
        ('file:\n  /etc/passwd: {contents: ["/[unclosed/"]}\n', "file./etc/passwd.contents[0]", "bad regex"),
        ("user:\n  deploy: {uid: lots}\n", "user.deploy.uid", "lots"),
        ("http:\n  https://example.org: {status: 200, proxy: p}\n", "http.", "unsupported attribute"),
        ("package:\n  {{ .Vars.pkg }}: {installed: true}\n", ":2:", "template: .Vars.pkg: no such variable"),
        ("pending-updates:\n  urgent: {count: 0}\n", "pending-updates.urgent", "bad pending-updates name"),
        ("package: [nginx\n", ":2:", "YAML syntax error"),
    ],
)
def test_a_bad_spec_exits_2_naming_file_and_field(
    keypair: tuple[Path, str], tmp_path: Path, text: str, field: str, problem: str
) -> None:
    spec = write_spec(tmp_path, text)
    started = time.monotonic()
    done = bake_verify(*nowhere(keypair[0]), "--host-key", keypair[1], "--spec", str(spec), "--ssh-timeout", "60s")
    assert_bad_request(done, f"{spec}", field, problem)
    assert time.monotonic() - started < 10, "a bad spec must be refused before connecting"


def test_an_unreadable_key_exits_2(keypair: tuple[Path, str], tmp_path: Path) -> None:
    spec = write_spec(tmp_path, PASSING)
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key\n")
    for key in (tmp_path / "missing", garbage, tmp_path):
        args = nowhere(key)
        done = bake_verify(*args, "--host-key", keypair[1], "--spec", str(spec), "--ssh-timeout", "60s")
        assert_bad_request(done, f"{key}: cannot load private key")


@pytest.mark.parametrize(
    ("host_key", "problem"),
    [
        ("ssh-ed25519", "expected 'TYPE BASE64'"),
        ("ssh-ed25519 not!base64", "not a valid public key"),
        ("ssh-ed25519 AAAA", "not a valid public key"),
        ("", "expected 'TYPE BASE64'"),
    ],
)
def test_a_malformed_host_key_exits_2(keypair: tuple[Path, str], tmp_path: Path, host_key: str, problem: str) -> None:
    spec = write_spec(tmp_path, PASSING)
    done = bake_verify(*nowhere(keypair[0]), "--host-key", host_key, "--spec", str(spec), "--ssh-timeout", "60s")
    assert_bad_request(done, "--host-key", problem)


def test_a_host_key_of_another_type_than_its_data_exits_2(keypair: tuple[Path, str], tmp_path: Path) -> None:
    spec = write_spec(tmp_path, PASSING)
    blob = keypair[1].split()[1]
    done = bake_verify(*nowhere(keypair[0]), "--host-key", f"ssh-rsa {blob}", "--spec", str(spec))
    assert_bad_request(done, "--host-key", "not a valid public key")


def test_a_wrong_host_key_is_refused_before_any_check(sshd_host: Host, tmp_path: Path) -> None:
    _, impostor = ssh.generate_keypair(tmp_path)
    spec = write_spec(tmp_path, TOUCHES)
    junit = tmp_path / "junit.xml"
    started = time.monotonic()
    done = bake_verify(*target(sshd_host), "--host-key", impostor, "--spec", str(spec), "--junit", str(junit))
    assert done.returncode == 1, done.stderr
    assert "host key mismatch" in done.stderr
    offered = ssh.fingerprint(ssh.host_key_from_text(sshd_host.host_key()))
    assert f"offered ssh-ed25519 {offered}" in done.stderr
    assert time.monotonic() - started < 10, "a mismatch is not retried"
    assert not marker_exists(sshd_host), "no check may run on a host with the wrong key"
    assert not junit.exists()


def test_known_hosts_file_pins_the_key(sshd_host: Host, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, PASSING)
    entry = f"[127.0.0.1]:{sshd_host.port} {sshd_host.host_key()}\n"
    plain = tmp_path / "known_hosts"
    plain.write_text(f"# comment\nother.example ssh-ed25519 {sshd_host.host_key().split()[1]}\n{entry}")
    done = bake_verify(*target(sshd_host), "--known-hosts", str(plain), "--spec", str(spec))
    assert done.returncode == 0, done.stderr

    hashed = tmp_path / "hashed"
    hashed.write_text(entry)
    subprocess.run(["ssh-keygen", "-H", "-f", str(hashed)], check=True, capture_output=True)
    assert "127.0.0.1" not in hashed.read_text()
    done = bake_verify(*target(sshd_host), "--known-hosts", str(hashed), "--spec", str(spec))
    assert done.returncode == 0, done.stderr


def test_known_hosts_problems(sshd_host: Host, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, TOUCHES)
    other_port = tmp_path / "other_port"
    other_port.write_text(f"[127.0.0.1]:1 {sshd_host.host_key()}\n")  # the entry names another port
    done = bake_verify(*target(sshd_host), "--known-hosts", str(other_port), "--spec", str(spec))
    assert_bad_request(done, f"{other_port}: no host key for [127.0.0.1]:{sshd_host.port}")
    done = bake_verify(*target(sshd_host), "--known-hosts", str(tmp_path / "missing"), "--spec", str(spec))
    assert_bad_request(done, "--known-hosts", "missing: cannot read")

    _, impostor = ssh.generate_keypair(tmp_path)
    wrong = tmp_path / "wrong"
    wrong.write_text(f"[127.0.0.1]:{sshd_host.port} {impostor}\n")
    done = bake_verify(*target(sshd_host), "--known-hosts", str(wrong), "--spec", str(spec))
    assert done.returncode == 1 and "host key mismatch" in done.stderr
    assert not marker_exists(sshd_host)


def test_report_files_and_options_are_checked_before_connecting(sshd_host: Host, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, TOUCHES)
    pin = ["--host-key", sshd_host.host_key(), "--spec", str(spec)]
    cases = [
        (["--junit", str(tmp_path / "no-such-dir" / "junit.xml")], "--junit", "no such directory"),
        (["--json", str(tmp_path)], "--json", "is a directory"),
        (["--ssh-timeout", "soon"], "--ssh-timeout 'soon'", "not a duration"),
        (["--command-timeout=forever"], "--command-timeout 'forever'", "not a duration"),
    ]
    for extra, option, problem in cases:
        assert_bad_request(bake_verify(*target(sshd_host), *pin, *extra), option, problem)
    port_zero = [a if a != str(sshd_host.port) else "0" for a in target(sshd_host)]
    assert_bad_request(bake_verify(*port_zero, *pin), "--port 0: expected 1-65535")
    assert not marker_exists(sshd_host)

    both = bake_verify(*target(sshd_host), *pin, "--known-hosts", str(tmp_path / "kh"))
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    neither = bake_verify(*target(sshd_host), "--spec", str(spec))
    assert neither.returncode == 2 and "one of the arguments --known-hosts --host-key is required" in neither.stderr


def test_bake_verify_starts_without_prefect_boto3_or_docker(sshd_host: Host, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, PASSING)
    args = [*target(sshd_host), "--host-key", sshd_host.host_key(), "--spec", str(spec)]
    probe = (
        "import sys\nfrom flows.cli import main\n"
        f"code = main(['verify', *{args!r}])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'boto3', 'botocore', 'docker'})\n"
        "print(code, heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "0 []", done.stderr

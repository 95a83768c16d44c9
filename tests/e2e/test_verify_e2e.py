"""tasks.verify against a real sshd in a real container built to a known state (tests/support/verify_host.py)."""

from __future__ import annotations

import hashlib
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tasks import ssh
from tasks.errors import JobFailed
from tasks.verify import TYPES, VerifyResult, parse_spec, report, verify, verify_endpoint
from tests.support import wait_for
from tests.support.verify_host import APP_CONF, SECRET, Host, StartHost, fifty_checks, write_spec

pytest_plugins = ("tests.support.verify_host",)  # the known-state host's fixtures
pytestmark = pytest.mark.e2e


def pass_spec(host: Host) -> str:
    ssh_version = host.exec("dpkg-query", "-W", "-f=${Version}", "openssh-server")
    sha = {name: getattr(hashlib, name)(APP_CONF).hexdigest() for name in ("md5", "sha256", "sha512")}
    return f"""
    package:
      openssh-server: {{installed: true, versions: ["{ssh_version}"]}}
      sudo: {{installed: true, versions: ["/^1\\\\.9/", "!0.1"]}}
      nginx: {{installed: false}}
    service:
      ssh: {{enabled: true, running: true}}
      bakery-udp: {{enabled: true, running: true}}
      bakery-idle: {{enabled: false, running: false}}
    port:
      tcp:22: {{listening: true, ip: [0.0.0.0]}}
      tcp6:22: {{listening: true, ip: ["::"]}}
      udp:5353: {{listening: true, ip: [0.0.0.0, "!127.0.0.1"]}}
      tcp:81: {{listening: false}}
    file:
      /etc/bakery/app.conf:
        exists: true
        mode: "0640"
        size: {len(APP_CONF)}
        owner: root
        group: bakers
        uid: 0
        gid: 2500
        filetype: file
        contents: [PermitRootLogin no, "/^listen\\\\s+8080$/", "!PermitRootLogin yes", "!/^Password.*yes/"]
        md5: {sha["md5"]}
        sha256: {sha["sha256"]}
        sha512: {sha["sha512"]}
      /etc/bakery/secret:
        mode: "!0644"
        contents: [top secret]
        sha256: {hashlib.sha256(SECRET).hexdigest()}
      /etc/bakery/link: {{filetype: symlink, linked-to: /etc/bakery/app.conf}}
      /etc/bakery: {{filetype: directory, mode: "/^07[0-7]5$/", owner: "/^ro+t$/"}}
      /nonexistent: {{exists: false}}
    command:
      status-and-output:
        exec: "echo hello; echo oops >&2; exit 3"
        exit-status: 3
        stdout: [hello, "!goodbye"]
        stderr: ["/^oo+ps$/"]
      id -un:
        exit-status: "!1"
        stdout: root
        stderr: ""
    user:
      deploy:
        exists: true
        uid: 1500
        gid: 1500
        groups: [deploy, bakers, sudo]
        home: /home/deploy
        shell: "/bash$/"
      nobody-here: {{exists: false}}
    group:
      bakers: {{exists: true, gid: 2500}}
      nogroup-here: {{exists: false}}
    process:
      sshd: {{running: true}}
      bakery-udp.py: {{running: true}}
      nginx: {{running: false}}
    kernel-param:
      kernel.ostype: {{value: Linux}}
      kernel.pid_max: {{value: {{gt: 100}}}}
    pending-updates:
      security: {{count: 0, packages: ["!bakery-dummy"]}}
      all: {{count: 1, packages: [bakery-dummy]}}
    """


FAIL_SPEC = """
package:
  openssh-server: {installed: false, versions: ["0.0-nope"]}
  nginx: {installed: true}
service:
  bakery-idle: {enabled: true, running: true}
  ssh: {enabled: false, running: false}
port:
  tcp:22: {listening: false, ip: [127.0.0.1]}
  tcp:81: {listening: true}
file:
  /etc/bakery/app.conf:
    exists: false
    mode: "0644"
    size: 1
    owner: nobody
    group: root
    uid: 1
    gid: 0
    filetype: directory
    contents: [PermitRootLogin yes]
    md5: "0000"
    sha256: "/^0000/"
    sha512: "!/^[0-9a-f]+$/"
  /etc/bakery/app.conf2: {exists: true}
  /etc/bakery/secret:
    contents: ["!top secret"]
  /etc/bakery/link: {linked-to: /etc/passwd}
  /etc/bakery/nope: {contents: ["/anything/"]}
command:
  status-and-output:
    exec: "echo hello; echo oops >&2; exit 3"
    exit-status: 0
    stdout: ["/^goodbye/"]
    stderr: ["!oops"]
user:
  deploy:
    exists: false
    uid: 1
    gid: 1
    groups: [wheel]
    home: /root
    shell: /bin/sh
group:
  bakers: {exists: false, gid: 1}
process:
  nginx: {running: true}
  sshd: {running: false}
kernel-param:
  kernel.ostype: {value: "!Linux"}
  kernel.no_such_param: {value: "1"}
pending-updates:
  security: {count: 1, packages: [bakery-dummy]}
"""


def coverage(result: VerifyResult) -> set[tuple[str, str]]:
    return {(c.resource_type, c.attribute) for c in result.checks}


# The attributes added with goss's other resource types (issue 13) are checked, each with a known result, in
# tests/e2e/test_verify_goss_e2e.py; the pass and fail specs here cover every other attribute.
GOSS_E2E = {(t, a) for t in ("mount", "interface", "http", "addr", "dns", "matching") for a in TYPES[t].checks}
ALL_ATTRIBUTES = {(t.name, a) for t in TYPES.values() for a in t.checks} - GOSS_E2E - {("service", "runlevels")}


def test_known_state_passes_every_attribute(systemd_host: Host, tmp_path: Path) -> None:
    systemd_host.apt_lists("updates")  # bakery-dummy 1.1 pending, from a non-security suite
    result = verify_endpoint(systemd_host.endpoint(), write_spec(tmp_path, pass_spec(systemd_host)), ssh_timeout=60)
    failed = "\n".join(report.check_line(c) for c in result.failures)
    assert result.passed, failed + "\n" + "\n".join(result.notes)
    assert coverage(result) == ALL_ATTRIBUTES
    assert result.remote_user == "deploy (as root)"
    junit = ET.fromstring(report.to_junit(result))
    cases = junit.findall(".//testcase")
    assert len(cases) == len(result.checks)
    assert {(c.get("classname"), c.get("name")) for c in cases} >= {
        ("package", "openssh-server installed"),
        ("port", "tcp:22 listening"),
        ("user", "deploy groups"),
    }
    assert junit.find(".//failure") is None


def test_wrong_state_fails_every_attribute(systemd_host: Host, tmp_path: Path) -> None:
    systemd_host.apt_lists("updates")
    result = verify_endpoint(systemd_host.endpoint(), write_spec(tmp_path, FAIL_SPEC), ssh_timeout=60)
    passed = [report.check_line(c) for c in result.checks if c.ok]
    assert passed == []
    assert not result.passed
    assert coverage(result) == ALL_ATTRIBUTES
    by_name = {(c.resource_type, c.name): c for c in result.checks}
    assert by_name[("port", "tcp:22 ip")].found == "[0.0.0.0]"
    assert by_name[("file", "/etc/bakery/app.conf mode")].found == "0640"
    assert "not found: PermitRootLogin yes" in by_name[("file", "/etc/bakery/app.conf contents")].message
    assert by_name[("file", "/etc/bakery/nope contents")].found == "<no such file>"
    assert by_name[("service", "bakery-idle enabled")].found == "false (disabled)"
    failures = ET.fromstring(report.to_junit(result)).findall(".//failure")
    assert len(failures) == len(result.checks)
    assert all("expected" in (f.text or "") and "found" in (f.text or "") for f in failures)


def test_without_sudo_root_only_files_are_unreadable(systemd_host: Host, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "file:\n  /etc/bakery/secret: {exists: true, contents: [top secret]}\n")
    result = verify_endpoint(systemd_host.endpoint(user="plain"), spec, ssh_timeout=60)
    assert [c.ok for c in result.checks] == [True, False]
    assert result.checks[1].found == "<unreadable as uid 1600>"
    assert any("sudo -n is not available" in n for n in result.notes)


def test_wrong_host_key_is_refused_before_any_check(sshd_host: Host, tmp_path: Path) -> None:
    _, impostor = ssh.generate_keypair(tmp_path)
    spec = write_spec(tmp_path, "command:\n  touch /tmp/verify-ran: {exit-status: 0}\n")
    started = time.monotonic()
    with pytest.raises(JobFailed, match="host key mismatch") as caught:
        verify_endpoint(sshd_host.endpoint(host_key=impostor), spec, ssh_timeout=30)
    assert time.monotonic() - started < 5, "a host key mismatch must not be retried"
    real = ssh.fingerprint(ssh.host_key_from_text(sshd_host.host_key()))
    expected = ssh.fingerprint(ssh.host_key_from_text(impostor))
    assert f"expected ssh-ed25519 {expected}" in str(caught.value)
    assert f"offered ssh-ed25519 {real}" in str(caught.value)
    code, _ = sshd_host.container.exec_run(["test", "-e", "/tmp/verify-ran"])
    assert code == 1, "no check may run on a host with the wrong key"


def test_authentication_failure_is_not_retried(sshd_host: Host, tmp_path: Path) -> None:
    other_key, _ = ssh.generate_keypair(tmp_path)
    spec = write_spec(tmp_path, "user:\n  deploy: {exists: true}\n")
    started = time.monotonic()
    with pytest.raises(JobFailed, match="authentication failed"):
        verify_endpoint(sshd_host.endpoint(key_path=other_key), spec, ssh_timeout=30)
    assert time.monotonic() - started < 5


def test_sshd_that_starts_late_is_waited_for(start_host: StartHost, tmp_path: Path) -> None:
    host = start_host(sshd_delay=5)
    spec = write_spec(tmp_path, "user:\n  deploy: {exists: true, uid: 1500}\nport:\n  tcp:22: {listening: true}\n")
    started = time.monotonic()
    result = verify_endpoint(host.endpoint(), spec, ssh_timeout=30)
    assert result.passed, report.summary(result)
    assert time.monotonic() - started > 3


def test_hanging_command_is_bounded_and_killed(sshd_host: Host, tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        command:
          sleep 600: {exit-status: 0, timeout: 1000}
          echo fine: {exit-status: 0, stdout: [fine]}
        """,
    )
    started = time.monotonic()
    result = verify_endpoint(sshd_host.endpoint(), spec, ssh_timeout=30)
    elapsed = time.monotonic() - started
    assert elapsed < 6, f"verify took {elapsed:.1f} s"
    hung, fine, _ = result.checks
    assert not hung.ok
    assert hung.found == "<timed out after 1 s, killed>"
    assert fine.ok
    # the timed-out check is killed on the host, not left running: wait (bounded) for it to be gone
    wait_for(lambda: "sleep 600" not in sshd_host.exec("ps", "-eo", "args"), "the hung check killed", 10)


def test_fifty_checks_take_well_under_a_second(systemd_host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    spec = parse_spec(fifty_checks(), "fifty.yaml")
    assert spec.check_count == 50
    client = ssh.connect(systemd_host.endpoint(), timeout=60)
    try:
        verify(client, spec, sudo=True, command_timeout=30)  # warm-up: sudo and dpkg caches
        timings = []
        for _ in range(5):
            result = verify(client, spec, sudo=True, command_timeout=30)
            assert result.passed, report.summary(result)
            timings.append(result.duration)
    finally:
        client.close()
    with capsys.disabled():
        print(f"\n50-check verify: {', '.join(f'{t * 1000:.0f} ms' for t in timings)} (remote, one connection)")
    assert min(timings) < 1.0


def test_pending_updates_come_from_the_hosts_own_lists(sshd_host: Host, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "pending-updates:\n  security: {count: 0}\n  all: {count: 0, packages: []}\n")

    def check(user: str = "deploy") -> dict[str, str]:
        result = verify_endpoint(sshd_host.endpoint(user=user), spec, ssh_timeout=30)
        return {f"{c.name}": ("PASS " if c.ok else "FAIL ") + c.found for c in result.checks}

    sshd_host.apt_lists("none")  # as a golden image that removed /var/lib/apt/lists
    found = check()
    assert set(found.values()) == {
        "FAIL <no apt package lists on the host (/var/lib/apt/lists has no Packages files: the image removed "
        "them or apt-get update never ran); pending updates cannot be told without the network>"
    }
    assert "_Packages" not in sshd_host.exec("ls", "/var/lib/apt/lists"), "the check must not fetch lists"

    sshd_host.apt_lists("security")
    found = check()
    assert found["security count"].startswith(
        "FAIL 1 (bakery-dummy 1.0 → 1.1 (Debian-Security:bookworm-security); package lists of "
    )
    assert found["all count"].startswith("FAIL 1 (bakery-dummy 1.0 → 1.1")
    assert "all packages" not in found  # packages: [] is unset, as in goss: no check

    sshd_host.apt_lists("updates")
    found = check(user="plain")  # no sudo: apt's simulation works as any user
    assert found["security count"].startswith("PASS 0 (package lists of ")
    assert found["all count"].startswith("FAIL 1 (bakery-dummy 1.0 → 1.1 (Debian:bookworm-updates)")
    assert sshd_host.exec("dpkg-query", "-W", "-f=${Version}", "bakery-dummy") == "1.0", "nothing is installed"


def test_every_verification_keeps_the_package_inventory(sshd_host: Host, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "package:\n  bakery-dummy: {installed: true, versions: ['1.0']}\n")
    result = verify_endpoint(sshd_host.endpoint(), spec, ssh_timeout=30)
    assert result.passed, report.summary(result)
    assert result.inventory is not None and result.inventory.manager == "dpkg"
    listed = sshd_host.exec("dpkg-query", "-W", "-f=${Package}\t${Version}\t${db:Status-Status}\n").splitlines()
    installed = {line.split("\t")[0]: line.split("\t")[1] for line in listed if line.endswith("\tinstalled")}
    assert {name.split(":")[0]: v[-1] for name, v in result.inventory.packages.items()} == installed
    assert report.to_dict(result)["inventory"]["packages"]["bakery-dummy"] == ["1.0"]

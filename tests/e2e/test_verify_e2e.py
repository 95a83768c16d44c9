"""tasks.verify against a real sshd in a real container built to a known state.

One image (FROM the local bakery/debian:bookworm, never pulled) holds users, groups, files, a UDP
service and a disabled unit; containers publish SSH on 127.0.0.1 only and are removed on every path.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from tasks import ssh
from tasks.errors import JobFailed
from tasks.targets.base import SshEndpoint
from tasks.verify import TYPES, VerifyResult, parse_spec, report, verify, verify_endpoint

pytestmark = pytest.mark.e2e

BASE = "bakery/debian:bookworm"
IMAGE = "bakery-test/verify:e2e"
LABELS = {"bakery.test": "1"}
APP_CONF = b"listen 8080\nPermitRootLogin no\nPasswordAuthentication no\n"
SECRET = b"top secret\n"

DOCKERFILE = f"""
FROM {BASE}
RUN groupadd -g 2500 bakers && groupadd -g 1500 deploy \\
 && useradd -m -u 1500 -g deploy -G bakers,sudo -s /bin/bash deploy \\
 && useradd -m -u 1600 -U -s /bin/sh plain \\
 && install -d -m 700 -o deploy -g deploy /home/deploy/.ssh \\
 && install -d -m 700 -o plain -g plain /home/plain/.ssh \\
 && printf 'deploy ALL=(ALL) NOPASSWD:ALL\\n' > /etc/sudoers.d/deploy && chmod 440 /etc/sudoers.d/deploy \\
 && install -d -m 755 /etc/bakery \\
 && ssh-keygen -A && mkdir -p /run/sshd
COPY app.conf secret /etc/bakery/
COPY start bakery-udp.py /usr/local/bin/
COPY bakery-udp.service bakery-idle.service /etc/systemd/system/
RUN chown root:bakers /etc/bakery/app.conf && chmod 640 /etc/bakery/app.conf \\
 && chmod 600 /etc/bakery/secret && ln -s /etc/bakery/app.conf /etc/bakery/link \\
 && chmod 755 /usr/local/bin/start /usr/local/bin/bakery-udp.py \\
 && systemctl enable bakery-udp.service
ENTRYPOINT ["/usr/local/bin/start"]
"""

START = """#!/bin/sh
set -e
for u in deploy plain; do
  printf '%s\\n' "$AUTHORIZED_KEY" > /home/$u/.ssh/authorized_keys
  chown $u:$u /home/$u/.ssh/authorized_keys
  chmod 600 /home/$u/.ssh/authorized_keys
done
test -s /etc/ssh/ssh_host_ed25519_key || ssh-keygen -A
if [ "$1" = systemd ]; then exec /sbin/init; fi
sleep "${SSHD_DELAY:-0}"
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e
"""

UDP = """#!/usr/bin/python3
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
while True:
    time.sleep(3600)
"""

UNIT = """[Unit]
Description={description}
[Service]
ExecStart={command}
[Install]
WantedBy=multi-user.target
"""


def _context() -> io.BytesIO:
    files = {
        "Dockerfile": DOCKERFILE.encode(),
        "start": START.encode(),
        "bakery-udp.py": UDP.encode(),
        "bakery-udp.service": UNIT.format(description="udp echo", command="/usr/local/bin/bakery-udp.py").encode(),
        "bakery-idle.service": UNIT.format(description="idle", command="/bin/sleep infinity").encode(),
        "app.conf": APP_CONF,
        "secret": SECRET,
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


@pytest.fixture(scope="module")
def docker_engine() -> docker.DockerClient:
    return docker.from_env()


@pytest.fixture(scope="module")
def test_image(docker_engine: docker.DockerClient) -> str:
    docker_engine.images.get(BASE)  # present locally; never pulled
    docker_engine.images.build(
        fileobj=_context(), custom_context=True, tag=IMAGE, labels=LABELS, rm=True, forcerm=True, pull=False
    )
    return IMAGE


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return ssh.generate_keypair(tmp_path_factory.mktemp("keys"))


class Host:
    """A running test container and how to reach it."""

    def __init__(self, container: docker.models.containers.Container, key_path: Path) -> None:
        self.container = container
        self.key_path = key_path

    @property
    def port(self) -> int:
        self.container.reload()
        return int(self.container.ports["22/tcp"][0]["HostPort"])

    def exec(self, *command: str) -> str:
        code, output = self.container.exec_run(list(command))
        assert code == 0, output
        return str(output.decode())

    def host_key(self) -> str:
        return " ".join(self.exec("cat", "/etc/ssh/ssh_host_ed25519_key.pub").split()[:2])

    def endpoint(self, user: str = "deploy", host_key: str | None = None, key_path: Path | None = None) -> SshEndpoint:
        return SshEndpoint("127.0.0.1", self.port, user, key_path or self.key_path, host_key or self.host_key())


StartHost = Callable[..., Host]


@pytest.fixture(scope="module")
def start_host(docker_engine: docker.DockerClient, test_image: str, keypair: tuple[Path, str]) -> Iterator[StartHost]:
    """Starts containers (systemd or a bare sshd); all of them are removed at the end, pass or fail."""
    started: list[docker.models.containers.Container] = []

    def start(systemd: bool = False, sshd_delay: float = 0) -> Host:
        options = {}
        if systemd:
            options = {
                "volumes": {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}},
                "tmpfs": {"/run": "", "/run/lock": ""},
            }
        container = docker_engine.containers.run(
            test_image,
            command=["systemd"] if systemd else [],
            detach=True,
            labels=LABELS,
            ports={"22/tcp": ("127.0.0.1", None)},
            environment={"AUTHORIZED_KEY": keypair[1], "SSHD_DELAY": str(sshd_delay)},
            **options,
        )
        started.append(container)
        return Host(container, keypair[0])

    try:
        yield start
    finally:
        for container in started:
            container.remove(force=True)


@pytest.fixture(scope="module")
def systemd_host(start_host: StartHost) -> Host:
    host = start_host(systemd=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, output = host.container.exec_run(["systemctl", "is-system-running"])
        if output.decode().strip() in ("running", "degraded"):
            break
        time.sleep(0.2)
    return host


@pytest.fixture(scope="module")
def sshd_host(start_host: StartHost) -> Host:
    return start_host()


def write_spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    return path


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
"""


def coverage(result: VerifyResult) -> set[tuple[str, str]]:
    return {(c.resource_type, c.attribute) for c in result.checks}


ALL_ATTRIBUTES = {(t.name, a) for t in TYPES.values() for a in t.checks}


def test_known_state_passes_every_attribute(systemd_host: Host, tmp_path: Path) -> None:
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
    time.sleep(0.5)
    processes = sshd_host.exec("ps", "-eo", "args")
    assert "sleep 600" not in processes


def fifty_checks() -> str:
    files = "\n".join(
        f'  {path}: {{exists: true, owner: root, mode: "/^0[0-7]+$/"}}'
        for path in ("/etc/passwd", "/etc/group", "/etc/hostname", "/etc/hosts", "/etc/bakery/app.conf", "/bin/sh")
    )
    return f"""package:
  openssh-server: {{installed: true}}
  sudo: {{installed: true}}
  python3: {{installed: true}}
  nginx: {{installed: false}}
service:
  ssh: {{enabled: true, running: true}}
  bakery-udp: {{enabled: true, running: true}}
port:
  tcp:22: {{listening: true, ip: [0.0.0.0]}}
  udp:5353: {{listening: true}}
file:
{files}
  /etc/bakery/secret: {{contents: [top secret], sha256: {hashlib.sha256(SECRET).hexdigest()}}}
user:
  deploy: {{exists: true, uid: 1500, groups: [bakers], home: /home/deploy, shell: /bin/bash}}
  root: {{exists: true, uid: 0}}
  plain: {{exists: true}}
group:
  bakers: {{exists: true, gid: 2500}}
  sudo: {{exists: true}}
process:
  sshd: {{running: true}}
  systemd: {{running: true}}
kernel-param:
  kernel.ostype: {{value: Linux}}
  kernel.hostname: {{value: "/.+/"}}
command:
  uname -s: {{exit-status: 0, stdout: [Linux]}}
  python3 --version: {{exit-status: 0, stdout: ["/^Python 3/"]}}
"""


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

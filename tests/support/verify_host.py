"""A known-state host for the verification e2e tests and the verify benchmark: one image (FROM the local
bakery/debian:bookworm, never pulled) with users, groups, files, a UDP service, a disabled unit, and a
dummy package with newer versions in two local apt repositories (a security suite and an updates suite,
``file:`` sources, no network). Containers publish SSH on 127.0.0.1 only, carry ``bakery.test=1`` and are
removed on every path.

A test module uses the fixtures with ``pytest_plugins = ("tests.support.verify_host",)``; they are module-scoped,
so each module gets its own containers (the image build is cached by the engine).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tarfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from tasks import ssh
from tasks.targets.base import SshEndpoint

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
COPY mkrepo apt-lists /usr/local/sbin/
RUN chown root:bakers /etc/bakery/app.conf && chmod 640 /etc/bakery/app.conf \\
 && chmod 600 /etc/bakery/secret && ln -s /etc/bakery/app.conf /etc/bakery/link \\
 && chmod 755 /usr/local/bin/start /usr/local/bin/bakery-udp.py /usr/local/sbin/apt-lists \\
 && systemctl enable bakery-udp.service \\
 && sh /usr/local/sbin/mkrepo && rm -f /etc/apt/sources.list && /usr/local/sbin/apt-lists none
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


# bakery-dummy 1.0 installed; 1.1 in /srv/apt/security (suite bookworm-security, label Debian-Security)
# and in /srv/apt/updates (suite bookworm-updates): flat file: repositories apt reads without a network.
MKREPO = r"""#!/bin/sh
set -eu
fields='Architecture: all\nMaintainer: bakery <bakery@localhost>'
build() {
  d=$(mktemp -d); mkdir -p "$d/DEBIAN"
  printf "Package: bakery-dummy\nVersion: %s\n$fields\nDescription: bakery test\n" "$1" > "$d/DEBIAN/control"
  dpkg-deb --root-owner-group --build "$d" "/tmp/bakery-dummy_$1_all.deb" >/dev/null
  rm -rf "$d"
}
sha() { sha256sum "$1" | cut -d' ' -f1; }
repo() {
  mkdir -p "$1"; f=bakery-dummy_1.1_all.deb; cp "/tmp/$f" "$1/"
  printf "Package: bakery-dummy\nVersion: 1.1\n$fields\nFilename: ./%s\nSize: %s\nSHA256: %s\n" \
    "$f" "$(stat -c %s "$1/$f")" "$(sha "$1/$f")" > "$1/Packages"
  printf 'Description: bakery test\n\n' >> "$1/Packages"
  { printf 'Origin: %s\nLabel: %s\nSuite: %s\nCodename: %s\n' "$3" "$3" "$2" "$2"
    printf 'Date: %s\nSHA256:\n' "$(date -Ru)"
    printf ' %s %s Packages\n' "$(sha "$1/Packages")" "$(stat -c %s "$1/Packages")"; } > "$1/Release"
  printf 'deb [trusted=yes] file:%s ./\n' "$1" > "/etc/apt/bakery-$4.list"
}
build 1.0; build 1.1; dpkg -i /tmp/bakery-dummy_1.0_all.deb >/dev/null
repo /srv/apt/security bookworm-security Debian-Security security
repo /srv/apt/updates bookworm-updates Debian updates
rm -f /tmp/bakery-dummy_*.deb
"""

# apt-lists none|security|updates: which package lists apt has (none: as a golden image that cleaned them).
APT_LISTS = """#!/bin/sh
set -e
rm -rf /var/lib/apt/lists/* /etc/apt/sources.list.d/bakery.list
mkdir -p /var/lib/apt/lists/partial
[ "$1" = none ] && exit 0
cp "/etc/apt/bakery-$1.list" /etc/apt/sources.list.d/bakery.list
exec apt-get update -qq
"""


def image_context() -> io.BytesIO:
    files = {
        "Dockerfile": DOCKERFILE.encode(),
        "start": START.encode(),
        "bakery-udp.py": UDP.encode(),
        "bakery-udp.service": UNIT.format(description="udp echo", command="/usr/local/bin/bakery-udp.py").encode(),
        "bakery-idle.service": UNIT.format(description="idle", command="/bin/sleep infinity").encode(),
        "app.conf": APP_CONF,
        "secret": SECRET,
        "mkrepo": MKREPO.encode(),
        "apt-lists": APT_LISTS.encode(),
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
        fileobj=image_context(), custom_context=True, tag=IMAGE, labels=LABELS, rm=True, forcerm=True, pull=False
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

    def apt_lists(self, which: str) -> None:
        """Give apt the lists of the local ``security`` or ``updates`` repository, or ``none``."""
        self.exec("/usr/local/sbin/apt-lists", which)

    def host_key(self) -> str:
        return " ".join(self.exec("cat", "/etc/ssh/ssh_host_ed25519_key.pub").split()[:2])

    def endpoint(self, user: str = "deploy", host_key: str | None = None, key_path: Path | None = None) -> SshEndpoint:
        return SshEndpoint("127.0.0.1", self.port, user, key_path or self.key_path, host_key or self.host_key())


StartHost = Callable[..., Host]


@pytest.fixture(scope="module")
def start_host(docker_engine: docker.DockerClient, test_image: str, keypair: tuple[Path, str]) -> Iterator[StartHost]:
    """Starts containers (systemd or a bare sshd); all of them are removed at the end, pass or fail."""
    started: list[docker.models.containers.Container] = []

    def start(systemd: bool = False, sshd_delay: float = 0, image: str | None = None) -> Host:
        options = {}
        if systemd:
            options = {
                "volumes": {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}},
                "tmpfs": {"/run": "", "/run/lock": ""},
            }
        container = docker_engine.containers.run(
            image or test_image,
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
            with contextlib.suppress(docker.errors.NotFound):
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

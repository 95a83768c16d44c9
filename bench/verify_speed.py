"""``bake verify`` vs pytest-testinfra vs one ssh per check: 50 checks on a local container, in the same run.

The container is the e2e tests' known-state host (tests/support/verify_host.py, FROM the local
bakery/debian:bookworm, booting systemd, SSH on 127.0.0.1 only, labelled bakery.test=1, removed at the end).
The same 50 checks (tests/e2e/verify_host.fifty_checks) three ways, each as a whole process, host key pinned:

- bakery: ``.venv/bin/bake verify --known-hosts KH --spec fifty.yaml``;
- testinfra: ``.venv/bin/pytest --hosts=paramiko://deploy@127.0.0.1:PORT?ssh_identity_file=KEY --sudo`` on an
  equivalent test module (one connection). testinfra's paramiko backend ignores ``UserKnownHostsFile`` and
  ``StrictHostKeyChecking yes`` in ssh_config (it accepts any key with a warning), so a conftest pins the key;
- ssh per check: 50 ``ssh`` runs (``UserKnownHostsFile=KH``, ``StrictHostKeyChecking=yes``, no multiplexing).

Every check runs as root (sudo -n) in all three. Rounds are interleaved (the order rotates) after one warm-up
round; medians and ratios are printed. Targets: bakery <= 0.5 x testinfra and < 2 s.

A fourth case, ``bake verify (templates + http)``, runs a goss *template* of the same 50 checks with a vars
file (packages from a ``range``, the user from ``.Vars``), its two ``command`` checks replaced by four ``http``
checks against a web server inside the host on its own loopback (made by the host through the SSH
connection): the cost of rendering and of http in the same single connection. It is reported beside the
others; the targets apply to both bakery cases.

Run: .venv/bin/python bench/verify_speed.py [--rounds N]
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench._run import timed  # noqa: E402
from tasks import ssh  # noqa: E402
from tests.support.verify_host import IMAGE, LABELS, SECRET, fifty_checks, image_context  # noqa: E402

BIN = Path(sys.executable).parent
FILES = ("/etc/passwd", "/etc/group", "/etc/hostname", "/etc/hosts", "/etc/bakery/app.conf", "/bin/sh")
SECRET_SHA = hashlib.sha256(SECRET).hexdigest()


def installed(name: str) -> str:
    return f"dpkg-query -W -f='${{Status}}' {name} 2>/dev/null | grep -q ' installed$'"


# The 50 checks as shell commands, one ssh each (the order of fifty_checks()).
PER_CHECK = [
    *(installed(p) for p in ("openssh-server", "sudo", "python3")),
    f"! {installed('nginx')}",
    "systemctl is-enabled -q ssh",
    "systemctl is-active -q ssh",
    "systemctl is-enabled -q bakery-udp",
    "systemctl is-active -q bakery-udp",
    "grep -q ':0016 00000000:0000 0A' /proc/net/tcp",
    "grep -q ' 00000000:0016 00000000:0000 0A' /proc/net/tcp",
    "grep -q ':14E9 00000000:0000 07' /proc/net/udp",
    *(
        check
        for path in FILES
        for check in (
            f"test -e {path}",
            f'test "$(stat -c %U {path})" = root',
            f"stat -c %04a {path} | grep -Eq '^0[0-7]+$'",
        )
    ),
    "grep -q 'top secret' /etc/bakery/secret",
    f"echo '{SECRET_SHA}  /etc/bakery/secret' | sha256sum -c --quiet",
    "id deploy >/dev/null",
    'test "$(id -u deploy)" = 1500',
    "id -Gn deploy | grep -qw bakers",
    'test "$(getent passwd deploy | cut -d: -f6)" = /home/deploy',
    'test "$(getent passwd deploy | cut -d: -f7)" = /bin/bash',
    "id root >/dev/null",
    'test "$(id -u root)" = 0',
    "id plain >/dev/null",
    "getent group bakers >/dev/null",
    'test "$(getent group bakers | cut -d: -f3)" = 2500',
    "getent group sudo >/dev/null",
    "pgrep -x sshd >/dev/null",
    "pgrep -x systemd >/dev/null",
    'test "$(cat /proc/sys/kernel/ostype)" = Linux',
    'test -n "$(cat /proc/sys/kernel/hostname)"',
    "uname -s >/dev/null",
    "uname -s | grep -qx Linux",
    "python3 --version >/dev/null",
    "python3 --version | grep -q '^Python 3'",
]

# The same checks as a pytest-testinfra module, one test per resource as such modules are written.
TESTINFRA = f'''
import re


def test_packages(host):
    for name in ("openssh-server", "sudo", "python3"):
        assert host.package(name).is_installed
    assert not host.package("nginx").is_installed


def test_ssh_service(host):
    service = host.service("ssh")
    assert service.is_enabled
    assert service.is_running


def test_udp_service(host):
    service = host.service("bakery-udp")
    assert service.is_enabled
    assert service.is_running


def test_ports(host):
    # the image has no ss or netstat for host.socket: /proc/net, one command per check as ss would be
    assert host.run("grep -q ':0016 00000000:0000 0A' /proc/net/tcp").rc == 0
    assert host.run("grep -q ' 00000000:0016 00000000:0000 0A' /proc/net/tcp").rc == 0
    assert host.run("grep -q ':14E9 00000000:0000 07' /proc/net/udp").rc == 0


def test_files(host):
    for path in {FILES!r}:
        f = host.file(path)
        assert f.exists
        assert f.user == "root"
        assert re.match(r"^0[0-7]+$", "%04o" % f.mode)


def test_secret(host):
    f = host.file("/etc/bakery/secret")
    assert f.contains("top secret")
    assert f.sha256sum == "{SECRET_SHA}"


def test_deploy(host):
    user = host.user("deploy")
    assert user.exists
    assert user.uid == 1500
    assert "bakers" in user.groups
    assert user.home == "/home/deploy"
    assert user.shell == "/bin/bash"


def test_root(host):
    user = host.user("root")
    assert user.exists
    assert user.uid == 0


def test_plain(host):
    assert host.user("plain").exists


def test_groups(host):
    assert host.group("bakers").exists
    assert host.group("bakers").gid == 2500
    assert host.group("sudo").exists


def test_processes(host):
    assert host.process.filter(comm="sshd")
    assert host.process.filter(comm="systemd")


def test_kernel(host):
    assert host.sysctl("kernel.ostype") == "Linux"
    assert re.search(".+", str(host.sysctl("kernel.hostname")))


def test_uname(host):
    result = host.run("uname -s")
    assert result.rc == 0
    assert "Linux" in result.stdout.splitlines()


def test_python(host):
    result = host.run("python3 --version")
    assert result.rc == 0
    assert re.search("^Python 3", result.stdout, re.M)
'''

# testinfra's paramiko backend does not pin host keys (it ignores UserKnownHostsFile): this conftest loads the
# known_hosts file and makes every client refuse any other key, so all three ways are pinned alike.
PIN = """
import paramiko

_SSHClient = paramiko.SSHClient


class PinnedClient(_SSHClient):
    def __init__(self):
        super().__init__()
        self.load_host_keys({known_hosts!r})

    def set_missing_host_key_policy(self, policy):
        super().set_missing_host_key_policy(paramiko.RejectPolicy())


paramiko.SSHClient = PinnedClient
"""


WEB_PORT = 8080
VARS = "packages: [openssh-server, sudo, python3]\nuser: {name: deploy, uid: 1500}\n"


def templated_checks() -> str:
    """fifty_checks() as a goss template: 50 checks, 4 of them http (the two commands' 4 checks replaced)."""
    text = fifty_checks()
    head, _, rest = text.partition("package:\n")
    packages, _, rest = rest.partition("service:\n")
    templated_packages = (
        "package:\n{{- range .Vars.packages }}\n  {{ . }}: {installed: true}\n{{- end }}\n  nginx: {installed: false}\n"
    )
    assert packages.count("installed: true") == 3, packages
    body = head + templated_packages + "service:\n" + rest
    body = body.replace(
        "  deploy: {exists: true, uid: 1500,", "  {{ .Vars.user.name }}: {exists: true, uid: {{ .Vars.user.uid }},"
    )
    before, _, _ = body.partition("command:\n")
    return before + (
        "http:\n"
        f'  http://127.0.0.1:{WEB_PORT}/app.conf: {{status: 200, body: ["/^listen 8080$/"]}}\n'
        f"  http://127.0.0.1:{WEB_PORT}/: {{status: 200, body: [app.conf]}}\n"
    )


def start(engine: docker.DockerClient, public_key: str) -> tuple[docker.models.containers.Container, int, str]:
    engine.images.build(fileobj=image_context(), custom_context=True, tag=IMAGE, labels=LABELS, rm=True, forcerm=True)
    container = engine.containers.run(
        IMAGE,
        command=["systemd"],
        detach=True,
        labels=LABELS,
        ports={"22/tcp": ("127.0.0.1", None)},
        environment={"AUTHORIZED_KEY": public_key},
        volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}},
        tmpfs={"/run": "", "/run/lock": ""},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, out = container.exec_run(["systemctl", "is-system-running"])
        if out.decode().strip() in ("running", "degraded"):
            break
        time.sleep(0.2)
    # a web server inside the host, on its own loopback only (for the templates + http case)
    container.exec_run(
        ["python3", "-m", "http.server", str(WEB_PORT), "--bind", "127.0.0.1", "--directory", "/etc/bakery"],
        detach=True,
    )
    container.reload()
    port = int(container.ports["22/tcp"][0]["HostPort"])
    host_key = " ".join(container.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).output.decode().split()[:2])
    return container, port, host_key


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds after one warm-up (default 5)")
    args = parser.parse_args()
    assert len(PER_CHECK) == 50, len(PER_CHECK)
    engine = docker.from_env()
    with tempfile.TemporaryDirectory(prefix="bakery-bench-verify-") as tmp:
        work = Path(tmp)
        key, public_key = ssh.generate_keypair(work)
        container, port, host_key = start(engine, public_key)
        try:
            known_hosts = work / "known_hosts"
            known_hosts.write_text(f"[127.0.0.1]:{port} {host_key}\n")
            spec = work / "fifty.yaml"
            spec.write_text(fifty_checks())
            templated = work / "templated.yaml"
            templated.write_text(templated_checks())
            variables = work / "vars.yaml"
            variables.write_text(VARS)
            tests = work / "testinfra"
            tests.mkdir()
            (tests / "pytest.ini").write_text("[pytest]\n")
            (tests / "conftest.py").write_text(PIN.format(known_hosts=str(known_hosts)))
            (tests / "test_fifty.py").write_text(TESTINFRA)
            ssh_config = work / "ssh_config"
            ssh_config.write_text(
                f"Host 127.0.0.1\n  UserKnownHostsFile {known_hosts}\n  StrictHostKeyChecking yes\n"
                f"  IdentityFile {key}\n  User deploy\n  Port {port}\n"
            )
            ssh_options = [
                "-F", str(ssh_config), "-o", "BatchMode=yes", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "LogLevel=ERROR",
            ]  # fmt: skip

            def bakery() -> float:
                return timed(
                    [str(BIN / "bake"), "verify", "--host", "127.0.0.1", "--port", str(port), "--user", "deploy",
                     "--key", str(key), "--known-hosts", str(known_hosts), "--spec", str(spec)],
                )[0]  # fmt: skip

            def bakery_templated() -> float:
                return timed(
                    [str(BIN / "bake"), "verify", "--host", "127.0.0.1", "--port", str(port), "--user", "deploy",
                     "--key", str(key), "--known-hosts", str(known_hosts), "--spec", str(templated),
                     "--vars", str(variables)],
                )[0]  # fmt: skip

            def testinfra() -> float:
                hosts = f"--hosts=paramiko://deploy@127.0.0.1:{port}?ssh_identity_file={key}"
                return timed(
                    [str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", hosts, f"--ssh-config={ssh_config}",
                     "--sudo", "test_fifty.py"],
                    cwd=tests,
                )[0]  # fmt: skip

            def per_check() -> float:
                started = time.monotonic()
                for check in PER_CHECK:
                    timed(["ssh", *ssh_options, "127.0.0.1", f"sudo -n /bin/sh -c {shlex.quote(check)}"])
                return time.monotonic() - started

            ways: list[tuple[str, Callable[[], float]]] = [
                ("bake verify", bakery),
                ("bake verify (templates + http)", bakery_templated),
                ("pytest-testinfra (paramiko, 1 connection)", testinfra),
                ("ssh per check (50 connections)", per_check),
            ]
            times: dict[str, list[float]] = {name: [] for name, _ in ways}
            for _, way in ways:
                way()  # warm-up: sudo, dpkg and systemd caches, Python byte code
            for round_number in range(args.rounds):
                order = ways[round_number % len(ways) :] + ways[: round_number % len(ways)]
                for name, way in order:
                    times[name].append(way())
                print(
                    f"round {round_number + 1}: "
                    + ", ".join(
                        f"{name if name.startswith('bake') else name.split(' (')[0]} {times[name][-1]:.2f} s"
                        for name, _ in ways
                    ),
                    file=sys.stderr,
                )
        finally:
            container.remove(force=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    bake = medians["bake verify"]
    print(f"\n50 checks, whole process, medians of {args.rounds} interleaved rounds:")
    for name, median in medians.items():
        spread = f"{min(times[name]):.2f}-{max(times[name]):.2f}"
        faster = "" if name.startswith("bake verify") else f"   bake verify is {median / bake:.1f}x faster"
        print(f"  {name:<44} {median:6.2f} s  (range {spread} s){faster}")
    testinfra_time = medians["pytest-testinfra (paramiko, 1 connection)"]
    met = True
    for name in ("bake verify", "bake verify (templates + http)"):
        ratio = medians[name] / testinfra_time
        print(f"\n{name} / testinfra = {ratio:.2f} (target <= 0.50): {'met' if ratio <= 0.5 else 'NOT met'}")
        print(f"{name} {medians[name]:.2f} s (target < 2 s): {'met' if medians[name] < 2 else 'NOT met'}")
        met = met and ratio <= 0.5 and medians[name] < 2
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())

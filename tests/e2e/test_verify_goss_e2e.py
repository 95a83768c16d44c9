"""goss files as they are, on the known-state host (tests/support/verify_host.py): templates rendered with a
vars file, includes, the goss resource types (http from the host's own loopback, mount of /, interface
lo, addr, dns, matching), goss's matchers and semantics — each check's expected PASS or FAIL known."""

from __future__ import annotations

import json
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tasks import ssh
from tasks.verify import load_spec, report, spec_variables, verify, verify_endpoint
from tests.support.verify_host import Host

pytest_plugins = ("tests.support.verify_host",)
pytestmark = pytest.mark.e2e

PUBLIC = Path(__file__).resolve().parents[1] / "fixtures" / "goss" / "public"

# A web server inside the host, bound to the host's own loopback: only the host itself can reach it.
WEB = r"""
import http.server, json, ssl, threading
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self): self.route()
    def do_POST(self): self.route()
    def do_HEAD(self): self.route()
    def route(self):
        if self.path == "/health":
            self.answer(200, "ok\nstatus: green\n", {"X-Bakery": "yes", "Content-Type": "text/plain"})
        elif self.path == "/redirect":
            self.answer(302, "", {"Location": "/health"})
        elif self.path == "/echo":
            size = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(size).decode()
            seen = {"method": self.command, "body": body, "probe": self.headers.get("X-Probe", "")}
            self.answer(200, json.dumps(seen), {"Content-Type": "application/json"})
        else:
            self.answer(404, "nope\n", {})
    def answer(self, code, body, headers):
        data = body.encode()
        self.send_response(code)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
    def log_message(self, *args): pass
plain = http.server.ThreadingHTTPServer(("127.0.0.1", 8080), Handler)
secure = http.server.ThreadingHTTPServer(("127.0.0.1", 8443), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("/tmp/web-cert.pem", "/tmp/web-key.pem")
secure.socket = context.wrap_socket(secure.socket, server_side=True)
threading.Thread(target=secure.serve_forever, daemon=True).start()
plain.serve_forever()
"""


@pytest.fixture(scope="module")
def web_host(sshd_host: Host) -> Host:
    sshd_host.exec(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1",
        "-keyout", "/tmp/web-key.pem", "-out", "/tmp/web-cert.pem",
    )  # fmt: skip
    sshd_host.container.exec_run(["python3", "-c", WEB], detach=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        code, _ = sshd_host.container.exec_run(
            ["python3", "-c", "import socket; socket.create_connection(('127.0.0.1', 8443), 1)"]
        )
        if code == 0:
            break
        time.sleep(0.2)
    return sshd_host


def statuses(result: object) -> dict[str, str]:
    return {f"{c.resource_type} {c.name}": c.status for c in result.checks}  # type: ignore[attr-defined]


def test_a_public_goss_file_with_its_vars_passes_on_the_known_host(web_host: Host) -> None:
    variables = spec_variables(PUBLIC / "vars.yaml")
    result = verify_endpoint(web_host.endpoint(), PUBLIC / "goss.yaml", ssh_timeout=60, variables=variables)
    assert result.passed, report.summary(result)
    found = statuses(result)
    for name in (
        "http http://127.0.0.1:8080/health status",  # the host's own loopback, through the SSH connection
        "interface lo addrs",
        "interface lo mtu",
        "mount / usage",
        "dns localhost addrs",
        "matching check_instance_count matches",
        "command uname -s stdout",  # from the included file
        "user root home",
    ):
        assert found[name] == "PASS", name
    assert "file /etc/hosts contents" not in found  # contains: [] is unset, as in goss


TEMPLATED = """
# real-world shape: a templated image spec with a vars file, merge keys, title/meta
{{- $port := .Vars.web.port }}
http:
  http://127.0.0.1:{{ $port }}/health:
    title: health endpoint
    meta: {owner: web, sev: 2}
    status: 200
    body: [ok, "/^status: (green|yellow)$/", "!/error/"]
    headers: ["X-Bakery: yes", "/^Content-Type: text/plain/"]
  http://127.0.0.1:{{ $port }}/missing: {status: 200}
  http://127.0.0.1:{{ $port }}/redirect: {status: 200, body: [ok]}
  http://127.0.0.1:{{ $port }}/redirect#no-follow:
    url: http://127.0.0.1:{{ $port }}/redirect
    no-follow-redirects: true
    status: 302
    headers: ["Location: /health"]
  http://127.0.0.1:{{ $port }}/echo:
    method: POST
    request-body: '{"a": 1}'
    request-headers: ["X-Probe: {{ .Vars.probe | upper }}"]
    status: 200
    body: ['"method": "POST"', '"probe": "HELLO"', '/"body": "\\{\\\\"a\\\\": 1\\}"/']
  https://127.0.0.1:8443/health: {status: 200, allow-insecure: true}
  https://localhost:8443/health#verified: {url: "https://localhost:8443/health", status: 200}
  http://127.0.0.1:1/: {status: 200, timeout: 300}
mount:
  /: {exists: true, opts: [rw], filesystem: {{ .Vars.root_fs }}, usage: {lt: 100}}
  /no/such/mount: {exists: false}
  /proc: {exists: true, filesystem: ext4}
interface:
  lo: {exists: true, addrs: [127.0.0.1/8], mtu: 65536}
  bakery0: {exists: false}
  lo#wrong-mtu: {name: lo, mtu: 1500}
addr:
  tcp://127.0.0.1:22: {reachable: true}
  tcp://127.0.0.1:1: {reachable: false}
  tcp://127.0.0.1:{{ $port }}: {reachable: false}
dns:
  localhost: {resolvable: true, addrs: {contain-element: 127.0.0.1}}
  surely-not-a-host.invalid: {resolvable: false}
service:
  ssh: {runlevels: ["2", "3", "4", "5"], running: {or: [true, false]}}
package:
  openssh-server: {installed: true, versions: {semver-constraint: ">=1.0.0"}}
matching:
{{- range $name, $count := .Vars.instances }}
  {{ $name }}-instances: {content: {{ $count }}, matches: {gt: 0}}
{{- end }}
  config: {content: '{"tls": {"enabled": true}, "workers": 4}', matches: {gjson: {tls.enabled: true, workers: {ge: 8}}}}
command:
  flaky:
    exec: "test -e /tmp/bakery-flaky || { touch /tmp/bakery-flaky; exit 1; }"
    exit-status: 0
    retry_count: 2
    retry_delay: 100
    timeout: 0
  quiet: &quiet {exec: "true", exit-status: 0, stdout: [], stderr: []}
  loud:
    <<: *quiet
    exec: "echo loud"
    stdout: ["!/\\\\Qlo.d\\\\E/", "/^[[:alpha:]]+$/"]  # RE2: \\Q...\\E is literal, so lo.d is not loud
"""

EXPECTED = {
    "http http://127.0.0.1:8080/health status": "PASS",
    "http http://127.0.0.1:8080/health body": "PASS",
    "http http://127.0.0.1:8080/health headers": "PASS",
    "http http://127.0.0.1:8080/missing status": "FAIL",  # 404
    "http http://127.0.0.1:8080/redirect status": "PASS",  # followed to /health
    "http http://127.0.0.1:8080/redirect body": "PASS",
    "http http://127.0.0.1:8080/redirect#no-follow status": "PASS",
    "http http://127.0.0.1:8080/redirect#no-follow headers": "PASS",
    "http http://127.0.0.1:8080/echo status": "PASS",
    "http http://127.0.0.1:8080/echo body": "PASS",
    "http https://127.0.0.1:8443/health status": "PASS",
    "http https://localhost:8443/health#verified status": "FAIL",  # self-signed: refused without allow-insecure
    "http http://127.0.0.1:1/ status": "FAIL",  # refused
    "mount / exists": "PASS",
    "mount / opts": "PASS",
    "mount / filesystem": "PASS",
    "mount / usage": "PASS",
    "mount /no/such/mount exists": "PASS",
    "mount /proc exists": "PASS",
    "mount /proc filesystem": "FAIL",  # proc
    "interface lo exists": "PASS",
    "interface lo addrs": "PASS",
    "interface lo mtu": "PASS",
    "interface bakery0 exists": "PASS",
    "interface lo#wrong-mtu mtu": "FAIL",
    "addr tcp://127.0.0.1:22 reachable": "PASS",
    "addr tcp://127.0.0.1:1 reachable": "PASS",
    "addr tcp://127.0.0.1:8080 reachable": "FAIL",  # the web server listens there
    "dns localhost resolvable": "PASS",
    "dns localhost addrs": "PASS",
    "dns surely-not-a-host.invalid resolvable": "PASS",
    "service ssh runlevels": "PASS",  # SysV links /etc/rc[2-5].d/S01ssh (no systemd in this container)
    "service ssh running": "PASS",
    "package openssh-server installed": "PASS",
    "package openssh-server versions": "FAIL",  # 1:9.2p1-2+deb12u… is not semver: goss's parser refuses it too
    "matching api-instances matches": "PASS",
    "matching worker-instances matches": "FAIL",  # 0
    "matching config matches": "FAIL",  # workers is 4
    "command flaky exit-status": "PASS",  # passed on the second attempt
    "command quiet exit-status": "PASS",
    "command loud exit-status": "PASS",
    "command loud stdout": "PASS",
}


def test_a_templated_spec_with_a_vars_file_has_the_known_results(web_host: Host, tmp_path: Path) -> None:
    spec_path = tmp_path / "goss.yaml"
    spec_path.write_text(textwrap.dedent(TEMPLATED))
    vars_path = tmp_path / "vars.yaml"
    vars_path.write_text("web: {port: 8080}\nprobe: hello\nroot_fs: overlay\ninstances: {api: 3, worker: 0}\n")
    spec = load_spec(spec_path, spec_variables(vars_path))
    client = ssh.connect(web_host.endpoint(), timeout=60)
    try:
        result = verify(client, spec, command_timeout=30)
    finally:
        client.close()
    found = statuses(result)
    expected = EXPECTED
    assert {k: found.get(k) for k in expected} == expected, report.summary(result)
    assert set(found) == set(expected), set(found) ^ set(expected)
    case = next(
        c
        for c in ET.fromstring(report.to_junit(result)).iter("testcase")
        if c.get("name", "").endswith("health status")
    )
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties["title"] == "health endpoint" and json.loads(properties["meta"]) == {"owner": "web", "sev": 2}
    text = report.summary(result)
    assert "ok\nstatus" not in text and "<" in text  # bodies are summarised, never copied into reports

"""goss-format verification of a host over one SSH connection: spec loading, checks, reports.

    spec = load_spec("packer/test/image_spec.yaml")      # UsageError (exit 2) for any spec problem
    result = verify(client, spec, sudo=True, command_timeout=30)
    report.to_junit(result), report.summary(result), report.to_json(result), report.to_markdown(result)

or all at once: ``verify_endpoint(endpoint, spec_path, ssh_timeout=120)``.

A spec is goss's format as it is: a Go template (``.Vars`` from ``--vars``/``--spec-var``, ``.Env``),
``gossfile:`` includes (globs relative to the including file, per-include ``vars``/``vars-inline``),
YAML merge keys, ``title``/``meta`` (kept in every report). Every problem is listed at once with
file:line (``bake spec check``); ``bake spec render`` prints the one document.

Supported (goss attribute names; ``skip``, ``title`` and ``meta`` are accepted everywhere):

    package       installed, versions                     dpkg, rpm or apk
    service       enabled, running, runlevels             systemd, else OpenRC, else SysV scripts
    port          listening, ip                           "tcp:22", "tcp6:22", "udp:53", "udp6:53"
    file          exists, mode, size, owner, group, uid, gid, filetype, linked-to,
                  contents (old name: contains), md5, sha256, sha512
    command       exit-status, stdout, stderr             timeout in ms (0: default); exec; retry_count
    user          exists, uid, gid, groups, home, shell
    group         exists, gid
    process       running                                 by executable name (/proc/PID/comm)
    kernel-param  value
    mount         exists, opts, vfs-opts, source, filesystem, usage
    interface     exists, addrs, mtu
    http          status, body, headers                   made BY THE HOST over the SSH connection
    addr          reachable                               tcp:// connected by the host's sshd
    dns           resolvable, addrs                       getent ahosts; with server: DNS over TCP
    matching      matches                                 content checked with no host access

bakery's extension — NOT part of goss (goss rejects a spec that has it; keep it out of files goss reads):

    pending-updates  count, packages                      ids: security, all; from apt's lists / dnf's
                                                          cache already on the host, never the network

Every verification also lists the installed packages (``VerifyResult.inventory``: dpkg, rpm or apk, from
the same batched script); ``tasks.verify.inventory`` keeps them per image and diffs them against the
family's production image.

Matchers: plain values, lists (must contain all), "/regex/" (Go RE2), "!" negation, and {equal, not,
and, or, have-prefix, have-suffix, match-regexp, contain-substring, contain-element, contain-elements,
consist-of, have-len, gt, ge, lt, le, have-key, have-key-with-value, semver-constraint, gjson}, on any
attribute (booleans too). An empty list or no value is "not set" (no check), as in goss.
"""

from __future__ import annotations

from tasks.verify import report
from tasks.verify.inventory import Inventory
from tasks.verify.model import CheckResult, Resource, VerifyResult
from tasks.verify.resources import EXTENSIONS, TYPES, UNSUPPORTED
from tasks.verify.runner import verify, verify_endpoint
from tasks.verify.spec import Spec, check_spec, load_spec, parse_spec, render_spec, spec_variables

SUPPORTED_TYPES = tuple(TYPES)
UNSUPPORTED_TYPES = tuple(UNSUPPORTED)
EXTENSION_TYPES = tuple(EXTENSIONS)

__all__ = [
    "EXTENSION_TYPES",
    "SUPPORTED_TYPES",
    "UNSUPPORTED_TYPES",
    "CheckResult",
    "Inventory",
    "Resource",
    "Spec",
    "VerifyResult",
    "check_spec",
    "load_spec",
    "parse_spec",
    "render_spec",
    "report",
    "spec_variables",
    "verify",
    "verify_endpoint",
]

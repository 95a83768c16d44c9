"""Packer as a subprocess: find it, init (>=1.7), validate, fmt, build, and read what it writes.

``build`` streams ``-machine-readable`` output line by line so the caller can log progress while a
long build runs; the manifest the build writes is parsed into ``ManifestBuild`` records.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from tasks.errors import JobFailed, UsageError

_COMMA = "%!(PACKER_COMMA)"


@dataclass(frozen=True)
class MachineLine:
    """One ``-machine-readable`` line: ``timestamp,target,type,data...``."""

    timestamp: int
    target: str
    type: str
    data: tuple[str, ...]


@dataclass(frozen=True)
class ManifestBuild:
    """One build record of a Packer manifest."""

    name: str
    builder_type: str
    artifact_id: str
    build_time: int
    packer_run_uuid: str

    @property
    def source(self) -> str:
        """``docker.base`` style source name, as ``-only`` takes it."""
        return f"{self.builder_type}.{self.name}"


@dataclass(frozen=True)
class BuildResult:
    """``manifest``: this run's records, from the manifest file when the template writes one to the path
    bakery gave, else from the ``artifact`` lines of the machine-readable output."""

    manifest: list[ManifestBuild]
    seconds: float


def parse_machine_line(line: str) -> MachineLine | None:
    """Parse one machine-readable line; returns None for lines that are not in that format."""
    parts = line.rstrip("\r\n").split(",")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    data = tuple(p.replace(_COMMA, ",").replace("\\n", "\n").replace("\\r", "\r") for p in parts[3:])
    return MachineLine(int(parts[0]), parts[1], parts[2], data)


def read_manifest(path: Path) -> list[ManifestBuild]:
    """Every build recorded in a manifest file (a manifest post-processor appends to it)."""
    try:
        document = json.loads(path.read_text())
        builds = document["builds"]
        records = [
            ManifestBuild(
                name=b["name"],
                builder_type=b["builder_type"],
                artifact_id=b["artifact_id"],
                build_time=int(b.get("build_time", 0)),
                packer_run_uuid=b.get("packer_run_uuid", ""),
            )
            for b in builds
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise JobFailed(f"{path}: not a readable Packer manifest ({exc})") from exc
    return records


def find_packer() -> str:
    """The packer binary: ``$PACKER`` or the one on PATH."""
    packer = os.environ.get("PACKER") or shutil.which("packer")
    if not packer:
        raise UsageError("packer: not found on PATH (install it, e.g. apt-get install packer, or set PACKER)")
    return packer


def packer_version(packer: str | None = None) -> tuple[int, int, int]:
    out = subprocess.run(
        [packer or find_packer(), "version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise JobFailed(f"packer version: cannot read a version from {out.strip()!r}")
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


_CONSTRAINT = re.compile(r"^\s*(>=|<=|!=|~>|>|<|=)?\s*v?(\d+(?:\.\d+){0,2})\s*$")


def _version(text: str) -> tuple[int, int, int]:
    major, minor, patch = [*(int(p) for p in text.split(".")), 0, 0, 0][:3]
    return major, minor, patch


def satisfies(version: tuple[int, int, int], constraint: str) -> bool:
    """Whether ``version`` meets a Packer/Terraform version constraint such as ``>= 1.7.0, < 2`` or
    ``~> 1.9`` (``~>`` lets only the last given part grow). An unreadable constraint raises ValueError."""
    for part in constraint.split(","):
        match = _CONSTRAINT.match(part)
        if not match:
            raise ValueError(f"not a version constraint: {part.strip()!r}")
        op, wanted_text = match.group(1) or "=", match.group(2)
        wanted = _version(wanted_text)
        if op == "~>":
            given = wanted_text.count(".") + 1
            upper = list(wanted[: max(given - 1, 1)])
            upper[-1] += 1
            if not (version >= wanted and version < _version(".".join(map(str, upper)))):
                return False
        elif not {
            ">=": version >= wanted,
            "<=": version <= wanted,
            ">": version > wanted,
            "<": version < wanted,
            "=": version == wanted,
            "!=": version != wanted,
        }[op]:
            return False
    return True


# Variables only packer's own process gets: credentials and secrets from Prefect blocks. Kept out of
# os.environ (other flows in this process, and every other subprocess, would see them) and off the command
# line (ps shows it); a context variable, so concurrent flows in one process keep theirs apart.
_SUBPROCESS_ENV: ContextVar[Mapping[str, str]] = ContextVar("bakery_packer_env", default=MappingProxyType({}))


@contextlib.contextmanager
def subprocess_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Packer runs in this context get ``values`` in their environment (and nothing else does).

    Args:
        values: variables such as ``AWS_SECRET_ACCESS_KEY`` or ``PKR_VAR_<name>``; all are masked in
            packer's output as secrets.
    """
    token = _SUBPROCESS_ENV.set({**_SUBPROCESS_ENV.get(), **values})
    try:
        yield
    finally:
        _SUBPROCESS_ENV.reset(token)


def subprocess_variables() -> Mapping[str, str]:
    """What ``subprocess_environment`` added here (to mask, and to know which ``PKR_VAR_`` are set)."""
    return _SUBPROCESS_ENV.get()


def packer_env() -> dict[str, str]:
    """Packer's environment: no phoning home, this interpreter's scripts (ansible-playbook) on PATH, and
    what ``subprocess_environment`` added."""
    env = {**os.environ, **_SUBPROCESS_ENV.get()}
    env["CHECKPOINT_DISABLE"] = "1"
    env["PACKER_NO_COLOR"] = "1"
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def var_args(variables: dict[str, str], var_files: Sequence[Path]) -> list[str]:
    args: list[str] = []
    for var_file in var_files:
        args += ["-var-file", str(var_file)]
    for name, value in variables.items():
        args += ["-var", f"{name}={value}"]
    return args


def _run(
    args: list[str], cwd: Path, timeout: float = 120, secrets: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """A short packer command; its output comes back masked (``redactor``), as every packer output does."""
    result = subprocess.run(
        args,
        cwd=cwd,
        env=packer_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    mask = redactor(secrets)
    return subprocess.CompletedProcess(result.args, result.returncode, mask(result.stdout), mask(result.stderr))


def init(template_dir: Path, secrets: Sequence[str] = ()) -> None:
    """``packer init`` on Packer 1.7+ (installs ``required_plugins``); 1.6 has plugins built in.

    Also in ``plugins/`` when it holds templates: a set that must load on 1.6 as well keeps its
    ``required_plugins`` there (as bakery's own ``packer/`` does), since 1.6 rejects the block.
    """
    packer = find_packer()
    if packer_version(packer) < (1, 7, 0):
        return
    plugins = template_dir / "plugins"
    for directory in (template_dir, *([plugins] if any(plugins.glob("*.pkr.hcl")) else [])):
        result = _run([packer, "init", "."], directory, timeout=600, secrets=secrets)
        if result.returncode != 0:
            raise JobFailed(f"packer init {directory}: {_first_lines(result.stderr or result.stdout)}")


def validate(
    template_dir: Path,
    only: Sequence[str],
    variables: dict[str, str],
    var_files: Sequence[Path],
    secrets: Sequence[str] = (),
) -> None:
    """``packer validate`` for the selected sources; a failure is the request's fault (exit 2). Its output
    (which quotes var-file lines) is masked like a build's."""
    args = [find_packer(), "validate"]
    if only:
        args.append(f"-only={','.join(only)}")
    result = _run(args + var_args(variables, var_files) + ["."], template_dir, secrets=secrets)
    if result.returncode != 0:
        raise UsageError(f"packer validate {template_dir}: {_first_lines(result.stderr + result.stdout)}")


def fmt_check(template_dir: Path) -> list[Path]:
    """``packer fmt -check``: the files that are not in canonical format."""
    result = _run([find_packer(), "fmt", "-check", "."], template_dir)
    if result.returncode != 0:
        files = [template_dir / line.strip() for line in result.stdout.splitlines() if line.strip()]
        if files:
            return files
        raise UsageError(f"packer fmt -check {template_dir}: {_first_lines(result.stderr)}")
    return []


def build(
    template_dir: Path,
    *,
    only: Sequence[str],
    variables: dict[str, str],
    var_files: Sequence[Path],
    manifest_path: Path | None,
    log_path: Path,
    timeout: float,
    on_line: Callable[[MachineLine], None] = lambda line: None,
    secrets: Sequence[str] = (),
) -> BuildResult:
    """``packer build -machine-readable``, streamed to ``on_line`` and to ``log_path``.

    ``manifest_path`` is where the template's manifest post-processor writes (bakery passes it as the
    ``manifest_path`` variable when the template declares one); without a manifest there, the records
    come from the ``artifact`` lines of the output.

    Packer cleans up its temporary builder on error (``-on-error=cleanup``); on timeout the whole
    process group gets SIGTERM (Packer then cleans up), and SIGKILL 60 s later. ``-machine-readable``
    prints sensitive variables in clear text, so every value in ``secrets`` is masked before a line
    reaches the log file or ``on_line``.
    """
    mask = redactor(secrets)
    args = [
        find_packer(),
        "build",
        "-machine-readable",
        "-color=false",
        "-on-error=cleanup",
        "-force",
    ]
    if only:
        args.append(f"-only={','.join(only)}")
    args += [*var_args(variables, var_files), "."]
    started = time.monotonic()
    errors: list[str] = []
    artifacts: dict[str, dict[str, dict[str, str]]] = {}
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            args,
            cwd=template_dir,
            env=packer_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        ) as proc,
    ):
        timed_out = threading.Event()

        def on_timeout() -> None:
            timed_out.set()
            _stop_group(proc)

        timer = threading.Timer(timeout, on_timeout)
        timer.start()
        try:
            assert proc.stdout is not None
            for raw in map(mask, proc.stdout):
                log.write(raw)
                line = parse_machine_line(raw)
                if line is None:
                    continue
                if line.type == "ui" and line.data and line.data[0] == "error":
                    errors.append(line.data[1] if len(line.data) > 1 else "")
                elif line.type == "error" and line.data:
                    errors.append(line.data[0])
                elif line.type == "artifact" and len(line.data) >= 3:
                    fields = artifacts.setdefault(line.target, {}).setdefault(line.data[0], {})
                    fields[line.data[1]] = ",".join(line.data[2:])
                on_line(line)
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                _stop_group(proc)
    seconds = time.monotonic() - started
    if timed_out.is_set():
        raise JobFailed(f"packer build timed out after {timeout:.0f} s (log: {log_path})")
    if proc.returncode != 0:
        detail = failure_detail(errors) if errors else f"exit status {proc.returncode}"
        raise JobFailed(f"packer build failed: {detail} (log: {log_path})")
    if manifest_path is not None and manifest_path.exists():
        manifest = read_manifest(manifest_path)
        run_uuid = manifest[-1].packer_run_uuid if manifest else ""
        return BuildResult([m for m in manifest if m.packer_run_uuid == run_uuid], seconds)
    return BuildResult(records_from_artifacts(artifacts, int(time.time())), seconds)


def records_from_artifacts(artifacts: dict[str, dict[str, dict[str, str]]], build_time: int = 0) -> list[ManifestBuild]:
    """One record per build from its ``artifact`` lines: the builder's own artifact (the first one with
    an id; a post-processor's artifacts come after it, e.g. docker-tag's ``repository:tag``)."""
    records = []
    for target, by_index in artifacts.items():
        builder_type, _, name = target.rpartition(".")
        builder_type = builder_type.rpartition(".")[2]  # a named build: <build>.<type>.<name>
        for _, fields in sorted(by_index.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0):
            if fields.get("id"):
                records.append(ManifestBuild(name, builder_type, fields["id"], build_time, ""))
                break
    return records


_BUILD_ERRORED = re.compile(r"^Build '([^']+)' errored(?: after [^:]*)?: (.*)$", re.DOTALL)


def failure_detail(errors: Sequence[str]) -> str:
    """One line for a failed build: Packer's own verdict, with the last output the failing step wrote.

    Packer repeats its verdict in a summary and prints every stderr line of a provisioner as an error;
    ``Build 'X' errored: ...`` is the verdict, the ``==> X: ...`` lines before it are the step's output.
    """
    for index, text in enumerate(errors):
        match = _BUILD_ERRORED.match(text.strip())
        if match:
            source, verdict = match.group(1), " ".join(match.group(2).split())
            output = [e.split(": ", 1)[-1].strip() for e in errors[:index] if e.startswith("==> ")][-2:]
            tail = f" (last output: {'; '.join(output)})" if output else ""
            return f"{source}: {verdict}{tail}"
    return _first_lines("\n".join(dict.fromkeys(errors)))


def redactor(secrets: Sequence[str]) -> Callable[[str], str]:
    """A function that replaces each secret with ``<sensitive>`` in every form packer prints it: as is,
    with newlines escaped (``\\n``, as ``-machine-readable`` and HCL diagnostics write them), JSON-quoted,
    with packer's comma escape, and each line of a multi-line secret on its own (a var file quoted line by
    line). The secrets ``subprocess_environment`` put in place are always among them."""
    values: set[str] = set()
    for secret in {*secrets, *subprocess_variables().values()}:
        if len(secret) < 4:
            continue
        forms = {
            secret,
            secret.replace("\r\n", "\\r\\n").replace("\n", "\\n"),
            secret.replace("\n", "\\n"),
            json.dumps(secret)[1:-1],
            json.dumps(json.dumps(secret)[1:-1])[1:-1],
        }
        forms |= {f.replace(",", _COMMA) for f in forms}
        values |= forms
        values |= {line.strip() for line in secret.splitlines() if len(line.strip()) >= 6}
    ordered = sorted(values, key=len, reverse=True)

    def mask(text: str) -> str:
        for value in ordered:
            text = text.replace(value, "<sensitive>")
        return text

    return mask


def _stop_group(proc: subprocess.Popen[str], grace: float = 60) -> None:
    """SIGTERM the group (Packer cleans up on it), then SIGKILL if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _first_lines(text: str, limit: int = 6) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    shown = lines[:limit]
    more = f" (+{len(lines) - limit} more lines)" if len(lines) > limit else ""
    return "; ".join(shown) + more

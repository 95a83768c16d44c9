"""``bake``: a thin shell over the flows. Exit 0 done, 1 the job failed, 2 the request was wrong.

Requests are checked here, before Prefect starts, so a bad one costs nothing and launches nothing.
Prefect is imported only by the subcommands that run a flow, to keep ``bake verify`` light.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tasks.errors import BakeryError

log = logging.getLogger("bakery")


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default="docker", help="docker or aws (default: docker)")
    parser.add_argument("--family", default="app-base", help="image family (default: app-base)")
    parser.add_argument("--version", help="image version (default: a UTC timestamp)")
    parser.add_argument("--template-dir", default="packer", help="Packer template directory (default: packer)")
    parser.add_argument("--var", action="append", default=[], metavar="K=V", help="a Packer variable")
    parser.add_argument("--var-file", action="append", default=[], metavar="F", help="a Packer variable file")
    parser.add_argument("--only", metavar="SOURCE", help="template source(s) to build, e.g. docker.base")
    parser.add_argument("--build-timeout", default="1h", metavar="D", help="packer build time limit (default: 1h)")


def _testing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", default="packer/test/image_spec.yaml", help="goss-format verification spec")
    parser.add_argument("--keep-on-failure", action="store_true", help="leave a failed test instance for debugging")
    parser.add_argument("--ttl", default="2h", metavar="D", help="when a kept/leaked instance expires (default: 2h)")
    parser.add_argument("--ssh-timeout", default="2m", metavar="D", help="how long to wait for SSH (default: 2m)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bake", description="Bake, test and promote machine images with Packer.")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON document on stdout")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="validate, build, test and stage an image")
    _selection(run)
    _testing(run)
    run.set_defaults(handler=cmd_run)

    validate = sub.add_parser("validate", help="init (>=1.7), validate, fmt -check and lint the templates")
    _selection(validate)
    validate.set_defaults(handler=cmd_validate)

    build = sub.add_parser("build", help="validate and build; the image is left at testing")
    _selection(build)
    build.set_defaults(handler=cmd_build)

    test = sub.add_parser("test", help="launch, verify and tear down a test instance of an image")
    test.add_argument("--target", default="docker", help="docker or aws (default: docker)")
    test.add_argument("--image", required=True, help="image id or family:version")
    _testing(test)
    test.set_defaults(handler=cmd_test)

    verify = sub.add_parser("verify", help="check an existing host against a spec over SSH; launches nothing")
    verify.add_argument("--host", required=True)
    verify.add_argument("--port", type=int, default=22)
    verify.add_argument("--user", required=True)
    verify.add_argument("--key", required=True, metavar="FILE", help="private key file")
    pin = verify.add_mutually_exclusive_group(required=True)
    pin.add_argument("--known-hosts", metavar="FILE", help="known_hosts file holding the host's key")
    pin.add_argument("--host-key", metavar='"TYPE BASE64"', help="the host's public key")
    verify.add_argument("--spec", required=True, help="goss-format spec")
    verify.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    verify.add_argument("--json", dest="json_file", metavar="FILE", help="write the result as JSON")
    verify.add_argument("--ssh-timeout", default="2m", metavar="D", help="how long to wait for SSH (default: 2m)")
    verify.add_argument("--command-timeout", default="30s", metavar="D", help="default per-command limit")
    verify.set_defaults(handler=cmd_verify)
    return parser


def _with_prefect() -> None:
    """Import Prefect (which sets up its log handlers), then keep user errors to one line there too."""
    import flows.pipeline  # noqa: F401

    quiet_user_error_tracebacks()


def _request(args: argparse.Namespace, **extra: Any) -> Any:
    from tasks.request import prepare

    return prepare(
        target=args.target,
        family=args.family,
        version=args.version,
        template_dir=args.template_dir,
        variables=args.var,
        var_files=args.var_file,
        only=args.only,
        build_timeout=args.build_timeout,
        **extra,
    )


def _static_checks(request: Any) -> None:
    """Template syntax and lint, spec syntax: fast, and before any engine or Prefect starts."""
    from tasks.build import static_checks

    static_checks(request)


def _load_spec(path: Any) -> None:
    from tasks.verify import load_spec

    load_spec(path)


def cmd_validate(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.build import validate

    request = _request(args)
    validate(request)
    return {"template_dir": str(request.template_dir), "sources": list(request.only), "valid": True}


def cmd_build(args: argparse.Namespace) -> dict[str, Any]:
    request = _request(args)
    _static_checks(request)
    _with_prefect()
    from flows.pipeline import image_build

    return image_build(
        target=request.target,
        family=request.family,
        version=request.version,
        template_dir=str(request.template_dir),
        variables=request.variables,
        var_files=[str(f) for f in request.var_files],
        only=",".join(request.only),
        build_timeout=args.build_timeout,
    )


def cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    request = _request(
        args, spec=args.spec, ttl=args.ttl, ssh_timeout=args.ssh_timeout, keep_on_failure=args.keep_on_failure
    )
    _static_checks(request)
    _load_spec(request.spec)
    _with_prefect()
    from flows.pipeline import image_pipeline

    return image_pipeline(
        target=request.target,
        family=request.family,
        version=request.version,
        template_dir=str(request.template_dir),
        spec=str(request.spec),
        variables=request.variables,
        var_files=[str(f) for f in request.var_files],
        only=",".join(request.only),
        keep_on_failure=request.keep_on_failure,
        ttl=args.ttl,
        ssh_timeout=args.ssh_timeout,
        build_timeout=args.build_timeout,
    )


def cmd_test(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.request import prepare

    request = prepare(
        target=args.target,
        spec=args.spec,
        ttl=args.ttl,
        ssh_timeout=args.ssh_timeout,
        keep_on_failure=args.keep_on_failure,
    )
    _load_spec(request.spec)
    _with_prefect()
    from flows.pipeline import image_test

    return image_test(
        image=args.image,
        target=request.target,
        spec=str(request.spec),
        ssh_timeout=args.ssh_timeout,
        ttl=args.ttl,
        keep_on_failure=args.keep_on_failure,
    )


class HideUserErrorTracebacks(logging.Filter):
    """A failed check or a bad request is reported in one line; Prefect would add a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], BakeryError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_user_error_tracebacks() -> None:
    """Put the filter on every handler there is (Prefect configures its own when imported)."""
    loggers = [
        logging.getLogger(),
        *(v for v in logging.root.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, HideUserErrorTracebacks) for f in handler.filters):
                handler.addFilter(HideUserErrorTracebacks())


def cmd_verify(args: argparse.Namespace) -> dict[str, Any]:
    """Exit 0 all checks pass, 1 any fails, 2 a bad request; no Prefect, so it starts fast."""
    from pathlib import Path

    from tasks import ssh
    from tasks.errors import JobFailed
    from tasks.inputs import parse_duration
    from tasks.targets.base import SshEndpoint
    from tasks.verify import load_spec, report, verify_endpoint

    ssh_timeout = parse_duration(args.ssh_timeout, "--ssh-timeout").total_seconds()
    command_timeout = parse_duration(args.command_timeout, "--command-timeout").total_seconds()
    load_spec(args.spec)
    ssh.load_private_key(args.key)
    known = ssh.host_keys_from_known_hosts(args.known_hosts, args.host, args.port) if args.known_hosts else None
    if args.host_key:
        ssh.host_key_from_text(args.host_key)
    endpoint = SshEndpoint(args.host, args.port, args.user, Path(args.key), args.host_key or "")
    result = verify_endpoint(
        endpoint, args.spec, ssh_timeout=ssh_timeout, command_timeout=command_timeout, known_keys=known
    )
    print(report.summary(result), file=sys.stderr)
    if args.junit:
        Path(args.junit).write_text(report.to_junit(result))
    if args.json_file:
        Path(args.json_file).write_text(report.to_json(result))
    if not result.passed:
        raise JobFailed(f"{result.counts['failed']} of {result.counts['total']} checks failed on {args.host}")
    return result.counts


def configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("BAKERY_LOG_LEVEL", "INFO"),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "paramiko"):  # a line per Prefect API call / SSH handshake is noise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging()
    handler: Callable[[argparse.Namespace], dict[str, Any]] = args.handler
    try:
        result = handler(args)
    except BakeryError as exc:
        print(f"bake {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"bake {args.command}: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(f"bake {args.command}: " + ", ".join(f"{k}={v}" for k, v in result.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

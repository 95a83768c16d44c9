"""``bake``: a thin shell over the flows. Exit 0 done, 1 the job failed, 2 the request was wrong;
143 on SIGTERM, 130 on Ctrl-C.

Requests are checked here, before Prefect starts, so a bad one costs nothing and launches nothing.
Prefect is imported only by the subcommands that run a flow, to keep ``bake verify`` light.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tasks.errors import BakeryError

log = logging.getLogger("bakery")

# Stopped by a signal: 128 + its number, as a shell reports a process killed by it.
INTERRUPTED_EXIT = 128 + signal.SIGINT  # Ctrl-C
TERMINATED_EXIT = 128 + signal.SIGTERM  # a worker stopping, a CI job cancelled


def _options(parser: Any, model: Any, names: Sequence[str], given_only: bool = False) -> None:
    """The options of the named ``model`` fields, from the model (tasks/request.py): its flag, help and
    metavar; repeatable for lists and mappings (``K=V``); the model's default, or None with ``given_only``
    (to tell what was given). ``dest`` is the field's name, so ``_fields`` reads them back by name."""
    for name in names:
        info = model.model_fields[name]
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        options: dict[str, Any] = {"dest": name, "help": info.description}
        if info.annotation is bool:
            options.update(action="store_true", default=None if given_only else False)
        elif isinstance(info.default, list | dict):
            options.update(action="append", default=[], metavar=extra.get("metavar"))
        else:
            options.update(default=None if given_only else info.default, metavar=extra.get("metavar"))
        parser.add_argument(str(extra["flag"]), **options)


def _fields(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    """The options given for ``model``'s fields (the ones this subcommand has)."""
    return {name: getattr(args, name) for name in model.model_fields if getattr(args, name, None) is not None}


SELECTION = (
    "target",
    "family",
    "version",
    "template_dir",
    "variables",
    "var_files",
    "only",
    "build_timeout",
    "version_var",
    "lint_ignore",
    "strict",
)
TESTING = ("spec", "spec_vars_file", "spec_vars", "keep_on_failure", "ttl", "ssh_timeout")


def _selection(parser: argparse.ArgumentParser) -> None:
    from tasks.request import PipelineParameters

    _options(parser, PipelineParameters, SELECTION)


def _registry(parser: argparse.ArgumentParser) -> None:
    from tasks.request import PipelineParameters

    _options(parser, PipelineParameters, ("registry", "registry_credentials"))


def _registry_param(args: argparse.Namespace, target: str) -> str:
    """``--registry`` (else ``$BAKERY_REGISTRY``) checked, as the flow parameter (exit 2 on a bad one);
    ``--registry-credentials-block`` only with one."""
    from tasks.request import check_registry_credentials, check_registry_for

    registry = str(check_registry_for(target, args.registry) or "")
    check_registry_credentials(registry, args.registry_credentials)
    return registry


def _spec_vars(parser: argparse.ArgumentParser, *names: str) -> None:
    """``--vars FILE`` and ``--spec-var K=V`` (the .Vars of a templated goss spec) of verify and spec."""
    parser.add_argument("--vars", dest="spec_vars_file", metavar="FILE", help="YAML/JSON variables for the spec")
    parser.add_argument(
        *(names or ("--spec-var",)),
        dest="spec_var",
        action="append",
        default=[],
        metavar="K=V",
        help="a spec variable (repeatable; a dotted K sets a nested value); overrides --vars",
    )


def _testing(parser: argparse.ArgumentParser) -> None:
    from tasks.request import PipelineParameters

    _options(parser, PipelineParameters, TESTING)


def _aws(parser: argparse.ArgumentParser) -> None:
    from tasks.request import AwsOptions

    group = parser.add_argument_group("AWS test instance (--target aws)")
    _options(group, AwsOptions, list(AwsOptions.model_fields), given_only=True)


def _aws_options(args: argparse.Namespace) -> Any:
    """The AWS options given, checked (exit 2 before anything starts); None for other targets."""
    from tasks.errors import UsageError
    from tasks.request import AwsOptions, check_aws_options, field_flag

    given = _fields(args, AwsOptions)
    if args.target != "aws":  # platform-specific: the --aws-* options configure AWS's test instances alone
        if given:
            raise UsageError(f"{field_flag(AwsOptions, next(iter(given)))}: only with --target aws")
        return None
    return check_aws_options(given)


def _blocks(parser: argparse.ArgumentParser, secrets: bool = False) -> None:
    """``--aws-credentials-block`` (and ``--secret-var`` for commands that run packer): Prefect block names."""
    parser.add_argument(
        "--aws-credentials-block",
        metavar="NAME",
        help="AWS target: credentials from this Prefect AwsCredentials block (default: the standard chain)",
    )
    if secrets:
        parser.add_argument(
            "--secret-var",
            action="append",
            default=[],
            metavar="NAME=BLOCK",
            help="Packer variable NAME from the Prefect Secret block BLOCK (to packer by its environment, masked)",
        )


def _using_blocks(args: argparse.Namespace) -> contextlib.ExitStack[bool | None]:
    """Load the blocks named (a wrong name is exit 2 before anything starts) and use them for the command's
    own AWS calls too; the flows get the names (``_block_params``) and load them where they run.

    Secret ``--var``s (named like a secret, or ``sensitive`` in the templates) go the one way secrets go:
    out of ``args.variables`` (so never a flow parameter nor ``-var``) into packer's own subprocess environment
    as ``PKR_VAR_<name>``, like a Secret block's value."""
    from tasks import packer
    from tasks.errors import UsageError

    stack = contextlib.ExitStack()
    if getattr(args, "variables", None):
        from tasks.inputs import parse_var
        from tasks.request import split_secrets

        plain, secret = split_secrets(dict(parse_var(v) for v in args.variables), _sensitive_names(args))
        args.variables = [f"{k}={v}" for k, v in plain.items()]
        if secret:
            stack.enter_context(packer.subprocess_environment(secret))
    if getattr(args, "registry_credentials", None) and hasattr(args, "registry"):  # rebuild: per family
        stack.enter_context(_registry_login(args))
    name = getattr(args, "aws_credentials_block", None)
    secret_vars = getattr(args, "secret_var", None) or []
    if not name and not secret_vars:
        return stack
    target = getattr(args, "target", None)
    # platform-specific: an AwsCredentials block is AWS's option; a command without --target (rebuild) may
    # reach AWS through it.
    if name and target not in ("aws", None):
        raise UsageError("--aws-credentials-block: only with --target aws")
    from flows.blocks import block_credentials, parse_secret_vars

    _prefect_ready()
    args.secret_vars = parse_secret_vars(secret_vars)
    stack.enter_context(block_credentials(target or "aws", name, args.secret_vars))
    return stack


def _registry_login(args: argparse.Namespace) -> contextlib.AbstractContextManager[None]:
    """``--registry-credentials-block``: checked (only with a registry: exit 2), loaded (no such block: exit
    2) and used for the command's own registry calls; the flow gets the name and loads it where it runs."""
    from flows.blocks import registry_login
    from tasks.request import check_registry_credentials, check_registry_for

    target = getattr(args, "target", None) or "docker"
    registry = check_registry_for(target, args.registry)
    block = check_registry_credentials(registry, args.registry_credentials)
    _prefect_ready()
    return registry_login(block, str(registry))


def _sensitive_names(args: argparse.Namespace) -> set[str]:
    """Variables the chosen templates mark ``sensitive`` (none when they cannot be read: the request's own
    checks say why, in one line)."""
    from pathlib import Path

    from tasks import lint
    from tasks.build import sensitive_names
    from tasks.errors import UsageError

    directory = Path(getattr(args, "template_dir", "packer"))
    if not directory.is_dir():
        return set()
    try:
        return sensitive_names(lint.load_template_set(directory))
    except UsageError:
        return set()


def _block_params(args: argparse.Namespace, secrets: bool = False) -> dict[str, Any]:
    """The block names as flow parameters (never their values)."""
    params: dict[str, Any] = {"aws_credentials": getattr(args, "aws_credentials_block", None)}
    if secrets:
        params["secret_vars"] = getattr(args, "secret_vars", None) or None
    return params


def _check_configured_to_run(target: str) -> None:
    """What a pipeline run needs from here before it starts (AWS: a region; the credentials are checked
    where they are used: Packer's and the flow's own chain, or a block)."""
    from tasks.targets.registry import platform

    platform(target).check_configured(credentials=False)


def build_parser() -> argparse.ArgumentParser:
    from tasks.inputs import DEFAULT_TARGET, TARGET_HELP
    from tasks.request import PipelineParameters

    parser = argparse.ArgumentParser(prog="bake", description="Bake, test and promote machine images with Packer.")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON document on stdout")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="validate, build, test and stage an image")
    _selection(run)
    _testing(run)
    _aws(run)
    _blocks(run, secrets=True)
    _registry(run)
    run.set_defaults(handler=cmd_run)

    validate = sub.add_parser("validate", help="init (>=1.7), validate, fmt -check and lint the templates")
    _selection(validate)
    validate.set_defaults(handler=cmd_validate)

    build = sub.add_parser("build", help="validate and build; the image is left at testing")
    _selection(build)
    _blocks(build, secrets=True)
    _registry(build)
    build.set_defaults(handler=cmd_build)

    test = sub.add_parser("test", help="launch, verify and tear down a test instance of an image")
    _options(test, PipelineParameters, ("target",))
    test.add_argument("--image", required=True, help="image id or family:version")
    _testing(test)
    _aws(test)
    _blocks(test)
    _registry(test)
    test.set_defaults(handler=cmd_test)

    verify = sub.add_parser("verify", help="check an existing host against a spec over SSH; launches nothing")
    verify.add_argument("--host", required=True)
    verify.add_argument("--port", type=int, default=22)
    verify.add_argument("--user", required=True)
    verify.add_argument("--key", required=True, metavar="FILE", help="private key file")
    pin = verify.add_mutually_exclusive_group(required=True)
    pin.add_argument("--known-hosts", metavar="FILE", help="known_hosts file holding the host's key")
    pin.add_argument("--host-key", metavar='"TYPE BASE64"', help="the host's public key")
    verify.add_argument("--spec", required=True, help="goss-format spec (file or directory)")
    _spec_vars(verify)
    verify.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    verify.add_argument("--json", dest="json_file", metavar="FILE", help="write the result as JSON")
    verify.add_argument("--ssh-timeout", default="2m", metavar="D", help="how long to wait for SSH (default: 2m)")
    verify.add_argument("--command-timeout", default="30s", metavar="D", help="default per-command limit")
    verify.set_defaults(handler=cmd_verify)

    spec = sub.add_parser("spec", help="check or render goss-format specs without a host")
    spec_sub = spec.add_subparsers(dest="spec_command", required=True, metavar="ACTION")
    check = spec_sub.add_parser("check", help="list every problem of the specs (exit 0 valid, 2 not)")
    check.add_argument("files", nargs="+", metavar="FILE", help="spec files or directories")
    _spec_vars(check, "--var", "--spec-var")
    check.set_defaults(handler=cmd_spec_check)
    render = spec_sub.add_parser("render", help="print the spec after templates and includes (like goss render)")
    render.add_argument("file", metavar="FILE")
    _spec_vars(render, "--var", "--spec-var")
    render.set_defaults(handler=cmd_spec_render)

    keep = sub.add_parser("retention", help="keep N images per family and what is protected; delete the rest")
    keep.add_argument("--target", default=DEFAULT_TARGET, help=TARGET_HELP)
    keep.add_argument("--family", help="one image family (default: every family)")
    keep.add_argument("--keep", default="5", metavar="N", help="newest images to keep per family (default: 5)")
    keep.add_argument("--apply", action="store_true", help="delete what the plan says (default: dry run)")
    keep.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")
    _blocks(keep)
    _registry(keep)
    keep.set_defaults(handler=cmd_retention)

    sweep = sub.add_parser("sweep", help="remove what crashed runs left behind (past expires-at)")
    sweep.add_argument("--target", default=DEFAULT_TARGET, help=TARGET_HELP)
    sweep.add_argument(
        "--max-age",
        metavar="D",
        help="also remove labelled resources older than D; Packer's own temporary resources and per-run key "
        "directories go when older than D (default: 24h)",
    )
    sweep.add_argument("--apply", action="store_true", help="remove them (default: dry run)")
    sweep.add_argument(
        "--packer-leftovers",
        action="store_true",
        help="aws: also Packer's untagged temporary builders, key pairs and groups older than --max-age "
        "(they may be another tool's; default: only what carries bakery's run tags)",
    )
    sweep.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")
    _blocks(sweep)
    _registry(sweep)
    sweep.set_defaults(handler=cmd_sweep)

    promote = sub.add_parser("promote", help="testing → staging, or staging → production after the soak")
    promote.add_argument("--target", default=DEFAULT_TARGET, help=TARGET_HELP)
    which = promote.add_mutually_exclusive_group(required=True)
    which.add_argument("--image", help="image id (AMI id, Docker id or family:version)")
    which.add_argument("--family", help="the family's newest image at the previous stage")
    promote.add_argument("--to", required=True, help="staging or production")
    promote.add_argument("--min-soak", default="24h", metavar="D", help="time at staging first (default: 24h)")
    promote.add_argument("--force", action="store_true", help="promote before the soak is over (recorded)")
    promote.add_argument("--publish-ssm", action="store_true", help="aws: write SSM /bakery/<family>/production")
    _blocks(promote)
    _registry(promote)
    promote.set_defaults(handler=cmd_promote)

    back = sub.add_parser("rollback", help="the previous production image becomes production again")
    back.add_argument("--target", default=DEFAULT_TARGET, help=TARGET_HELP)
    back.add_argument("--family", required=True, help="image family")
    back.add_argument("--publish-ssm", action="store_true", help="aws: write SSM /bakery/<family>/production")
    _blocks(back)
    _registry(back)
    back.set_defaults(handler=cmd_rollback)

    rebuild = sub.add_parser("rebuild", help="the weekly rebuild of every family, run now")
    rebuild.add_argument("--families", default="deployments/families.yaml", metavar="FILE", help="families file")
    rebuild.add_argument("--target", help="only this target (default: every target a family lists)")
    rebuild.add_argument("--max-parallel", type=int, default=2, metavar="N", help="builds at once (default: 2)")
    rebuild.add_argument("--force", action="store_true", help="build every family, changed or not")
    rebuild.add_argument(
        "--max-age", default="7d", metavar="D", help="build a family whose current image is older (default: 7d)"
    )
    where = rebuild.add_mutually_exclusive_group()
    where.add_argument(
        "--fan-out",
        dest="fan_out",
        action="store_const",
        const=True,
        help="each family as an image-pipeline deployment run that any worker takes (needs the deployments)",
    )
    where.add_argument(
        "--in-process",
        dest="fan_out",
        action="store_const",
        const=False,
        help="each family's pipeline in this process (the default from a shell)",
    )
    _blocks(rebuild, secrets=True)
    _options(rebuild, PipelineParameters, ("registry_credentials",))
    rebuild.set_defaults(handler=cmd_rebuild)

    alerts = sub.add_parser("alerts", help="bakery's Prefect automations (failed runs, stale productions)")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    alerts_apply = alerts_sub.add_parser("apply", help="create or replace the automations on the Prefect server")
    alerts_apply.add_argument("--file", default="deployments/automations.yaml", help="the automations file")
    alerts_apply.add_argument(
        "--notify-block",
        metavar="NAME",
        help="the notification block every alert goes through (default: the file's, bakery-alerts); "
        "with BAKERY_ALERT_WEBHOOK_URL set, a Custom Webhook block of that name is created for it",
    )
    alerts_apply.set_defaults(handler=cmd_alerts_apply)

    server = sub.add_parser("server", help="bakery's local Prefect server (used when PREFECT_API_URL is not set)")
    server.add_argument("server_command", choices=("status", "start", "stop"), metavar="status|start|stop")
    server.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")
    server.set_defaults(handler=cmd_server)
    return parser


def _prefect_ready() -> None:
    """Before a flow runs: a Prefect API to run it against. Without PREFECT_API_URL that is bakery's local
    server, started in the background on first use and reused (flows/local_server.py), not a temporary one."""
    from flows.local_server import use_local_server

    use_local_server()


def _with_prefect() -> None:
    """Import Prefect (which sets up its log handlers), then keep user errors to one line there too."""
    _prefect_ready()
    import flows.pipeline  # noqa: F401

    quiet_user_error_tracebacks()


def _request(args: argparse.Namespace, **extra: Any) -> Any:
    """The request of the options given (the model's fields this subcommand has), checked: exit 2."""
    from tasks.request import PipelineParameters, prepare

    return prepare(**_fields(args, PipelineParameters), **extra)


def _static_checks(request: Any) -> Any:
    """Template syntax and lint, spec syntax: fast, and before any engine or Prefect starts. Returns the
    request with its sources chosen, so the flow builds what was checked."""
    from tasks.build import static_checks

    return static_checks(request).request


def _load_spec(request: Any) -> None:
    from tasks.verify import load_spec

    load_spec(request.spec, request.spec_variables())


def _variables(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.verify.spec import spec_variables

    return spec_variables(args.spec_vars_file, args.spec_var)


def cmd_spec_check(args: argparse.Namespace) -> dict[str, Any]:
    """Every problem of every file on stderr, one per line (file:line: path: message); exit 2 if any."""
    from tasks.errors import UsageError
    from tasks.verify.spec import check_spec

    variables = _variables(args)
    problems: list[str] = []
    checks = 0
    for path in args.files:
        try:
            found = check_spec(path, variables)
        except UsageError as exc:
            problems.append(str(exc))
            continue
        problems.extend(str(p) for p in found)
        if not found:
            checks += 1
    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        raise UsageError(f"{len(problems)} problem(s) in {len(args.files)} spec(s)")
    return {"specs": len(args.files), "valid": checks}


def cmd_spec_render(args: argparse.Namespace) -> dict[str, Any]:
    """The rendered document on stdout (YAML; JSON with --json)."""
    import yaml

    from tasks.verify.spec import render_spec

    rendered = render_spec(args.file, _variables(args))
    if args.json:
        return dict(yaml.safe_load(rendered) or {})
    sys.stdout.write(rendered)
    return {"rendered": args.file}


def cmd_validate(args: argparse.Namespace) -> dict[str, Any]:
    """Every finding goes to the log (stderr); ``--json`` prints them all, waived ones marked."""
    from tasks.build import validate

    checked = validate(_request(args))
    for finding in checked.findings:
        log.log(logging.INFO if finding.waived else logging.WARNING, "%s", finding)
    report = checked.report()
    if args.json:
        return report
    return {k: v for k, v in report.items() if k != "findings"}


def _flow_parameters(flow: Any, request: Any) -> dict[str, Any]:
    """The checked request as the parameters ``flow`` declares (secrets were taken out by _using_blocks:
    never flow parameters)."""
    import inspect

    declared = inspect.signature(flow.fn).parameters
    return {name: value for name, value in request.as_parameters().items() if name in declared}


def cmd_build(args: argparse.Namespace) -> dict[str, Any]:
    request = _static_checks(_request(args))
    _check_configured_to_run(request.target)
    _with_prefect()
    from flows.pipeline import image_build

    return image_build(**_flow_parameters(image_build, request), **_block_params(args, secrets=True))


def cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    request = _static_checks(_request(args, aws=_aws_options(args)))
    _load_spec(request)
    _check_configured_to_run(request.target)
    _with_prefect()
    from flows.pipeline import image_pipeline

    return image_pipeline(**_flow_parameters(image_pipeline, request), **_block_params(args, secrets=True))


def cmd_test(args: argparse.Namespace) -> dict[str, Any]:
    request = _request(args, aws=_aws_options(args))
    _load_spec(request)
    _check_configured_to_run(request.target)
    _with_prefect()
    from flows.pipeline import image_test

    return image_test(image=args.image, **_flow_parameters(image_test, request), **_block_params(args))


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
    from tasks.errors import JobFailed, UsageError
    from tasks.inputs import parse_duration
    from tasks.targets.base import SshEndpoint
    from tasks.verify import load_spec, report, verify_endpoint

    ssh_timeout = parse_duration(args.ssh_timeout, "--ssh-timeout").total_seconds()
    command_timeout = parse_duration(args.command_timeout, "--command-timeout").total_seconds()
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: expected 1-65535")
    for option, report_path in (("--junit", args.junit), ("--json", args.json_file)):
        if report_path:  # found out now, not after the checks ran
            _check_writable(option, Path(report_path))
    variables = _variables(args)
    load_spec(args.spec, variables)
    ssh.load_private_key(args.key)
    known = ssh.host_keys_from_known_hosts(args.known_hosts, args.host, args.port) if args.known_hosts else None
    if args.host_key is not None:
        try:
            ssh.host_key_from_text(args.host_key)
        except UsageError as exc:
            raise UsageError(f"--host-key: {exc}") from None
    endpoint = SshEndpoint(args.host, args.port, args.user, Path(args.key), args.host_key or "")
    result = verify_endpoint(
        endpoint,
        args.spec,
        ssh_timeout=ssh_timeout,
        command_timeout=command_timeout,
        known_keys=known,
        variables=variables,
    )
    print(report.summary(result), file=sys.stderr)
    if args.junit:
        Path(args.junit).write_text(report.to_junit(result))
    if args.json_file:
        Path(args.json_file).write_text(report.to_json(result))
    if not result.passed:
        raise JobFailed(f"{result.counts['failed']} of {result.counts['total']} checks failed on {args.host}")
    return result.counts


def _check_writable(option: str, path: Any) -> None:
    """A report file that could not be written is a bad request (exit 2), checked before connecting."""
    from tasks.errors import UsageError

    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory (expected a file name)")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: no such directory {parent}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: not writable")


def cmd_retention(args: argparse.Namespace) -> dict[str, Any]:
    """Dry run unless --apply: the plan as a table on stdout (or --json), then deletions when asked."""
    from tasks.inputs import check_family, check_target
    from tasks.retention import check_keep, open_store, render

    check_target(args.target)
    if args.family:
        check_family(args.family)
    keep = check_keep(args.keep)
    registry = _registry_param(args, args.target)
    open_store(args.target, registry, args.family)  # no engine or no AWS setup: one clear line, before Prefect starts
    _prefect_ready()
    from flows.retention import image_retention

    quiet_user_error_tracebacks()
    doc = _tabled(
        args,
        render,
        lambda: image_retention(
            target=args.target,
            family=args.family,
            keep=keep,
            apply=args.apply,
            registry=registry,
            registry_credentials=args.registry_credentials or "",
            **_block_params(args),
        ),
    )
    return doc if args.json else {"applied": doc["applied"], "deleted": len(doc["deleted_images"])}


def cmd_sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Dry run unless --apply: what is labelled and past its time, as a table on stdout (or --json)."""
    from tasks.inputs import check_target, parse_duration
    from tasks.sweep import render
    from tasks.targets.registry import open_sources

    check_target(args.target)
    if args.max_age:
        parse_duration(args.max_age, "--max-age")
    registry = _registry_param(args, args.target)
    open_sources(args.target, include_packer=args.packer_leftovers)
    _prefect_ready()
    from flows.sweep import sweep_leftovers

    quiet_user_error_tracebacks()
    doc = _tabled(
        args,
        render,
        lambda: sweep_leftovers(
            target=args.target,
            max_age=args.max_age,
            apply=args.apply,
            packer_leftovers=args.packer_leftovers,
            registry=registry,
            registry_credentials=args.registry_credentials or "",
            **_block_params(args),
        ),
    )
    removed = sum(r.get("result") == "removed" for r in doc["resources"])
    return doc if args.json else {"applied": doc["applied"], "removed": removed}


def _tabled(
    args: argparse.Namespace, render: Callable[[dict[str, Any]], str], job: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run a plan/report job; without ``--json`` its table goes to stdout, also when part of it failed."""
    try:
        doc = job()
    except BakeryError as exc:
        if not args.json and exc.result is not None:
            print(render(exc.result))
        raise
    if not args.json:
        print(render(doc))
    return doc


def _check_configured(target: str) -> None:
    """A platform not usable from here (AWS: no region or no credentials): one clear line (exit 2) before
    Prefect starts."""
    from tasks.targets.registry import platform

    platform(target).check_configured()


def cmd_promote(args: argparse.Namespace) -> dict[str, Any]:
    from flows.promote import check_promote_request

    target, family, image = check_promote_request(args.target, args.family, args.image, args.to, args.min_soak)
    registry = _registry_param(args, target)
    _check_configured(target)
    if image:
        from tasks.targets.registry import platform

        platform(target).check_image(image, registry=registry)  # a bad or missing image: one line, before Prefect
    _prefect_ready()
    from flows.promote import promote

    quiet_user_error_tracebacks()
    return promote(
        target=target,
        family=family,
        image=image,
        to=args.to,
        min_soak=args.min_soak,
        force=args.force,
        publish_ssm=args.publish_ssm,
        registry=registry,
        registry_credentials=args.registry_credentials or "",
        **_block_params(args),
    )


def cmd_rollback(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.inputs import check_family, check_target

    target = check_target(args.target)
    check_family(args.family)
    registry = _registry_param(args, target)
    _check_configured(target)
    _prefect_ready()
    from flows.promote import rollback

    quiet_user_error_tracebacks()
    return rollback(
        target=target,
        family=args.family,
        publish_ssm=args.publish_ssm,
        registry=registry,
        registry_credentials=args.registry_credentials or "",
        **_block_params(args),
    )


def cmd_rebuild(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.inputs import check_target, parse_duration
    from tasks.rebuild import load_families

    if args.target:
        check_target(args.target)
    parse_duration(args.max_age, "--max-age")
    load_families(args.families)  # a bad families file is exit 2 before Prefect starts
    if args.registry_credentials:
        from flows.blocks import REGISTRY_OPTION, check_block_name

        check_block_name(args.registry_credentials, REGISTRY_OPTION)
    _prefect_ready()
    from flows.rebuild import rebuild

    quiet_user_error_tracebacks()
    return rebuild(
        families_file=args.families,
        target=args.target,
        max_parallel=args.max_parallel,
        force=args.force,
        max_age=args.max_age,
        fan_out=args.fan_out,
        registry_credentials=args.registry_credentials or "",
        **_block_params(args, secrets=True),
    )


def cmd_alerts_apply(args: argparse.Namespace) -> dict[str, Any]:
    from flows.alerts import apply, load_automations
    from flows.blocks import check_block_name

    if args.notify_block:
        check_block_name(args.notify_block, "--notify-block")
    load_automations(args.file, args.notify_block)  # a bad file is exit 2 before Prefect starts
    _prefect_ready()
    quiet_user_error_tracebacks()
    return apply(args.file, args.notify_block)


def cmd_server(args: argparse.Namespace) -> dict[str, Any]:
    """status: whether it runs and where; start: start it now (announced once); stop: stop it by its pid."""
    from flows import local_server

    if args.server_command == "start":
        record, started = local_server.ensure_running()
        return {"running": True, "started": started, "ui": record.ui_url, "api": record.api_url, "pid": record.pid}
    if args.server_command == "stop":
        stopped = local_server.stop()
        return {"stopped": stopped is not None, **({"pid": stopped.pid} if stopped else {})}
    return local_server.status()


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


class Terminated(BaseException):
    """SIGTERM (a worker stopping, a CI job cancelled): like KeyboardInterrupt, no ``except Exception`` stops it."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signal.Signals(signum).name)


@contextlib.contextmanager
def _sigterm_raises() -> Any:
    """While a command runs, SIGTERM raises ``Terminated`` in the main thread, so ``main`` says why it stopped
    and exits 143 instead of dying silently. During a flow, Prefect's own handler raises first (the flow's
    ``finally`` and crash hooks run), then it re-sends the signal to the handler it replaced: this one."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (main() called from a thread): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging()
    handler: Callable[[argparse.Namespace], dict[str, Any]] = args.handler
    try:
        with _sigterm_raises(), _using_blocks(args):
            result = handler(args)
    except Terminated:
        print(f"bake {args.command}: terminated by SIGTERM", file=sys.stderr)
        return TERMINATED_EXIT
    except BakeryError as exc:
        if args.json and exc.result is not None:
            print(json.dumps(exc.result, indent=2, default=str))  # a partial result is still one document
        print(f"bake {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"bake {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except Exception as exc:  # an engine, cloud or bug error: one line, the traceback only at DEBUG
        log.debug("bake %s failed", args.command, exc_info=True)
        print(
            f"bake {args.command}: failed: {type(exc).__name__}: {exc} (BAKERY_LOG_LEVEL=DEBUG shows where)",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(f"bake {args.command}: " + ", ".join(f"{k}={v}" for k, v in result.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

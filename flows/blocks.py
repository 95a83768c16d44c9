"""Prefect blocks bakery reads: an ``AwsCredentials`` block (prefect-aws) for the AWS clients and Packer,
``Secret`` blocks for Packer variables, and a ``DockerRegistryCredentials`` block (prefect-docker) for the
Docker target's registry (``registry_credentials`` / ``--registry-credentials-block``: the registry HTTP
client and the engine's push and pull, through ``tasks.targets.docker.image_registry.using_login``).

Each is named by a flow parameter (``aws_credentials``, ``secret_vars``, ``registry_credentials``) or a
``bake`` option (``--aws-credentials-block``, ``--secret-var NAME=BLOCK``, ``--registry-credentials-block``):
the names travel, the values never do. They are loaded where the flow runs and reach only what needs them:
boto3 clients through ``tasks.aws.using_session``, Packer through its own subprocess environment
(``tasks.packer.subprocess_environment``), masked in its output, the registry login through a context
variable the registry client and the Docker target read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from tasks import packer
from tasks.errors import UsageError
from tasks.inputs import parse_var
from tasks.request import BLOCK_NAME_PATTERN
from tasks.targets.aws import client as aws

if TYPE_CHECKING:
    from tasks.targets.docker.image_registry import Registry

# Prefect block document names: lowercase letters, digits and dashes.
BLOCK_NAME_RE = re.compile(BLOCK_NAME_PATTERN)
AWS_OPTION = "--aws-credentials-block"
SECRET_OPTION = "--secret-var"  # noqa: S105  (an option name, not a secret)
REGISTRY_OPTION = "--registry-credentials-block"


def check_block_name(name: str, option: str) -> str:
    if not BLOCK_NAME_RE.fullmatch(name):
        raise UsageError(f"{option} {name!r}: not a Prefect block name (expected lowercase letters, digits and '-')")
    return name


def parse_secret_vars(items: list[str]) -> dict[str, str]:
    """``--secret-var NAME=BLOCK`` options as ``{NAME: BLOCK}``, every name and block name checked.

    Args:
        items: the option values as given.
    """
    found: dict[str, str] = {}
    for item in items:
        name, sep, block = item.partition("=")
        if not sep or not name or not block:
            raise UsageError(f"{SECRET_OPTION} {item!r}: expected NAME=BLOCK (a Packer variable and a Secret block)")
        found[name] = block
    return check_secret_vars(found)


def check_secret_vars(secret_vars: Mapping[str, str] | None) -> dict[str, str]:
    """Each Packer variable name valid (and not one bakery sets itself), each block name valid.

    Args:
        secret_vars: ``{packer variable: Secret block name}``.
    """
    checked: dict[str, str] = {}
    for name, block in (secret_vars or {}).items():
        try:
            parse_var(f"{name}=")
        except UsageError as exc:
            raise UsageError(f"{SECRET_OPTION} {name}={block}: {exc}") from None
        checked[name] = check_block_name(str(block), f"{SECRET_OPTION} {name}=")
    return checked


def aws_session(block_name: str) -> Any:
    """The boto3 session of the ``AwsCredentials`` block ``block_name``; no such block is a UsageError.

    Args:
        block_name: the block document's name on the Prefect server.
    """
    from prefect_aws import AwsCredentials

    check_block_name(block_name, AWS_OPTION)
    try:
        block: Any = AwsCredentials.load(block_name, _sync=True)  # type: ignore[call-arg]
    except ValueError as exc:
        raise UsageError(f"{AWS_OPTION} {block_name}: {_not_found(exc, 'AwsCredentials', block_name)}") from None
    return block.get_boto3_session()


def secret_values(secret_vars: Mapping[str, str]) -> dict[str, str]:
    """``{packer variable: value}`` read from the ``Secret`` blocks named; a missing one is a UsageError.

    Args:
        secret_vars: ``{packer variable: Secret block name}``.
    """
    from prefect.blocks.system import Secret

    values: dict[str, str] = {}
    for name, block_name in check_secret_vars(secret_vars).items():
        try:
            secret: Any = Secret.load(block_name, _sync=True)  # type: ignore[call-arg]
        except ValueError as exc:
            why = _not_found(exc, "Secret", block_name)
            raise UsageError(f"{SECRET_OPTION} {name}={block_name}: {why}") from None
        values[name] = str(secret.get())
    return values


@contextmanager
def registry_login(block_name: str, registry: Registry | str) -> Iterator[None]:
    """Within this context the registry is logged in to with the ``DockerRegistryCredentials`` block
    ``block_name`` (username, password, registry_url). A missing block, or one whose ``registry_url`` is
    another host than the registry's, is a UsageError (the login is never sent to another registry).

    Args:
        block_name: the block document's name on the Prefect server.
        registry: the checked registry (``HOST[:PORT][/PREFIX]``) of the request.
    """
    from prefect_docker import DockerRegistryCredentials

    from tasks.request import check_registry_credentials
    from tasks.targets.docker.image_registry import parse_registry, registry_host, using_login

    check_registry_credentials(registry, block_name, REGISTRY_OPTION)
    host = parse_registry(str(registry)).host
    kind = "DockerRegistryCredentials"
    try:
        block: Any = DockerRegistryCredentials.load(block_name, _sync=True)
    except ValueError as exc:
        raise UsageError(f"{REGISTRY_OPTION} {block_name}: {_not_found(exc, kind, block_name)}") from None
    if registry_host(str(block.registry_url)) != host:
        raise UsageError(
            f"{REGISTRY_OPTION} {block_name}: the block's registry_url is {registry_host(str(block.registry_url))!r}, "
            f"not the registry {host!r} (its login goes to that registry only)"
        )
    with using_login(str(block.username), block.password.get_secret_value(), host, f"the Prefect block {block_name!r}"):
        yield


def _not_found(exc: ValueError, kind: str, name: str) -> str:
    if "Unable to find" in str(exc):
        return f"no {kind} block named {name!r} on the Prefect server (create it in the UI, Blocks)"
    return f"cannot load the {kind} block {name!r}: {str(exc).splitlines()[0]}"


@contextmanager
def block_credentials(
    target: str | None,
    aws_credentials: str | None = None,
    secret_vars: Mapping[str, str] | None = None,
    registry: Registry | str | None = None,
    registry_credentials: str | None = None,
) -> Iterator[None]:
    """Within this context, AWS clients use the block's session and Packer gets its credentials and the
    secret variables (``PKR_VAR_<name>``) in its own environment; without blocks nothing changes.

    Args:
        target: the target the flow works on; the AwsCredentials block is loaded only for aws.
        aws_credentials: an AwsCredentials block name; None or empty for the standard chain.
        secret_vars: ``{packer variable: Secret block name}``.
        registry: the checked registry of a Docker request (None: the local engine).
        registry_credentials: a DockerRegistryCredentials block name for that registry; None or empty
            for ``docker login`` / ``$DOCKER_CONFIG``.
    """
    with ExitStack() as stack:
        env: dict[str, str] = {}
        if aws_credentials and target == "aws":  # platform-specific: an AwsCredentials block is AWS's option
            stack.enter_context(aws.using_session(aws_session(aws_credentials)))
            env.update(aws.credentials_environment())
        if secret_vars:
            env.update({f"PKR_VAR_{name}": value for name, value in secret_values(secret_vars).items()})
        if env:
            stack.enter_context(packer.subprocess_environment(env))
        if registry_credentials:  # the registry's login: the HTTP client, the engine's push and pull
            stack.enter_context(registry_login(registry_credentials, registry or ""))
        yield

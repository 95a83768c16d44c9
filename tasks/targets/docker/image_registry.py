"""An image registry (``--registry HOST[:PORT][/PREFIX]``) and a small client of its HTTP API v2.

With a registry the Docker target pushes ``<registry>/<prefix>/<family>:<version>`` and keeps stages as
registry tags written by digest (``tasks.targets.docker.registry_stages``). The client speaks the Distribution API
(https://distribution.github.io/distribution/spec/api/) with httpx: manifests by digest and tag, blobs,
the paginated tag list. Loopback registries (127.0.0.0/8, ``localhost``, ``[::1]``) are spoken to over
plain HTTP, as Docker does; every other over HTTPS. Credentials: a login given for this context
(``using_login``: a Prefect ``DockerRegistryCredentials`` block, loaded by ``flows/blocks.py``) first, else
what ``docker login`` stored: the ``auths`` of Docker's ``config.json`` (``$DOCKER_CONFIG``, else
``~/.docker``) or the credential helper it names (``credHelpers``, ``credsStore``), else none; sent as
Basic, or used to fetch a Bearer token when the registry asks for one. Every failure is one line
(``RegistryError``, exit 1) naming the registry and what was asked; never a password.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tasks.errors import JobFailed, UsageError

ENV_VAR = "BAKERY_REGISTRY"
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_HOST_RE = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]{1,5})?$")
_IPV6_RE = re.compile(r"^\[[0-9a-f:]+\](?::[0-9]{1,5})?$")
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Registry:
    """``HOST[:PORT][/PREFIX]``: where a family's repository ``[PREFIX/]<family>`` lives."""

    host: str
    prefix: str = ""

    def __str__(self) -> str:
        return f"{self.host}/{self.prefix}" if self.prefix else self.host

    def repository(self, family: str) -> str:
        """The repository path inside the registry (API URLs use it)."""
        return f"{self.prefix}/{family}" if self.prefix else family

    def image(self, family: str) -> str:
        """The repository as Docker names it: ``HOST[:PORT]/[PREFIX/]<family>``."""
        return f"{self.host}/{self.repository(family)}"

    @property
    def loopback(self) -> bool:
        name = self.host.rsplit(":", 1)[0] if not self.host.startswith("[") else self.host[1:].split("]")[0]
        if name == "localhost":
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    @property
    def base_url(self) -> str:
        return f"{'http' if self.loopback else 'https'}://{self.host}"


def parse_registry(value: str, where: str = "--registry") -> Registry:
    """``HOST[:PORT][/PREFIX]`` checked; anything else is one UsageError naming ``where`` and the value."""
    text = value.strip()
    problem = ""
    host, _, prefix = text.partition("/")
    if not text:
        problem = "empty"
    elif "://" in text:
        problem = "no scheme: give HOST[:PORT][/PREFIX] (loopback registries use HTTP, others HTTPS)"
    elif not (_HOST_RE.fullmatch(host) or _IPV6_RE.fullmatch(host)):
        problem = "not a host name with an optional :PORT (lowercase letters, digits, '.', '-')"
    elif ":" in host.rsplit("]", 1)[-1] and not 0 < int(host.rsplit(":", 1)[1]) < 65536:
        problem = "port out of range 1-65535"
    elif prefix and not all(_PATH_COMPONENT_RE.fullmatch(part) for part in prefix.split("/")):
        problem = "PREFIX must be lowercase path components (letters, digits, '.', '_', '-') separated by '/'"
    if problem:
        raise UsageError(f"{where} {value!r}: {problem}")
    return Registry(host=host, prefix=prefix)


def resolve_registry(value: str | None, where: str = "--registry") -> Registry | None:
    """The registry of a request: ``value`` (an option, a parameter, a families.yaml field) when given,
    else ``$BAKERY_REGISTRY``, else none (the local engine only)."""
    if value:
        return parse_registry(value, where)
    from_env = os.environ.get(ENV_VAR, "")
    return parse_registry(from_env, ENV_VAR) if from_env.strip() else None


class RegistryError(JobFailed):
    """A registry call that failed; the message is one line."""


@dataclass(frozen=True)
class Manifest:
    body: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        data = json.loads(self.body)
        return data if isinstance(data, dict) else {}


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Login:
    """A registry login given for a context (``using_login``); ``source`` names where it came from (a
    block's name) for messages; the password is never in its ``repr``."""

    host: str
    username: str
    password: str = field(repr=False)
    source: str = ""

    def basic(self) -> str:
        """The ``auth`` value: base64 ``user:password``."""
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def auth_config(self) -> dict[str, str]:
        """The engine's ``auth_config`` for a push or pull (docker-py sends it in the X-Registry-Auth header)."""
        return {"username": self.username, "password": self.password}


_LOGIN: ContextVar[Login | None] = ContextVar("bakery_registry_login", default=None)


def registry_host(url: str) -> str:
    """The ``HOST[:PORT]`` of a registry URL as a login names it (``https://host:5000/v2/`` → ``host:5000``)."""
    return re.sub(r"^[a-z]+://", "", url.strip().lower()).split("/", 1)[0]


@contextlib.contextmanager
def using_login(username: str, password: str, host: str, source: str = "") -> Iterator[None]:
    """Within this context (and threads started with a copy of it) the registry ``host`` is logged in to
    as ``username``: the HTTP client and the engine's push and pull use it before any ``docker login``.

    Args:
        username: the registry user.
        password: its password or token; it reaches only the registry (an HTTP header, the engine's
            ``X-Registry-Auth``), never a log, a message or a parameter.
        host: ``HOST[:PORT]`` of the registry the login is for; other registries do not get it.
        source: what gave the login, for messages (``the Prefect block 'name'``).
    """
    token = _LOGIN.set(Login(registry_host(host), username, password, source))
    try:
        yield
    finally:
        _LOGIN.reset(token)


def context_login(host: str) -> Login | None:
    """The login ``using_login`` gave for ``host`` in this context, if any."""
    found = _LOGIN.get()
    return found if found is not None and found.host == registry_host(host) else None


def credentials(host: str) -> tuple[str | None, str]:
    """``(basic auth or None, source)`` for ``host``: the context's login first (``source`` names what gave
    it), then Docker's ``config.json`` (``source`` empty), else ``(None, "")``: anonymous."""
    given = context_login(host)
    if given is not None:
        return given.basic(), given.source or "the login given"
    return docker_config_auth(host), ""


def docker_config_auth(host: str) -> str | None:
    """The login (base64 ``user:password``) ``docker login`` stored for ``host``, if any, found as Docker
    finds it: the credential helper ``config.json`` names for ``host`` (``credHelpers``), else the one it
    names for every registry (``credsStore``), else the ``auth`` of its ``auths`` entry."""
    directory = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(config, dict):
        return None
    helpers = config.get("credHelpers")
    helper = (helpers.get(host) if isinstance(helpers, dict) else None) or config.get("credsStore")
    if helper and isinstance(helper, str):
        return helper_auth(helper, host)
    auths = config.get("auths")
    for key, entry in (auths if isinstance(auths, dict) else {}).items():
        name = re.sub(r"^https?://", "", key).rstrip("/").removesuffix("/v1").removesuffix("/v2")
        if name == host and isinstance(entry, dict) and entry.get("auth"):
            return str(entry["auth"])
    return None


# A credential helper may ask for a keyring's passphrase or wait on a locked one: bounded.
HELPER_TIMEOUT = 30.0


def helper_auth(helper: str, host: str, timeout: float | None = None) -> str | None:
    """What ``docker-credential-<helper> get`` stored for ``host``, as base64 ``user:password``; None when
    it has nothing for ``host``.

    The helper protocol (docker/docker-credential-helpers): the host on its stdin, a JSON object with
    ``Username`` and ``Secret`` on its stdout; the secret never reaches a command line, and the helper's
    output never reaches a message (a failing helper may print what it holds). A helper that is missing,
    fails, hangs, answers something else or holds an identity token (an OAuth refresh token, which the
    registry API does not take as a password) is a ``RegistryError`` naming it."""
    program = f"docker-credential-{helper}"

    def failed(why: str) -> RegistryError:
        return RegistryError(f"registry {host}: reading the login docker stored with {program} failed: {why}")

    executable = shutil.which(program)
    if executable is None:
        raise failed(f"{program} is not installed or not on PATH (config.json names it)")
    try:
        done = subprocess.run(
            [executable, "get"],
            input=host.encode(),
            capture_output=True,
            timeout=timeout if timeout is not None else HELPER_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise failed(f"no answer within {timeout if timeout is not None else HELPER_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise failed(exc.strerror or type(exc).__name__) from None
    if done.returncode != 0:
        if b"credentials not found" in done.stdout.lower() + done.stderr.lower():
            return None  # the helpers' own words for "nothing stored for this host"
        raise failed(f"it exited with status {done.returncode}")
    try:
        found = json.loads(done.stdout)
        username, secret = found["Username"], found["Secret"]
    except (ValueError, KeyError, TypeError):
        raise failed("its answer is not a login (a JSON object with Username and Secret)") from None
    if not isinstance(username, str) or not isinstance(secret, str):
        raise failed("its answer is not a login (a JSON object with Username and Secret)")
    if not username and not secret:
        return None  # docker-credential-pass answers an empty login for a host it has nothing for
    if username == "<token>":
        raise failed(
            "it holds an identity token (an OAuth refresh token), which bakery cannot use: log in with a "
            "username and password or token, or name a DockerRegistryCredentials block"
        )
    return base64.b64encode(f"{username}:{secret}".encode()).decode()


def _error_detail(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        errors = []
    if errors and isinstance(errors[0], dict):
        first = errors[0]
        return f"{first.get('code', '')} {first.get('message', '')}".strip()
    return response.reason_phrase or ""


def describe_failure(
    registry: Registry, doing: str, response: httpx.Response, logged_in: bool | None = None, source: str = ""
) -> str:
    """One line for a failed call: the status mapped to what a person does about it (``logged_in``: whether
    credentials for the registry were found, when known; ``source``: a block that gave them, by name)."""
    status = response.status_code
    detail = _error_detail(response)
    if status == 401 and logged_in and source:
        why = f"the login of {source} was refused (check its username and password)"
    elif status == 401 and logged_in is False:
        why = f"authentication required and no login stored for {registry.host} (docker login, or DOCKER_CONFIG)"
    elif status == 401 and logged_in:
        why = f"the stored login for {registry.host} was refused (docker login {registry.host} again)"
    elif status == 401:
        why = f"authentication required or refused (docker login {registry.host}, or DOCKER_CONFIG)"
    elif status == 403:
        why = "denied: the credentials may not do this"
    elif status == 404:
        why = f"not found ({detail})"
    elif status == 405 and doing.startswith("deleting"):
        why = "the registry does not allow deletes (Distribution: storage: delete: enabled: true)"
    elif status == 405:
        why = f"not allowed ({detail})"
    else:
        why = f"HTTP {status} ({detail})"
    return f"registry {registry}: {doing}: {why}"


class RegistryClient:
    """The Distribution HTTP API v2 of one registry, with the credentials found where it is made
    (``credentials``: the context's login, else ``docker login``'s)."""

    def __init__(self, registry: Registry, timeout: float = 30) -> None:
        self.registry = registry
        self._basic, self._source = credentials(registry.host)  # first: a failing credential helper raises
        self.http = httpx.Client(base_url=registry.base_url, timeout=timeout, follow_redirects=True)
        self._bearer: str | None = None

    def close(self) -> None:
        self.http.close()

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self._bearer:
            headers["Authorization"] = f"Bearer {self._bearer}"
        elif self._basic:
            headers["Authorization"] = f"Basic {self._basic}"
        return headers

    def request(
        self, method: str, path: str, doing: str, ok: tuple[int, ...] = (200,), **kwargs: Any
    ) -> httpx.Response:
        """One call; a connection failure or an unexpected status is a RegistryError naming ``doing``."""
        extra = kwargs.pop("headers", None)
        for attempt in (1, 2):
            try:
                response = self.http.request(method, path, headers=self._headers(extra), **kwargs)
            except httpx.HTTPError as exc:
                raise RegistryError(
                    f"registry {self.registry}: {doing}: unreachable at {self.registry.base_url} ({exc})"
                ) from None
            if response.status_code == 401 and attempt == 1 and self._fetch_token(response):
                continue
            break
        if response.status_code not in ok:
            raise RegistryError(describe_failure(self.registry, doing, response, self._basic is not None, self._source))
        return response

    def _fetch_token(self, challenge: httpx.Response) -> bool:
        """A Bearer token for a ``WWW-Authenticate: Bearer realm=…`` challenge, with the stored login."""
        header = challenge.headers.get("www-authenticate", "")
        if not header.lower().startswith("bearer "):
            return False
        params = dict(re.findall(r'(\w+)="([^"]*)"', header))
        realm = params.pop("realm", "")
        if not realm:
            return False
        auth = {"Authorization": f"Basic {self._basic}"} if self._basic else {}
        try:
            answer = httpx.get(realm, params=params, headers=auth, timeout=self.http.timeout)
            token = answer.json().get("token") or answer.json().get("access_token")
        except (httpx.HTTPError, ValueError, AttributeError):
            return False
        if not token:
            return False
        self._bearer = str(token)
        return True

    def check(self) -> None:
        """The registry answers the v2 API (``GET /v2/``)."""
        self.request("GET", "/v2/", "checking the API")

    def manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest ``reference`` (a tag or a digest) names, as stored (bytes and media type)."""
        response = self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            f"reading {repository}:{reference}" if ":" not in reference else f"reading {repository}@{reference}",
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )
        digest = response.headers.get("docker-content-digest") or sha256_digest(response.content)
        media_type = response.headers.get("content-type", "").split(";")[0] or MANIFEST_TYPES[0]
        return Manifest(body=response.content, media_type=media_type, digest=digest)

    def digest_of(self, repository: str, tag: str) -> str | None:
        """The digest ``repository:tag`` points at; ``None`` when no such tag."""
        response = self.request(
            "HEAD",
            f"/v2/{repository}/manifests/{tag}",
            f"reading {repository}:{tag}",
            ok=(200, 404),
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )
        if response.status_code == 404:
            return None
        return response.headers.get("docker-content-digest") or self.manifest(repository, tag).digest

    def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str:
        """Store ``manifest`` under ``tag``; returns the digest the registry reports (the same bytes)."""
        response = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            f"writing {repository}:{tag}",
            ok=(201,),
            content=manifest.body,
            headers={"Content-Type": manifest.media_type},
        )
        return response.headers.get("docker-content-digest") or manifest.digest

    def tag(self, repository: str, digest: str, tag: str) -> None:
        """Point ``repository:tag`` at ``digest``: the manifest read by digest and stored under the tag."""
        found = self.manifest(repository, digest)
        written = self.put_manifest(repository, tag, found)
        if written != digest:
            raise RegistryError(
                f"registry {self.registry}: writing {repository}:{tag}: stored as {written}, expected {digest}"
            )

    def tags(self, repository: str, page_size: int = 100) -> list[str]:
        """Every tag of ``repository`` (empty when it does not exist yet), following ``Link`` pages."""
        found: list[str] = []
        url: str | None = f"/v2/{repository}/tags/list?n={page_size}"
        while url:
            response = self.request("GET", url, f"listing the tags of {repository}", ok=(200, 404))
            if response.status_code == 404:
                return []
            found.extend(response.json().get("tags") or [])
            url = next_page(response.headers.get("link", ""))
        return found

    def families(self) -> list[str]:
        """Every repository ``[PREFIX/]<name>`` of the registry's catalog, as ``<name>`` (its family)."""
        lead = f"{self.registry.prefix}/" if self.registry.prefix else ""
        names: list[str] = []
        url: str | None = "/v2/_catalog?n=100"
        while url:
            response = self.request("GET", url, "listing the repositories (catalog)")
            for repository in response.json().get("repositories") or []:
                rest = repository[len(lead) :] if repository.startswith(lead) else None
                if rest and "/" not in rest:
                    names.append(rest)
            url = next_page(response.headers.get("link", ""))
        return names

    def delete_manifest(self, repository: str, digest: str) -> None:
        self.request("DELETE", f"/v2/{repository}/manifests/{digest}", f"deleting {repository}@{digest}", ok=(202,))

    def upload_blob(self, repository: str, data: bytes) -> str:
        """A blob uploaded in one go (monolithic upload); returns its digest."""
        digest = sha256_digest(data)
        doing = f"uploading a blob to {repository}"
        started = self.request("POST", f"/v2/{repository}/blobs/uploads/", doing, ok=(202,))
        location = started.headers.get("location", "")
        separator = "&" if "?" in location else "?"
        self.request(
            "PUT",
            f"{location}{separator}digest={digest}",
            doing,
            ok=(201,),
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return digest

    def blob(self, repository: str, digest: str) -> bytes:
        return self.request("GET", f"/v2/{repository}/blobs/{digest}", f"reading blob {digest[:19]}").content


def next_page(link: str) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header (RFC 5988), as the registry gives it; else ``None``."""
    for part in link.split(","):
        match = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', part)
        if match:
            return match.group(1)
    return None

"""Static checks of a Packer HCL2 template set: the seed's "common gotchas", each with file and line.

The templates are parsed with python-hcl2's lark grammar (which keeps line numbers) into a small
``Block`` model; each rule is a plain function over the builds and sources of the set.

Every finding has a severity (``RULES``): an *error* is something that cannot work (Packer would fail
on it), a *warning* one of the seed's gotchas, which a template may have reasons to differ on. A warning
is waived by ``# bakery:ignore <rule>`` on its line or the line above, or per run (``--lint-ignore``);
a waived finding is still reported, marked as waived. ``--strict`` makes every unwaived warning an error.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from lark import Token, Tree
from lark.exceptions import UnexpectedInput

from tasks import hcl
from tasks.errors import UsageError
from tasks.inputs import read_text_file

CLOUD_BUILDERS = ("amazon-ebs", "azure-arm", "googlecompute")
# Where each builder keeps the tags/labels that carry an image's version.
VERSION_TAG_FIELDS = {
    "amazon-ebs": "tags",
    "azure-arm": "azure_tags",
    "googlecompute": "image_labels",
}
CLOUD_INIT_MARKERS = (
    "/var/lib/cloud/instance/boot-finished",
    "cloud-init status --wait",
)
CLEANUP_MARKERS = (
    "apt-get clean",
    "yum clean",
    "dnf clean",
    "rm -rf /tmp/",
    ".bash_history",
)
# Generalization (Azure waagent deprovision, Windows sysprep) must be the very last step: it removes
# the build user, so it may follow the cleanup.
GENERALIZE_MARKERS = ("waagent -force -deprovision", "sysprep")
# Provisioners that run on the machine running Packer, so also with communicator = "none".
LOCAL_PROVISIONERS = (("shell-local",), ("breakpoint",))

Severity = Literal["error", "warning"]
# Every rule, its severity and what it checks. Errors are what cannot work; warnings the seed's gotchas.
RULES: dict[str, tuple[Severity, str]] = {
    "unknown-source": ("error", "a build lists a source that no source block defines"),
    "no-communicator": ("error", 'a provisioner that needs the machine on a source with communicator = "none"'),
    "cloud-init-wait": ("warning", "the first provisioner of a cloud source waits for cloud-init"),
    "cleanup-last": ("warning", "the last provisioner cleans up (package caches, /tmp, shell history)"),
    "encrypt-boot": ("warning", "an AMI is built with encrypt_boot = true"),
    "version-tag": ("warning", "the image carries its version in a tag or label"),
    "fmt": ("warning", "the files are in packer fmt's canonical format"),
}
_WAIVER = re.compile(r"(?:#|//)\s*bakery:ignore\s+([A-Za-z0-9_,\s-]+)")


@dataclass(frozen=True)
class Attr:
    line: int
    text: str
    strings: tuple[str, ...]
    keys: tuple[str, ...]


@dataclass
class Block:
    type: str
    labels: tuple[str, ...]
    file: Path
    line: int
    attrs: dict[str, Attr] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)

    def children(self, block_type: str) -> list[Block]:
        return [b for b in self.blocks if b.type == block_type]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Finding:
    """One rule broken at ``file:line`` (line 0: the file or directory as a whole).

    ``waived`` says how a warning was waived (``# bakery:ignore`` or ``--lint-ignore``), empty when not.
    """

    file: Path
    line: int
    rule: str
    message: str
    waived: str = ""

    @property
    def severity(self) -> Severity:
        return RULES[self.rule][0]

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        waived = f" (waived by {self.waived})" if self.waived else ""
        return f"{where}: {self.severity}: {self.message} [{self.rule}]{waived}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.file),
            "line": self.line,
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
            "waived": self.waived or None,
        }


@dataclass
class TemplateSet:
    """Every top-level block of a directory's ``*.pkr.hcl`` files."""

    directory: Path
    blocks: list[Block]

    def of_type(self, block_type: str) -> list[Block]:
        return [b for b in self.blocks if b.type == block_type]

    def source(self, name: str) -> Block | None:
        """``amazon-ebs.base`` (or ``source.amazon-ebs.base``) to its source block."""
        kind, _, label = name.removeprefix("source.").partition(".")
        return next((b for b in self.of_type("source") if b.labels == (kind, label)), None)

    def resolve(self, attr: Attr | None) -> Attr | None:
        """Follow ``local.NAME`` to the value of that local."""
        if attr is None or not attr.text.startswith("local."):
            return attr
        name = attr.text.removeprefix("local.")
        for block in self.of_type("locals"):
            if name in block.attrs:
                return block.attrs[name]
        return attr

    @property
    def variables(self) -> dict[str, Block]:
        return {b.labels[0]: b for b in self.of_type("variable") if b.labels}


def _text(node: Tree | Token) -> str:
    if isinstance(node, Token):
        return str(node)
    return "".join(_text(child) for child in node.children)


def _first_line(node: Tree | Token) -> int:
    if isinstance(node, Token):
        return node.line or 0
    for child in node.children:
        line = _first_line(child)
        if line:
            return line
    return 0


def _string_value(node: Tree) -> str:
    return "".join(_text(child) for child in node.children if not (isinstance(child, Token) and child == '"'))


def _attr(node: Tree) -> tuple[str, Attr]:
    name = _text(node.children[0]).strip()
    value = node.children[-1]
    strings = tuple(_string_value(s) for s in value.find_data("string")) if isinstance(value, Tree) else ()
    keys: tuple[str, ...] = ()
    if isinstance(value, Tree):
        keys = tuple(_text(k).strip().strip('"') for k in value.find_data("object_elem_key"))
    return name, Attr(_first_line(node), _text(value).strip(), strings, keys)


def _block(node: Tree, file: Path) -> Block:
    block_type = _text(node.children[0]).strip()
    labels = tuple(
        _string_value(c) if c.data == "string" else _text(c).strip()
        for c in node.children[1:]
        if isinstance(c, Tree) and c.data in ("string", "identifier")
    )
    block = Block(block_type, labels, file, _first_line(node))
    body = next((c for c in node.children if isinstance(c, Tree) and c.data == "body"), None)
    for child in body.children if body is not None else []:
        if isinstance(child, Tree) and child.data == "attribute":
            name, attr = _attr(child)
            block.attrs[name] = attr
        elif isinstance(child, Tree) and child.data == "block":
            block.blocks.append(_block(child, file))
    return block


def parse_file(path: Path) -> list[Block]:
    """Top-level blocks of one HCL2 file; a syntax error is a UsageError naming file:line:column."""
    text = read_text_file(path, f"{path}: template")
    try:
        tree = hcl.parse_tree(text)
    except UnexpectedInput as exc:
        raise UsageError(f"{path}:{exc.line}:{exc.column}: HCL syntax error near {_near(text, exc)!r}") from exc
    body = next(c for c in tree.children if isinstance(c, Tree) and c.data == "body")
    return [_block(c, path) for c in body.children if isinstance(c, Tree) and c.data == "block"]


def _near(text: str, exc: UnexpectedInput) -> str:
    lines = text.splitlines()
    return lines[exc.line - 1].strip() if 0 < exc.line <= len(lines) else ""


def load_template_set(directory: Path) -> TemplateSet:
    if not directory.is_dir():
        raise UsageError(f"--template-dir {directory}: not a directory")
    files = sorted(directory.glob("*.pkr.hcl"))
    if not files:
        raise UsageError(f"--template-dir {directory}: no *.pkr.hcl files in it")
    return TemplateSet(directory, [block for f in files for block in parse_file(f)])


def applies_to(block: Block, source: str) -> bool:
    """Whether a provisioner/post-processor runs for ``source`` (``only``/``except``)."""
    only = block.attrs.get("only")
    if only is not None and source not in only.strings:
        return False
    excluded = block.attrs.get("except")
    return not (excluded is not None and source in excluded.strings)


@dataclass(frozen=True)
class BuildSource:
    """One source a build runs: listed in ``sources = [...]`` or as a ``source "source.T.L" {}`` block.

    ``name`` is how provisioners' ``only``/``except`` name it (``type.name``; a build-level ``name``
    renames it), ``ref`` the source block it uses (``type.label``), ``build_name`` the build's own name.
    """

    name: str
    ref: str
    build_name: str
    line: int

    @property
    def type(self) -> str:
        return self.name.partition(".")[0]

    @property
    def qualified(self) -> str:
        """What ``packer build -only`` matches: ``<build name>.<type>.<name>`` when the build is named."""
        return f"{self.build_name}.{self.name}" if self.build_name else self.name


def build_sources(build: Block) -> list[BuildSource]:
    name_attr = build.attrs.get("name")
    build_name = name_attr.strings[0] if name_attr and name_attr.strings else ""
    listed = build.attrs.get("sources")
    found = (
        [
            BuildSource(s.removeprefix("source."), s.removeprefix("source."), build_name, listed.line)
            for s in listed.strings
        ]
        if listed
        else []
    )
    for block in build.children("source"):
        ref = block.labels[0].removeprefix("source.") if block.labels else ""
        renamed = block.attrs.get("name")
        name = f"{ref.partition('.')[0]}.{renamed.strings[0]}" if renamed and renamed.strings else ref
        found.append(BuildSource(name, ref, build_name, block.line))
    return found


def all_build_sources(templates: TemplateSet) -> list[BuildSource]:
    return [s for build in templates.of_type("build") for s in build_sources(build)]


def matches(source: BuildSource, only: Sequence[str]) -> bool:
    """Whether ``--only`` selects ``source``: by its ``-only`` name or its plain ``type.name``."""
    return not only or source.qualified in only or source.name in only


def provisioners_for(build: Block, source: str) -> list[Block]:
    return [p for p in build.children("provisioner") if applies_to(p, source)]


def _shell_text(block: Block) -> str:
    return " ".join(a.text for name, a in block.attrs.items() if name in ("inline", "script", "scripts"))


def _is_cloud_init_wait(block: Block) -> bool:
    return block.labels[:1] == ("shell",) and any(m in _shell_text(block) for m in CLOUD_INIT_MARKERS)


def _is_cleanup(block: Block) -> bool:
    return block.labels[:1] == ("shell",) and any(m in _shell_text(block) for m in CLEANUP_MARKERS)


def _is_generalize(block: Block) -> bool:
    return block.labels[:1] in (("shell",), ("powershell",)) and any(
        m in _shell_text(block) for m in GENERALIZE_MARKERS
    )


def lint(templates: TemplateSet, only: Sequence[str] = ()) -> list[Finding]:
    """The seed's gotchas for the selected sources (all when ``only`` is empty)."""
    findings: list[Finding] = []
    for build in templates.of_type("build"):
        for selected in build_sources(build):
            if not matches(selected, only):
                continue
            source = templates.source(selected.ref)
            if source is None:
                findings.append(
                    Finding(
                        build.file,
                        selected.line,
                        "unknown-source",
                        f"build lists source.{selected.ref}, which no source block defines",
                    )
                )
                continue
            findings += _source_findings(templates, build, source, selected.name)
    return findings


def _no_communicator(source: Block) -> bool:
    attr = source.attrs.get("communicator")
    return attr is not None and attr.strings == ("none",)


def _communicator_findings(steps: list[Block], name: str) -> list[Finding]:
    """``communicator = "none"``: nothing runs inside the machine, so the cloud-init and cleanup rules do
    not apply; a provisioner that needs the machine would only fail (after Packer's 5-minute upload retry)."""
    return [
        Finding(
            step.file,
            step.line,
            "no-communicator",
            f'{name}: communicator = "none" cannot run the {step.labels[0]} provisioner '
            "(only shell-local and breakpoint run without one)",
        )
        for step in steps
        if step.labels[:1] not in LOCAL_PROVISIONERS
    ]


def _source_findings(templates: TemplateSet, build: Block, source: Block, name: str) -> list[Finding]:
    findings: list[Finding] = []
    builder = source.labels[0]
    steps = provisioners_for(build, name)
    if _no_communicator(source):
        return _communicator_findings(steps, name) + _image_findings(templates, build, source, name)
    if builder in CLOUD_BUILDERS and not (steps and _is_cloud_init_wait(steps[0])):
        where = steps[0] if steps else build
        findings.append(
            Finding(
                where.file,
                where.line,
                "cloud-init-wait",
                f"{name}: the first provisioner must wait for cloud-init (/var/lib/cloud/instance/boot-finished)",
            )
        )
    configuring = steps[:-1] if steps and _is_generalize(steps[-1]) else steps
    if not configuring or not _is_cleanup(configuring[-1]):
        where = configuring[-1] if configuring else build
        findings.append(
            Finding(
                where.file,
                where.line,
                "cleanup-last",
                f"{name}: the last provisioner must clean up (package caches, /tmp, shell history)",
            )
        )
    return findings + _image_findings(templates, build, source, name)


def _image_findings(templates: TemplateSet, build: Block, source: Block, name: str) -> list[Finding]:
    findings = _version_findings(templates, build, source, name)
    if source.labels[0] == "amazon-ebs" and source.attrs.get("encrypt_boot", Attr(0, "false", (), ())).text != "true":
        findings.append(
            Finding(
                source.file,
                source.line,
                "encrypt-boot",
                f"{name}: AMI without encrypt_boot = true",
            )
        )
    return findings


def _version_findings(templates: TemplateSet, build: Block, source: Block, name: str) -> list[Finding]:
    builder = source.labels[0]
    field_name = VERSION_TAG_FIELDS.get(builder)
    if field_name is not None:
        attr = templates.resolve(source.attrs.get(field_name))
        if attr is None or not any(k.lower() == "version" for k in attr.keys):
            return [
                Finding(
                    source.file,
                    attr.line if attr else source.line,
                    "version-tag",
                    f"{name}: image without a version tag ({field_name} needs a Version key)",
                )
            ]
        return []
    if builder == "docker":  # platform-specific: Packer's docker builder type (a template's, not --target)
        tagged = any(
            applies_to(pp, name)
            and "image_version" in pp.attrs.get("tags", pp.attrs.get("tag", Attr(0, "", (), ()))).text
            for pp in _post_processors(build)
        )
        changes = source.attrs.get("changes")
        labelled = changes is not None and any(
            c.startswith("LABEL") and "version=" in c.lower() for c in (_text_of(s) for s in changes.strings)
        )
        if not (tagged or labelled):
            return [
                Finding(
                    source.file,
                    source.line,
                    "version-tag",
                    f"{name}: the template neither tags the image with var.image_version (docker-tag) nor labels "
                    'it with a version (changes = ["LABEL version=..."]); bakery tags and labels it after the build',
                )
            ]
    return []


def _text_of(value: str) -> str:
    return value.replace('\\"', '"').strip()


def _post_processors(build: Block) -> list[Block]:
    direct = build.children("post-processor")
    nested = [pp for group in build.children("post-processors") for pp in group.children("post-processor")]
    return direct + nested


def provisioner_count(templates: TemplateSet, source: str) -> int:
    """How many provisioners run for ``source`` (a ``-only`` name): the denominator of build progress."""
    return sum(
        len(provisioners_for(build, s.name))
        for build in templates.of_type("build")
        for s in build_sources(build)
        if matches(s, (source,))
    )


def check_rule_names(names: Sequence[str], option: str = "--lint-ignore") -> tuple[str, ...]:
    """Rule names to waive per run: each must be a warning rule (an error cannot work, so it cannot be
    waived); several may be given comma-separated."""
    rules = tuple(n.strip() for name in names for n in name.split(",") if n.strip())
    for rule in rules:
        if rule not in RULES:
            known = ", ".join(r for r, (severity, _) in RULES.items() if severity == "warning")
            raise UsageError(f"{option} {rule}: no such lint rule (rules that can be waived: {known})")
        if RULES[rule][0] == "error":
            raise UsageError(f"{option} {rule}: an error (it cannot work), not a warning, so it cannot be waived")
    return rules


def waivers_in(path: Path, line: int) -> set[str]:
    """Rules waived by a ``# bakery:ignore <rule>[, <rule>]`` comment on ``line`` or the line above."""
    if line <= 0:
        return set()
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return set()
    waived: set[str] = set()
    for text in lines[max(line - 2, 0) : line]:
        match = _WAIVER.search(text)
        if match:
            waived.update(r for r in re.split(r"[\s,]+", match.group(1)) if r)
    return waived


def waive(findings: Sequence[Finding], ignore: Collection[str] = ()) -> list[Finding]:
    """Mark each warning waived by a comment at its line or by ``ignore`` (``--lint-ignore``)."""
    marked = []
    for finding in findings:
        if finding.severity == "warning" and finding.rule in waivers_in(finding.file, finding.line):
            finding = replace(finding, waived="# bakery:ignore")
        elif finding.severity == "warning" and finding.rule in ignore:
            finding = replace(finding, waived="--lint-ignore")
        marked.append(finding)
    return marked


def blocking(findings: Sequence[Finding], strict: bool = False) -> list[Finding]:
    """The findings that stop a run: errors, and with ``strict`` every warning not waived."""
    return [f for f in findings if not f.waived and (f.severity == "error" or strict)]

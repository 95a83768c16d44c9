"""``bake alerts apply``: bakery's Prefect automations (``deployments/automations.yaml``) on the server.

Each automation is created, or replaced when one of the same name exists, so applying twice leaves one of
each. A send-notification action names its block with ``block_document_name`` (resolved here to the
server's id). With ``BAKERY_ALERT_WEBHOOK_URL`` set, the notification block is first created or updated as
a Custom Webhook posting ``{"subject": ..., "body": ...}`` to that URL (an environment variable, not an
option: a webhook URL often carries a token).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tasks.errors import UsageError
from tasks.inputs import read_text_file

DEFAULT_FILE = "deployments/automations.yaml"
DEFAULT_BLOCK = "bakery-alerts"
WEBHOOK_URL_VARIABLE = "BAKERY_ALERT_WEBHOOK_URL"
PLACEHOLDER_ID = "00000000-0000-0000-0000-000000000000"  # to check a file's schema before any block is looked up


def load_automations(path: str | Path, notify_block: str | None = None) -> list[dict[str, Any]]:
    """The automations of ``path``, each checked against Prefect's schema (with a placeholder block id).

    Args:
        path: the automations file (Prefect's format; a top-level ``automations:`` list).
        notify_block: a block name that replaces every ``block_document_name``; None keeps the file's.
    """
    from prefect.events.schemas.automations import AutomationCore
    from pydantic import ValidationError

    source = Path(path)
    try:
        data = yaml.safe_load(read_text_file(source, f"--file {source}"))
    except yaml.YAMLError as exc:
        raise UsageError(f"--file {source}: not valid YAML ({exc})".splitlines()[0]) from None
    entries = data.get("automations") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{source}: expected a top-level 'automations:' list with at least one entry")
    automations: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        where = f"{source}: automations[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise UsageError(f"{where}: expected a mapping with a 'name'")
        for action in entry.get("actions") or []:
            if isinstance(action, dict) and "block_document_name" in action:
                action["block_document_name"] = notify_block or action["block_document_name"]
        try:
            AutomationCore.model_validate(_with_block_ids(entry, lambda name: PLACEHOLDER_ID))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise UsageError(f"{where} ({entry['name']}): {field}: {first['msg']}") from None
        automations.append(entry)
    return automations


def _with_block_ids(entry: dict[str, Any], block_id: Callable[[str], Any]) -> dict[str, Any]:
    """``entry`` with each action's ``block_document_name`` replaced by ``block_document_id``."""
    actions = []
    for action in entry.get("actions") or []:
        if isinstance(action, dict) and "block_document_name" in action:
            rest = {k: v for k, v in action.items() if k != "block_document_name"}
            action = {**rest, "block_document_id": block_id(str(action["block_document_name"]))}
        actions.append(action)
    return {**entry, "actions": actions}


def _notification_block_ids(client: Any, names: set[str]) -> dict[str, Any]:
    """The id of each named block that can notify; a missing one is a UsageError."""
    ids: dict[str, Any] = {}
    offset = 0
    while True:
        page = client.read_block_documents(offset=offset, limit=200, include_secrets=False)
        for doc in page:
            if doc.name in names and "notify" in (doc.block_schema.capabilities if doc.block_schema else []):
                ids[doc.name] = doc.id
        if len(page) < 200:
            break
        offset += 200
    for name in sorted(names - set(ids)):
        raise UsageError(
            f"--notify-block {name}: no notification block of that name on the Prefect server "
            f"(create one in the UI, Blocks, or set {WEBHOOK_URL_VARIABLE})"
        )
    return ids


def save_webhook_block(name: str, url: str) -> None:
    """A Custom Webhook notification block ``name`` posting JSON ``subject`` and ``body`` to ``url``.

    Args:
        name: the block's name.
        url: where to post (a Slack-compatible receiver also gets ``text``).
    """
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    CustomWebhookNotificationBlock(
        name=name,
        url=url,
        json_data={"subject": "{{subject}}", "body": "{{body}}", "text": "{{subject}}\n{{body}}"},
        headers=None,
        cookies=None,
    ).save(name, overwrite=True)


def apply(path: str | Path = DEFAULT_FILE, notify_block: str | None = None) -> dict[str, Any]:
    """Create or replace every automation of ``path`` on the Prefect server; returns what was applied.

    Args:
        path: the automations file.
        notify_block: the notification block every action uses (default: the file's, bakery-alerts).
    """
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    automations = load_automations(path, notify_block)
    names = {
        str(action["block_document_name"])
        for entry in automations
        for action in entry.get("actions") or []
        if isinstance(action, dict) and "block_document_name" in action
    }
    url = os.environ.get(WEBHOOK_URL_VARIABLE)
    if url:
        for name in names:
            save_webhook_block(name, url)
    with get_client(sync_client=True) as client:
        ids = _notification_block_ids(client, names)
        applied = []
        for entry in automations:
            automation = AutomationCore.model_validate(_with_block_ids(entry, lambda name: ids[name]))
            for old in client.read_automations_by_name(automation.name):
                client.delete_automation(old.id)
            applied.append({"name": automation.name, "id": str(client.create_automation(automation))})
    return {"automations": applied, "notify_blocks": sorted(names)}

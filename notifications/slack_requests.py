"""Requests from Slack (button clicks, slash commands): checked before anything reads them.

Slack signs each request with the app's signing secret (its "v0" scheme): the signature is
HMAC-SHA256 of ``v0:{timestamp}:{raw body}``. A request is taken only when the signature
matches (compared in constant time), its timestamp is within five minutes of our clock, and
the same signature has not been taken before (a captured request sent again within its
five minutes). Only then is the body parsed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TypedDict
from urllib.parse import parse_qs

from django.conf import settings
from django.db import IntegrityError, transaction

from notifications.models import SlackRequestSeen
from notifications.outbox import publish_task
from notifications.slack_text import escape_text

# Slack's own limit: a request older than this is refused (and so a replay is remembered
# for this long, plus a minute of clock difference).
MAX_AGE_SECONDS = 300
# Slack's payloads are a few kilobytes (a block_actions payload repeats the message: 50
# blocks at most); anything far larger is not Slack and is refused unread.
MAX_BODY_BYTES = 256 * 1024
MAX_NOTE = 3000


def interactive() -> bool:
    """Buttons and the slash command are on: Slack can reach us (signing secret) and we can
    answer and edit (bot token). Checked when a message is composed and when one arrives."""
    return bool(settings.SLACK_SIGNING_SECRET and settings.SLACK_BOT_TOKEN)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 signature of a request (what X-Slack-Signature carries)."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def forgery_problem(body: bytes, headers: Mapping[str, str], *, secret: str, now: datetime) -> str:
    """Why this request was not signed by Slack just now, or "" when it was. Reads nothing
    but the two headers and the raw bytes, and no database."""
    if not secret:
        return "no signing secret configured"
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    signature = headers.get("X-Slack-Signature", "")
    if not timestamp or not signature:
        return "unsigned"
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return "bad timestamp"
    if abs(now.timestamp() - int(timestamp)) > MAX_AGE_SECONDS:
        return "stale timestamp"
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return "bad signature"
    return ""


def first_sight(headers: Mapping[str, str], now: datetime) -> bool:
    """Records the signature of a request `forgery_problem` took; False if it was recorded
    before (a replay). The database write: it raises when there is no database."""
    return _first_sight(headers.get("X-Slack-Signature", ""), now)


def _first_sight(signature: str, now: datetime) -> bool:
    SlackRequestSeen.objects.filter(
        received_at__lt=now - timedelta(seconds=MAX_AGE_SECONDS + 60)
    ).delete()
    try:
        with transaction.atomic():
            SlackRequestSeen.objects.create(signature=signature, received_at=now)
    except IntegrityError:
        return False
    return True


# --- what Slack sends (only the fields read here) -------------------------------------------


class SlackUserJSON(TypedDict, total=False):
    id: str
    username: str
    name: str
    team_id: str


class ContainerJSON(TypedDict, total=False):
    type: str
    message_ts: str
    channel_id: str
    is_ephemeral: bool


class ActionJSON(TypedDict, total=False):
    action_id: str
    block_id: str
    value: str
    type: str


class BlockActionsJSON(TypedDict, total=False):
    type: str
    user: SlackUserJSON
    container: ContainerJSON
    response_url: str
    actions: list[ActionJSON]


class BadRequest(Exception):
    """The body is signed but not what we expect: answered 400."""


def form(body: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body, one value per field (Slack sends one)."""
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("not a form") from exc
    return {key: values[0] for key, values in fields.items()}


def _text(data: Mapping[str, Any], key: str, limit: int = 500) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(f"{key}: not a short string")
    return value


def block_actions(body: bytes) -> BlockActionsJSON:
    """The payload of a click, its shape checked field by field (a signed body can still be
    malformed: a new payload type, a Slack change)."""
    raw = form(body).get("payload")
    if raw is None:
        raise BadRequest("no payload")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest("payload is not JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest("payload is not an object")
    user, container, actions = data.get("user"), data.get("container", {}), data.get("actions")
    if not isinstance(user, dict) or not isinstance(container, dict):
        raise BadRequest("no user or container")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise BadRequest("no action")
    action = actions[0]
    return {
        "type": _text(data, "type"),
        "user": {
            "id": _text(user, "id", 32),
            "username": _text(user, "username", 100),
            "name": _text(user, "name", 100),
        },
        "container": {
            "type": _text(container, "type"),
            "message_ts": _text(container, "message_ts", 32),
            "channel_id": _text(container, "channel_id", 32),
        },
        "response_url": _text(data, "response_url"),
        "actions": [
            {
                "action_id": _text(action, "action_id", 255),
                "value": _text(action, "value", 2000),
            }
        ],
    }


def _note(text: str) -> dict[str, Any]:
    return {
        "response_type": "ephemeral",
        "replace_original": False,
        "text": escape_text(text, MAX_NOTE, multiline=True),
    }


def answer_later(response_url: str, text: str) -> None:
    """An ephemeral note to whoever clicked, sent by a worker once this transaction commits
    (Slack has its answer by then: a click's HTTP answer carries no message)."""
    body = _note(text)
    transaction.on_commit(lambda: publish_task("notifications.respond", (response_url, body)))


def answer_now(response_url: str, text: str) -> None:
    """`answer_later` without the transaction: for when there is no database to commit to
    (asking Django whether a transaction is open would try to connect)."""
    publish_task("notifications.respond", (response_url, _note(text)))

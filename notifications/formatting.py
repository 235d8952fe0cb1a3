"""Slack messages in the specification's formats: Block Kit with a plain-text fallback.

Builders return a `Composed` (text + blocks) already cut to Slack's limits, so nothing is
rejected for its size: over-long texts are truncated with a visible marker. Every builder
escapes the plain `str` it is given (see `notifications.slack_text`); markup the code means
is passed as `Mrkdwn`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from notifications.slack import NO_ACTIONS_PREFIX
from notifications.slack_text import MARKER, Mrkdwn, cap, escape_plain, escape_text

__all__ = ["MARKER", "Mrkdwn"]  # re-exported: composers and tests import them from here

MAX_TEXT = 4000
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10


def truncate(text: str, limit: int) -> str:
    return cap(text, limit)


@dataclass(frozen=True, slots=True)
class Composed:
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


def fit(text: str, blocks: list[dict[str, Any]]) -> Composed:
    """Cut text and blocks to what Slack accepts; `text` is escaped unless it is `Mrkdwn`."""
    text = escape_text(text, MAX_TEXT, multiline=True)
    fitted = [_fit_block(block) for block in blocks]
    if len(fitted) > MAX_BLOCKS:
        fitted = [
            *fitted[: MAX_BLOCKS - 1],
            context_block(f"{len(blocks) - MAX_BLOCKS + 1} more block(s) {MARKER}"),
        ]
    return Composed(Mrkdwn(truncate(text, MAX_TEXT)), fitted)


def _fit_block(block: dict[str, Any]) -> dict[str, Any]:
    block = dict(block)
    limit = MAX_HEADER_TEXT if block.get("type") == "header" else MAX_SECTION_TEXT
    if isinstance(block.get("text"), dict):
        block["text"] = {**block["text"], "text": truncate(block["text"]["text"], limit)}
    if isinstance(block.get("fields"), list):
        block["fields"] = [
            {**item, "text": truncate(item["text"], MAX_FIELD_TEXT)}
            for item in block["fields"][:MAX_FIELDS]
        ]
    if isinstance(block.get("elements"), list):
        block["elements"] = [
            {**item, "text": truncate(item["text"], MAX_SECTION_TEXT)}
            if isinstance(item.get("text"), str)
            else item
            for item in block["elements"]
        ]
    return block


def header_block(text: str) -> dict[str, Any]:
    """`text` is plain: a header shows no markup, but Slack still decodes `&amp;` there."""
    plain = text if isinstance(text, Mrkdwn) else escape_plain(text, MAX_HEADER_TEXT)
    return {"type": "header", "text": {"type": "plain_text", "text": plain, "emoji": True}}


def _mrkdwn_object(text: Mrkdwn) -> dict[str, Any]:
    # verbatim: Slack links nothing by itself (URLs, channel names) in what users wrote.
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def fields_block(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """One field per (label, value); values are single-line, escaped and capped."""
    return {
        "type": "section",
        "fields": [
            _mrkdwn_object(Mrkdwn(f"*{escape_text(label)}:*\n{escape_text(value)}"))
            for label, value in pairs
        ],
    }


def section_block(text: str) -> dict[str, Any]:
    return {
        "type": "section",
        "text": _mrkdwn_object(escape_text(text, MAX_SECTION_TEXT, multiline=True)),
    }


def context_block(text: str) -> dict[str, Any]:
    return {
        "type": "context",
        "elements": [_mrkdwn_object(escape_text(text, MAX_SECTION_TEXT, multiline=True))],
    }


def lines(title: str, pairs: list[tuple[str, str]]) -> Mrkdwn:
    """The fallback text: the title, then one "Label: value" line per field, escaped."""
    return Mrkdwn(
        "\n".join(
            [
                escape_text(title, MAX_HEADER_TEXT),
                *(f"{escape_text(label)}: {escape_text(value)}" for label, value in pairs),
            ]
        )
    )


def compose(title: str, pairs: list[tuple[str, str]], *, note: str = "") -> Composed:
    """The specification's layout: a title line, then one "Label: value" line per field."""
    blocks = [header_block(title)]
    for start in range(0, len(pairs), MAX_FIELDS):
        blocks.append(fields_block(pairs[start : start + MAX_FIELDS]))
    text = lines(title, pairs)
    if note:
        blocks.append(section_block(note))
        text = Mrkdwn(f"{text}\n{escape_text(note, MAX_SECTION_TEXT, multiline=True)}")
    return fit(text, blocks)


def button(text: str, action_id: str, value: str, *, style: str = "") -> dict[str, Any]:
    """A Block Kit button; `text` is plain (Slack shows no markup on buttons)."""
    element: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": escape_plain(text, 75), "emoji": True},
        "action_id": action_id,
        "value": value,
    }
    if style:
        element["style"] = style
    return element


def actions_block(
    block_id: str, buttons: list[dict[str, Any]], *, instead: str
) -> list[dict[str, Any]]:
    """Buttons, and the note that stands in for them where a message cannot carry any (a
    webhook's): the transport keeps one of the two (notifications.slack.blocks_for)."""
    blocks: list[dict[str, Any]] = []
    if buttons:
        blocks.append({"type": "actions", "block_id": block_id, "elements": buttons[:25]})
    note = context_block(instead)
    note["block_id"] = f"{NO_ACTIONS_PREFIX}{block_id}"
    blocks.append(note)
    return blocks

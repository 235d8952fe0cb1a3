"""Slack text that nobody outside the code can turn into markup: escaping, caps, safe links.

Slack reads `&`, `<` and `>` as control characters in every text object and in a message's
fallback text: `<!channel>` notifies a whole channel, `<https://evil.example|status page>`
hides a link behind any label (https://api.slack.com/reference/surfaces/formatting#escaping).
So every piece of text that did not come from the code itself is escaped, and markup the
code writes on purpose is a `Mrkdwn`, built with `mrkdwn()`, which escapes its arguments.
The block builders in `notifications.formatting` escape every plain `str` they are given,
so a new message cannot forget it: at worst it double-escapes, which shows, never injects.

Slack has no escape for the mrkdwn formatting characters (`*bold*`, `_italic_`, `~strike~`,
`` `code` ``), so user text gets look-alike characters instead, where they could format:
this does not depend on how Slack's parser treats zero-width characters or invalid date
tokens (the other known tricks), costs no length, and reads the same. `_` between two
letters or digits (`snake_case`, `T_5`) is left alone: Slack never italicises inside a word.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

MARKER = "… (truncated)"
FIELD_LIMIT = 300  # a name, a table, a value: escaped, it stays under a field's 2,000
TEXT_LIMIT = 1000  # a description, an error message

# Where a formatting character could open or close formatting, and its look-alike.
_FORMATTING = re.compile(r"[*~`]|(?<![^\W_])_|_(?![^\W_])")
_LOOK_ALIKES = {"*": "\u2217", "~": "\u223c", "`": "\u02cb", "_": "\u02cd"}
# `>` opens a quote at the start of a line even escaped; a soft hyphen in front stops it.
_LEADING_QUOTE = re.compile(r"^(\s*)&gt;", re.MULTILINE)
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x85\u2028\u2029]+")
# A cut that ends inside an entity or a link would show its debris.
_PARTIAL_TOKEN = re.compile(r"&[a-z]{0,3}$|<[^<>]*$")
_URL_UNSAFE = re.compile(r"[<>|\s]")

validate_http_url = URLValidator(schemes=["http", "https"], message="Enter an http(s) URL.")


class Mrkdwn(str):
    """Slack markup the code wrote, or text already escaped: builders pass it through."""

    __slots__ = ()


def cap(text: str, limit: int) -> str:
    """At most `limit` characters; a cut shows the marker."""
    if len(text) <= limit:
        return text
    kept = text[: max(0, limit - len(MARKER))]
    return _PARTIAL_TOKEN.sub("", kept) + MARKER


def _escape_controls(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_text(value: object, limit: int = FIELD_LIMIT, *, multiline: bool = False) -> Mrkdwn:
    """User text for a mrkdwn text object or a fallback text: capped, then made inert."""
    if isinstance(value, Mrkdwn):
        return value
    text = str(value)
    if not multiline:
        # A line break in a table name could fake further "Label: value" lines.
        text = _LINE_BREAKS.sub(" ", text)
    text = _escape_controls(cap(text, limit))
    text = _FORMATTING.sub(lambda match: _LOOK_ALIKES[match.group()], text)
    return Mrkdwn(_LEADING_QUOTE.sub("\\1\u00ad&gt;", text))


def escape_plain(value: object, limit: int = FIELD_LIMIT) -> str:
    """User text for a plain_text object: no formatting there, but Slack decodes entities."""
    return _escape_controls(cap(_LINE_BREAKS.sub(" ", str(value)), limit))


def mrkdwn(template: str, *args: Any) -> Mrkdwn:
    """`template` is the code's markup; each `{}` is filled with escaped text."""
    return Mrkdwn(template.format(*(escape_text(arg) for arg in args)))


def is_http_url(url: str) -> bool:
    try:
        validate_http_url(url)
    except ValidationError:
        return False
    return True


def safe_link(url: str, label: str | None = None) -> Mrkdwn:
    """A link only to an http(s) URL, showing the URL itself unless given a label;
    anything else is shown as inert text."""
    if not is_http_url(url):
        return escape_text(url)
    target = _URL_UNSAFE.sub(lambda match: quote(match.group()), url).replace("&", "&amp;")
    if label is None:
        return Mrkdwn(f"<{target}>")
    return Mrkdwn(f"<{target}|{escape_text(label)}>")

"""Slack, and only here: the Web API (bot token) and incoming webhooks through slack-sdk.

`notify()` returns where the message landed or raises TransportError; every vendor error
is classified once, in `_classify`: permanent ones stop retries and flag the destination,
the rest (429, 5xx, timeouts, connection failures) are retried by the outbox.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.client import WebClient
from slack_sdk.webhook import WebhookClient

# Errors that no retry can fix: the token, the channel or the webhook must be changed.
PERMANENT_API_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "restricted_action",
        "invalid_blocks",
        "invalid_blocks_format",
        "msg_too_long",
        "no_text",
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
        "user_not_found",
        "user_not_visible",
    }
)
PERMANENT_WEBHOOK_STATUSES = frozenset({400, 403, 404, 410})

# Incoming webhooks live here, over HTTPS; anything else could be an internal address.
SLACK_WEBHOOK_HOST = "hooks.slack.com"
# What Slack answers with on failure: a short error code. Anything else (an HTML page from
# a proxy, whatever an unexpected server says) is not repeated to operators or logs.
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class TransportError(Exception):
    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        retry_after: float | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
        self.http_status = http_status


@dataclass(frozen=True, slots=True)
class SlackMessage:
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    channel: str = ""
    thread_ts: str = ""  # reply in this message's thread
    reply_broadcast: bool = False  # ...and show the reply in the channel too
    update_ts: str = ""  # replace this message instead of posting


@dataclass(frozen=True, slots=True)
class Delivered:
    ts: str
    channel: str


@dataclass(frozen=True, slots=True)
class SlackMember:
    """What users.info says of a member: enough to decide whether their e-mail vouches for
    them (see notifications.slack_users)."""

    id: str
    email: str  # "" without the users:read.email scope, or for a bot
    email_confirmed: bool
    is_bot: bool
    deleted: bool
    guest: bool  # a single- or multi-channel guest (is_restricted / is_ultra_restricted)


# users.info is asked while a click waits for its answer, and Slack gives a click 3 s: the
# lookup gets one second (a lookup is made once per member; see notifications.slack_users).
LOOKUP_TIMEOUT_SECONDS = 1


def payload(message: SlackMessage) -> dict[str, Any]:
    """The request body for chat.postMessage / chat.update, as a plain dict."""
    body: dict[str, Any] = {"channel": message.channel, "text": message.text}
    if message.blocks:
        body["blocks"] = blocks_for(message.blocks, interactive=True)
    if message.update_ts:
        body["ts"] = message.update_ts
    elif message.thread_ts:
        body["thread_ts"] = message.thread_ts
        if message.reply_broadcast:
            body["reply_broadcast"] = True
    body["unfurl_links"] = False
    return body


def webhook_payload(message: SlackMessage) -> dict[str, Any]:
    body: dict[str, Any] = {"text": message.text}
    if message.blocks:
        body["blocks"] = blocks_for(message.blocks, interactive=False)
    return body


# A block shown only where a message cannot carry buttons (a webhook's, or before Slack's
# interactivity is set up): how to act instead. See notifications.formatting.actions_blocks.
NO_ACTIONS_PREFIX = "noactions:"


def blocks_for(blocks: list[dict[str, Any]], *, interactive: bool) -> list[dict[str, Any]]:
    """Buttons for a bot-token message that has them, else the note that stands in for them
    (an incoming webhook's message cannot be clicked: Slack would have nowhere to send it)."""
    has_actions = any(block.get("type") == "actions" for block in blocks)
    if interactive and has_actions:
        return [b for b in blocks if not str(b.get("block_id", "")).startswith(NO_ACTIONS_PREFIX)]
    return [b for b in blocks if b.get("type") != "actions"]


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, parts.hostname or "", parts.port or default


def webhook_url_problem(url: str, *, api_url: str) -> str:
    """Why nothing may be posted to this URL, or "" when it is a Slack webhook.

    Accepted: https://hooks.slack.com/..., or an URL on SLACK_API_URL's origin (the proxy
    an operator configured, or the tests' local Slack server). Everything else is refused,
    so that a destination cannot make the server post to (and read) internal addresses.
    """
    try:
        parts = urlsplit(url.strip())
        origin = _origin(parts)
    except ValueError:
        return "not a valid URL"
    if parts.username is not None or parts.password is not None:
        return "a webhook URL carries no user name or password"
    if origin == ("https", SLACK_WEBHOOK_HOST, 443):
        return ""
    try:
        if origin == _origin(urlsplit(api_url)):
            return ""
    except ValueError:
        pass
    return f"only Slack webhooks (https://{SLACK_WEBHOOK_HOST}/services/...) are accepted"


def mask_webhook_url(url: str) -> str:
    """Enough of a webhook URL to recognise it (host and last 4 characters), not to use it."""
    if not url:
        return ""
    parts = urlsplit(url.strip())
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}/…{url.strip()[-4:]}"


def _error_code(text: str) -> str:
    text = text.strip()
    return text if _ERROR_CODE.fullmatch(text) else ""


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    for name, value in dict(headers).items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                return None
    return None


def _classify(status: int | None, error: str, headers: Any = None) -> TransportError:
    if status == 429 or error == "ratelimited":
        return TransportError(
            "rate limited by Slack", retry_after=_retry_after(headers) or 1.0, http_status=429
        )
    if error in PERMANENT_API_ERRORS:
        return TransportError(error, permanent=True, http_status=status)
    return TransportError(error or f"HTTP {status}", http_status=status)


class SlackTransport:
    """Posts with the bot token when there is one, else to the destination's webhook."""

    def __init__(self, *, token: str, api_url: str, timeout: int) -> None:
        self.token = token
        self.api_url = api_url
        self.timeout = timeout
        self._client: WebClient | None = None

    @property
    def client(self) -> WebClient:
        """One Web API client per transport (a drain's batch), not one per message."""
        if self._client is None:
            # Retries belong to the outbox, which honours Retry-After without sleeping.
            self._client = WebClient(
                token=self.token, base_url=self.api_url, timeout=self.timeout, retry_handlers=[]
            )
        return self._client

    def notify(self, message: SlackMessage, *, webhook_url: str = "") -> Delivered:
        if self.token and message.channel:
            return self._post_api(message)
        if webhook_url:
            return self._post_webhook(message, webhook_url)
        raise TransportError("no bot token and channel, nor a webhook URL", permanent=True)

    def _post_api(self, message: SlackMessage) -> Delivered:
        client = self.client
        body = payload(message)
        try:
            if message.update_ts:
                response = client.chat_update(**body)
            else:
                response = client.chat_postMessage(**body)
        except SlackApiError as exc:
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            raise _classify(
                exc.response.status_code,
                _error_code(str(data.get("error", ""))),
                exc.response.headers,
            ) from exc
        except (SlackRequestError, OSError, TimeoutError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        return Delivered(ts=str(response.get("ts", "")), channel=str(response.get("channel", "")))

    def _post_webhook(self, message: SlackMessage, url: str) -> Delivered:
        # Checked here too, at send time: a URL stored before the admin checked it, or
        # SLACK_WEBHOOK_URL from the environment, is refused all the same.
        problem = webhook_url_problem(url, api_url=self.api_url)
        if problem:
            raise TransportError(f"webhook URL refused: {problem}", permanent=True)
        client = WebhookClient(url, timeout=self.timeout, retry_handlers=[])
        try:
            response = client.send_dict(webhook_payload(message))
        except (OSError, TimeoutError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 200:
            # Webhooks return no timestamp: their messages cannot be threaded or updated.
            return Delivered(ts="", channel="")
        if response.status_code == 429:
            raise _classify(429, "", response.headers)
        code = _error_code(response.body or "")
        error = f"webhook {response.status_code}" + (f": {code}" if code else "")
        raise TransportError(
            error,
            permanent=response.status_code in PERMANENT_WEBHOOK_STATUSES,
            http_status=response.status_code,
        )

    def member(self, user_id: str) -> SlackMember:
        """users.info of one member, within LOOKUP_TIMEOUT_SECONDS; TransportError otherwise
        (permanent for user_not_found, missing_scope and the like)."""
        client = WebClient(
            token=self.token,
            base_url=self.api_url,
            timeout=min(self.timeout, LOOKUP_TIMEOUT_SECONDS),
            retry_handlers=[],
        )
        try:
            response = client.users_info(user=user_id)
        except SlackApiError as exc:
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            raise _classify(
                exc.response.status_code,
                _error_code(str(data.get("error", ""))),
                exc.response.headers,
            ) from exc
        except (SlackRequestError, OSError, TimeoutError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        user = response.get("user")
        if not isinstance(user, dict) or user.get("id") != user_id:
            raise TransportError("users.info: no such user in the answer", permanent=True)
        profile = user.get("profile")
        email = profile.get("email") if isinstance(profile, dict) else None
        return SlackMember(
            id=user_id,
            email=email.strip() if isinstance(email, str) else "",
            # Only a literal true vouches for the address: absent or odd means no.
            email_confirmed=user.get("is_email_confirmed") is True,
            is_bot=user.get("is_bot") is not False or bool(user.get("is_app_user")),
            deleted=user.get("deleted") is not False,
            guest=bool(user.get("is_restricted") or user.get("is_ultra_restricted")),
        )

    def respond(self, response_url: str, body: dict[str, Any]) -> None:
        """Answer a click or a command through its response_url (ephemeral notes, and the
        slash command's late answers). The URL came in a signed request; it is still held to
        Slack's host (or SLACK_API_URL's), so a leaked secret cannot aim us elsewhere."""
        problem = webhook_url_problem(response_url, api_url=self.api_url)
        if problem:
            raise TransportError(f"response URL refused: {problem}", permanent=True)
        client = WebhookClient(response_url, timeout=self.timeout, retry_handlers=[])
        try:
            response = client.send_dict(body)
        except (OSError, TimeoutError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            code = _error_code(response.body or "")
            raise TransportError(
                f"response_url {response.status_code}" + (f": {code}" if code else ""),
                permanent=response.status_code in PERMANENT_WEBHOOK_STATUSES,
                http_status=response.status_code,
            )


def transport_from_settings() -> SlackTransport:
    from django.conf import settings

    return SlackTransport(
        token=settings.SLACK_BOT_TOKEN,
        api_url=settings.SLACK_API_URL,
        timeout=settings.SLACK_TIMEOUT_SECONDS,
    )


def monotonic_ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 3)

"""Error reporting to Sentry: off, and nothing set up, unless SENTRY_DSN is set.

`setup_sentry()` is called by the settings module, so every process that loads the settings
(daphne, manage.py, a Celery worker and beat) reports, and a process without a DSN installs
nothing: no client, no thread, no patched library (Zulip's zproject/sentry.py).

Each error is reported once, by one path:

- A line logged at ERROR becomes an event through the logging integration, with its
  traceback when logged with `logger.exception(...)`. That is how the code reports the
  failures it survives: a venue room frame or connection that failed, an alert rule, the
  metrics flusher, a crashed order. Lower levels become breadcrumbs of the next event.
- An exception that escapes a Celery task is reported by the Celery integration; sentry-sdk
  ignores Celery's own "Task ... raised" log line of it.
- An exception that escapes a Django view is reported by the Django integration.
- A task or view that logs an exception and then lets it escape hands the same exception
  object to two paths: sentry-sdk's DedupeIntegration (on by default) drops the second.

The venue room (a WebSocket consumer, which the Django integration does not see) reports in
a scope of its own per connection (`error_context`), and a task's run is tagged as it starts
(`_tag_task`): their events carry the spec's `feature` and `venue_id` tags.

Whatever an event holds on its way out passes `scrub` (before_send, before_send_transaction):
Slack webhook URLs and tokens, venue access tokens, passwords and session ids are replaced
by "[Filtered]" in every string of it, wherever they sit (the exception's message, stack
frames' local variables, request data, extra, breadcrumbs, the log entry), and the value of
any key that names a secret is filtered whatever it looks like.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

import sentry_sdk
from sentry_sdk.scrubber import DEFAULT_DENYLIST, DEFAULT_PII_DENYLIST, EventScrubber
from sentry_sdk.types import Breadcrumb, BreadcrumbHint, Event, Hint

from inkwave.logging import SLACK_TOKEN, SLACK_WEBHOOK_PATH, VENUE_TOKEN

FILTERED = "[Filtered]"
# A key (a dict's, a local variable's, a header's, a cookie's) whose value is a secret: one
# that says so, or one of the names sentry-sdk's own scrubber filters (which `scrub` replaces).
_SECRET_KEY = re.compile(
    r"password|passwd|secret|token|session|cookie|authori[sz]ation|api_?key", re.IGNORECASE
)
_SDK_SECRET_KEYS = frozenset(name.lower() for name in (*DEFAULT_DENYLIST, *DEFAULT_PII_DENYLIST))
# Secrets told by their shape, wherever they appear in a string.
_SECRET_TEXT = (
    # A Slack webhook's URL, whole; and its secret path behind any other host (a proxy).
    (re.compile(r"https?://hooks\.slack(?:-gov)?\.com/[^\s'\"<>]*"), FILTERED),
    (SLACK_WEBHOOK_PATH, rf"\1{FILTERED}"),
    # Slack tokens (xoxb-, xoxp-, xoxa-, xapp-) and venue access tokens (orders/models.py).
    (SLACK_TOKEN, FILTERED),
    (VENUE_TOKEN, FILTERED),
    # The value of name=value or name: value (a repr, a query string, a cookie, a header)
    # whose name names a secret, unless a pattern above filtered it already.
    (
        re.compile(
            r"(\b\w*(?:password|passwd|secret|token|session|authori[sz]ation|api_?key)\w*"
            r"['\"]?\s*[=:]\s*(?:b?['\"])?)(?!\[Filtered\])([^\s'\"&;,)}\]]+)",
            re.IGNORECASE,
        ),
        rf"\1{FILTERED}",
    ),
)
# A secret found under a secret key is filtered everywhere else too (an exception's message
# that quotes a `password` local). Django refuses passwords shorter than this; a shorter
# value is too likely an ordinary word to be replaced wherever it appears.
_MIN_SECRET_LENGTH = 8


def setup_sentry(
    dsn: str, *, environment: str = "", release: str = "", traces_sample_rate: float = 0.0
) -> bool:
    """Start reporting to `dsn`; without one, do nothing at all. Whether it started."""
    if not dsn:
        return False
    # Imported here: a process without a DSN loads no integration (they import Django's and
    # Celery's internals).
    from celery import signals
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment or None,
        release=release or None,  # None: sentry-sdk's own guess (the checkout's commit)
        # 0 is no tracing at all (None), rather than transactions made and then dropped.
        traces_sample_rate=traces_sample_rate or None,
        # No personal data (cookies, users, IP addresses): sentry-sdk's default, left as it is,
        # as sentry-sdk 2.7x deprecated saying so (send_default_pii) for an option that 2.19
        # does not have (data_collection). tests/test_sentry.py checks that it is off.
        # Its own scrubber would filter a `password` local before `scrub` sees it, and `scrub`
        # could no longer find that password in the exception's message; `scrub` filters the
        # same names itself.
        event_scrubber=EventScrubber(denylist=[], pii_denylist=[]),
        # Only these: auto-enabled ones (Redis, SQLAlchemy...) would record a breadcrumb or
        # a span for every Redis command of the channel layer, on the per-message path.
        auto_enabling_integrations=False,
        integrations=[
            DjangoIntegration(),
            CeleryIntegration(),
            LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
        ],
        # Outgoing HTTP requests (Slack) carry no sentry-trace or baggage headers.
        trace_propagation_targets=[],
        before_send=scrub,
        before_send_transaction=scrub,
        before_breadcrumb=_readable_breadcrumb,
    )
    signals.task_prerun.connect(_tag_task, weak=False, dispatch_uid="inkwave.sentry")
    return True


@contextlib.contextmanager
def error_context(feature: str, venue_id: object = None, **context: Any) -> Iterator[None]:
    """Errors reported inside the block carry the `feature` and `venue_id` tags, and `context`.

    The block gets an isolation scope of its own: a WebSocket connection is an asyncio task,
    and two connections' tags must never mix. Without Sentry, nothing is created.
    """
    if not sentry_sdk.get_client().is_active():
        yield
        return
    with sentry_sdk.isolation_scope() as scope:
        scope.set_tag("feature", feature)
        if venue_id is not None:
            scope.set_tag("venue_id", str(venue_id))
        scope.set_context(feature, {"id": uuid.uuid4().hex[:12], **context})
        yield


def _tag_task(
    sender: Any = None, task_id: str = "", args: Any = (), kwargs: Any = None, **_: Any
) -> None:
    """task_prerun: runs inside the isolation scope the Celery integration opens per task."""
    if sender is None or not sentry_sdk.get_client().is_active():
        return
    arguments = _task_arguments(sender.run, args or (), kwargs or {})
    scope = sentry_sdk.get_isolation_scope()
    scope.set_tag("feature", sender.name)
    if arguments.get("venue_id") is not None:
        scope.set_tag("venue_id", str(arguments["venue_id"]))
    # A summary: each argument's repr, secrets filtered before it is cut short (a cut token
    # would no longer be recognised), and an argument named as a secret left out entirely.
    summary = {
        name: FILTERED if _is_secret_key(name) else _scrub_text(repr(value), None)[:200]
        for name, value in arguments.items()
    }
    scope.set_context("task", {"name": sender.name, "id": task_id, "arguments": summary})


def _task_arguments(
    run: Callable[..., Any], args: Any, kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """The task's arguments by parameter name (positional ones included)."""
    try:
        return dict(inspect.signature(run).bind_partial(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        return {**{f"args[{i}]": value for i, value in enumerate(args)}, **kwargs}


# --- how log lines read in Sentry ----------------------------------------------------------

# What structlog adds to every line; Sentry shows the level, logger and time itself.
_LOG_NOISE = frozenset({"event", "level", "logger", "timestamp", "exc_info", "stack_info"})


def _structlog_fields(hint: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A structlog line's event dict (`logger.error("name", key=value)`), else None."""
    record = (hint or {}).get("log_record")
    message = getattr(record, "msg", None)
    return message if isinstance(message, dict) and "event" in message else None


def _readable_breadcrumb(crumb: Breadcrumb, hint: BreadcrumbHint) -> Breadcrumb:
    """A structlog line as its event name and fields, not the repr of its dict."""
    fields = _structlog_fields(hint)
    if fields is not None:
        crumb["message"] = str(fields["event"])
        crumb["data"] = {k: v for k, v in fields.items() if k not in _LOG_NOISE}
    return crumb


def _readable_log_entry(event: dict[str, Any], hint: Mapping[str, Any] | None) -> None:
    fields = _structlog_fields(hint)
    if fields is None:
        return
    event["logentry"] = {"message": str(fields["event"]), "params": []}
    # The event is serialised already: anything added must be JSON as it stands.
    event.setdefault("extra", {}).update(
        {k: _plain(v) for k, v in fields.items() if k not in _LOG_NOISE}
    )


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | None) else repr(value)


# --- scrubbing --------------------------------------------------------------------------


def scrub(event: Event, hint: Hint) -> Event:
    """before_send: the event with every secret replaced by FILTERED (see the module's doc)."""
    data = cast(dict[str, Any], event)
    _readable_log_entry(data, hint)
    found: set[str] = set()
    keyed = _filter_secret_keys(data, found)
    longest_first = sorted(found, key=len, reverse=True)
    seen = re.compile("|".join(map(re.escape, longest_first))) if found else None
    return cast(Event, _scrub_strings(keyed, seen))


def _filter_secret_keys(value: Any, found: set[str]) -> Any:
    """`value` with what sits under a secret key filtered; the secrets filtered go in `found`."""
    if isinstance(value, dict):
        filtered = {}
        for key, item in value.items():
            if _is_secret_key(key):
                _collect_strings(item, found)
                filtered[key] = FILTERED
            else:
                filtered[key] = _filter_secret_keys(item, found)
        return filtered
    if isinstance(value, list | tuple):
        return [_filter_secret_keys(item, found) for item in value]
    return value


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and (
        key.lower() in _SDK_SECRET_KEYS or _SECRET_KEY.search(key) is not None
    )


def _collect_strings(value: Any, found: set[str]) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _collect_strings(item, found)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect_strings(item, found)
    elif isinstance(value, str):
        # A local variable arrives as its repr: 'secret' or b'secret'.
        text = re.sub(r"^b?(['\"])(.*)\1$", r"\2", value, flags=re.S)
        if len(text) >= _MIN_SECRET_LENGTH and text != FILTERED:
            found.add(text)


def _scrub_strings(value: Any, seen: re.Pattern[str] | None) -> Any:
    if isinstance(value, str):
        return _scrub_text(value, seen)
    if isinstance(value, dict):
        return {
            _scrub_text(k, seen) if isinstance(k, str) else k: _scrub_strings(v, seen)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub_strings(item, seen) for item in value]
    return value


def _scrub_text(text: str, seen: re.Pattern[str] | None) -> str:
    for pattern, replacement in _SECRET_TEXT:
        text = pattern.sub(replacement, text)
    return seen.sub(FILTERED, text) if seen is not None else text

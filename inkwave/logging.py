"""Structured logging: structlog in front of the standard library's logging.

Our own code logs key/value events through ``structlog.get_logger(__name__)``; Django's,
Daphne's and Celery's records go through the same formatter, so every line in production is
one JSON object (LOG_FORMAT=json) and a developer's console stays readable.
"""

from __future__ import annotations

import logging
import logging.config
import re
from typing import Any

import structlog

_SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
]


# Secrets that must never reach a log line, whoever logs them (our code, a library, a
# traceback): a Slack webhook's path (/services/T…/B…/secret) and a click's or a command's
# response_url (/actions/T…/…, /commands/T…/…: whoever holds one answers as the app), Slack
# tokens (xoxb-…), venue device tokens (iwv_…, in a URL's query or a header) and session
# cookies (sessionid=…). The signing secret has no shape of its own (32 hex digits); it is
# read from the environment and used only to sign, never passed to a logger.
# Their shapes are shared with the Sentry scrubber (inkwave/sentry.py), which filters them whole.
SLACK_WEBHOOK_PATH = re.compile(
    r"(/(?:services|triggers|workflows|actions|commands)/)T\w*/[^\s'\"<>]+"
)
SLACK_TOKEN = re.compile(r"\b(xox[a-z]|xapp)-[A-Za-z0-9-]+")
VENUE_TOKEN = re.compile(r"\biwv_[A-Za-z0-9_-]+")
_SECRETS = (
    (SLACK_WEBHOOK_PATH, r"\1[redacted]"),
    (SLACK_TOKEN, r"\1-[redacted]"),
    (VENUE_TOKEN, "iwv_[redacted]"),
    (re.compile(r"\b(sessionid=)[^;\s'\"]+"), r"\1[redacted]"),
)


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(structlog.stdlib.ProcessorFormatter):
    """Renders as ProcessorFormatter does, then blanks out secrets in the finished line.

    Working on the finished line covers every way a secret gets in: an event's fields, a
    library's formatted message, an exception's text and traceback.
    """

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def build_logging_config(*, level: str, json_format: bool) -> dict[str, Any]:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_format
        # Plain tracebacks: the same output whether or not `rich` happens to be installed
        # (a test tool brings it in), and one copy of each line for the redaction to clean.
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if json_format:
        final.append(structlog.processors.format_exc_info)
    final.append(renderer)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": RedactingFormatter,
                "processors": final,
                "foreign_pre_chain": _SHARED_PROCESSORS,
            }
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "structured"},
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            # Django configures its DEFAULT_LOGGING before ours, which gives "django" a
            # console handler under DEBUG; naming the logger here replaces that handler,
            # so each record is printed once, by the root handler.
            "django": {"handlers": [], "level": level, "propagate": True},
            "django.db.backends": {"level": "INFO"},
            "daphne": {"level": "WARNING" if level == "INFO" else level},
            "asyncio": {"level": "WARNING"},
            # At DEBUG these log every request: URLs (a webhook's is its secret) and bodies.
            "slack_sdk": {"level": "INFO" if level == "DEBUG" else level},
            "urllib3": {"level": "INFO" if level == "DEBUG" else level},
        },
    }


def configure(config: dict[str, Any]) -> None:
    """LOGGING_CONFIG hook: configure the standard library, then structlog on top of it."""
    logging.config.dictConfig(config)
    structlog.configure(
        processors=[
            *_SHARED_PROCESSORS,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.UnicodeDecoder(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )

"""Logs never carry Slack secrets, even at LOG_LEVEL=debug."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inkwave.logging import redact
from notifications.local_slack import TOKEN, SlackServer

ROOT = Path(__file__).resolve().parent.parent
HOOK_SECRET = "T000/B000/hooksecret"


def run_logged(slack: SlackServer, tmp_path: Path, code: str, log_format: str) -> str:
    """Run `code` in a process configured from the environment at LOG_LEVEL=debug."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE", "REDIS"))}
    env.update(
        DJANGO_SETTINGS_MODULE="inkwave.settings",
        INKWAVE_VAR_DIR=str(tmp_path),
        LOG_LEVEL="debug",
        LOG_FORMAT=log_format,
        SLACK_BOT_TOKEN=TOKEN,
        SLACK_API_URL=slack.api_url,
        WEBHOOK=slack.webhook_url(HOOK_SECRET),
    )
    result = subprocess.run(
        [sys.executable, "-c", f"import os, django\ndjango.setup()\n{code}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_sending_to_slack_at_debug_logs_neither_the_webhook_nor_the_token(
    tmp_path: Path, log_format: str
) -> None:
    code = """
import logging
from notifications.slack import SlackMessage, transport_from_settings
transport = transport_from_settings()
transport.notify(SlackMessage(text="via the api", channel="C0OPS"))
transport.notify(SlackMessage(text="via the hook"), webhook_url=os.environ["WEBHOOK"])
logging.getLogger("inkwave.probe").debug("debug logging is on")
"""
    with SlackServer() as slack:
        output = run_logged(slack, tmp_path, code, log_format)
        assert [post.body["text"] for post in slack.posts] == ["via the api", "via the hook"]
    assert "debug logging is on" in output  # the level really was debug
    assert "hooksecret" not in output
    assert TOKEN not in output


def test_a_secret_logged_by_anyone_is_redacted(tmp_path: Path) -> None:
    code = """
import logging, structlog
hook = os.environ["WEBHOOK"]
logging.getLogger("some.library").debug("posting to %s with %s", hook, "xoxb-1-2-abc")
structlog.get_logger("ours").warning("sending", url=hook, token="xoxp-99-secret")
try:
    raise RuntimeError(hook)
except RuntimeError:
    logging.getLogger("x").exception("failed")
"""
    with SlackServer() as slack:
        output = run_logged(slack, tmp_path, code, "console")
    assert "hooksecret" not in output
    assert "abc" not in output
    assert "99-secret" not in output
    assert output.count("/services/[redacted]") == 3  # a message, a field, an exception
    assert "xoxb-[redacted]" in output
    assert "xoxp-[redacted]" in output


def test_venue_tokens_and_session_cookies_are_redacted() -> None:
    line = "GET /ws/venues/3/?token=iwv_4-ALsat_LvN7 Cookie: csrftoken=x; sessionid=abc123xyz; a=b"
    assert redact(line) == (
        "GET /ws/venues/3/?token=iwv_[redacted] Cookie: csrftoken=x; sessionid=[redacted]; a=b"
    )


def test_redaction_leaves_ordinary_text_alone() -> None:
    line = "GET /api/v1/orders/12 from 10.0.0.1: services ok, boxes 3"
    assert redact(line) == line
    assert (
        redact("https://hooks.slack.com/services/T0ABC/B0DEF/abcdef?x=1 done")
        == "https://hooks.slack.com/services/[redacted] done"
    )

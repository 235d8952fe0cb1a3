"""A real process killed (SIGKILL) while its Slack request is under way: sent again, once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from notifications.defaults import create_default_routes
from notifications.delivery import drain, sweep
from notifications.formatting import Composed
from notifications.local_slack import TOKEN, Reply, SlackServer
from notifications.models import (
    AttemptOutcome,
    DeliveryAttempt,
    Destination,
    Notification,
    NotificationKind,
    NotificationStatus,
    Route,
)
from notifications.outbox import enqueue
from tests.servers import ROOT, server_env

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]


def test_a_worker_process_sigkilled_mid_request_is_redelivered_once(
    settings: Any, tmp_path: Path
) -> None:
    create_default_routes(Destination, Route)
    Destination.objects.filter(name="operations").update(slack_channel_id="C0OPS")
    with SlackServer() as slack:
        settings.SLACK_BOT_TOKEN = TOKEN
        settings.SLACK_API_URL = slack.api_url
        slack.fail_next(Reply.hang(60))
        (row,) = enqueue(NotificationKind.SYSTEM_ALERT, Composed("⚠️ API Error"))
        destination = row.destination_id
        env = server_env(tmp_path, {"SLACK_BOT_TOKEN": TOKEN, "SLACK_API_URL": slack.api_url})
        # The task's body, in a process of its own, as a Celery worker child runs it.
        worker = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "shell",
                "-c",
                "from notifications.tasks import drain_destination; "
                f"drain_destination({destination})",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert slack.state.request_started.wait(60), "the worker never reached Slack"
        finally:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(10)
        slack.state.release.set()

        row.refresh_from_db()
        assert row.status == NotificationStatus.SENDING  # left in flight by the dead worker
        assert drain(destination).sent == 0  # nobody else takes it while its lease runs
        lease = settings.NOTIFICATION_LEASE_SECONDS
        with time_machine.travel(timezone.now() + timedelta(seconds=lease + 1), tick=False):
            assert sweep().recovered == 1
            assert drain(destination).sent == 1
            assert sweep().recovered == 0
        assert drain(destination).sent == 0
        posts = slack.posts
    assert [post.body["text"] for post in posts] == ["⚠️ API Error"]
    row.refresh_from_db()
    assert row.status == NotificationStatus.SENT
    assert row.attempts == 2
    outcomes = list(
        DeliveryAttempt.objects.filter(notification=row).values_list("outcome", flat=True)
    )
    assert outcomes == [AttemptOutcome.LOST, AttemptOutcome.SENT]
    assert Notification.objects.filter(status=NotificationStatus.SENDING).count() == 0

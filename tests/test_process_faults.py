"""Real processes through faults: a broker that goes away, and processes that die.

The worker and beat run as docker-compose.yml runs them, on a Redis of the test's own that
is stopped and started again while work is in flight. They must reconnect by themselves; a
process (worker or web) that exits on an error must be missed ("Process stopped reporting"),
not recorded as stopped, while one asked to stop is recorded as stopped.
"""

from __future__ import annotations

import socket
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from inkwave.celery import app as celery_app
from monitoring.alerting.metrics import REGISTRY, Window
from monitoring.models import Worker, WorkerRole
from notifications.formatting import Composed
from notifications.local_slack import TOKEN, Reply, SlackServer
from notifications.models import Destination, Notification, NotificationKind, NotificationStatus
from notifications.outbox import enqueue
from notifications.tasks import drain_destination
from tests.servers import (
    LOG_TAIL_CHARS,
    ROOT,
    SERVER_COMMAND,
    Processes,
    RedisServer,
    compose_command,
    server_env,
    wait_for,
)

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]

# Periodic jobs that would only add noise here run once an hour; pruning runs every second,
# so that beat's scheduling after the outage shows.
QUIET_SCHEDULE = {
    "NOTIFICATION_SWEEP_SECONDS": "3600",
    "ALERT_EVALUATION_SECONDS": "3600",
    "HEALTH_UPDATE_SECONDS": "3600",
    "REPORTS_CHECK_SECONDS": "3600",
    "METRICS_PRUNE_SECONDS": "1",
    "SLACK_MIN_INTERVAL_SECONDS": "0",
}


def reporting(process: subprocess.Popen[bytes], role: str) -> bool:
    return Worker.objects.filter(role=role, pid=process.pid).exists()


def worker_row(process: subprocess.Popen[bytes]) -> Worker:
    return Worker.objects.get(pid=process.pid)


def missing_after_liveness() -> float:
    """ "Process stopped reporting" as the rule sees it, once the liveness has run out."""
    later = timezone.now() + timedelta(seconds=settings.WORKER_LIVENESS_SECONDS + 1)
    return REGISTRY["workers.missing"].compute(Window(later, 300))[""]


def publish(broker_url: str, destination: Destination, **options: Any) -> None:
    """Queue a drain on the test's Redis (the test process's own broker is memory://)."""
    with celery_app.connection_for_write(broker_url) as connection:
        drain_destination.apply_async((destination.pk,), connection=connection, **options)


def send(broker_url: str, destination: Destination, text: str) -> Notification:
    (row,) = enqueue(NotificationKind.SYSTEM_ALERT, Composed(text), destinations=[destination])
    publish(broker_url, destination)
    return row


def status_of(row: Notification) -> str:
    row.refresh_from_db()
    return row.status


def test_worker_and_beat_ride_through_a_redis_restart_with_work_in_flight(
    own_redis: RedisServer, slack_server: SlackServer, tmp_path: Path
) -> None:
    target = Destination.objects.create(name="outage", slack_channel_id="C0OUT")
    idle = Destination.objects.create(name="idle", slack_channel_id="C0IDLE")
    env = server_env(
        tmp_path / "var",
        {
            "REDIS_URL": own_redis.url,
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_API_URL": slack_server.api_url,
            **QUIET_SCHEDULE,
        },
    )
    with Processes(tmp_path) as processes:
        worker = processes.start(compose_command("worker"), env)
        beat = processes.start(compose_command("beat"), env)
        both = (worker, beat)
        wait_for(lambda: reporting(worker, WorkerRole.CELERY), 60, "the worker to report", both)
        wait_for(lambda: reporting(beat, WorkerRole.BEAT), 60, "beat to report", both)

        # Work in flight when Redis goes: a wake-up the worker holds until its countdown
        # (an unacknowledged message), and a send that Slack holds mid-request.
        publish(own_redis.url, idle, countdown=300)
        slack_server.fail_next(Reply.hang(60))
        before = send(own_redis.url, target, "sent across the outage")
        wait_for(slack_server.state.request_started.is_set, 30, "the worker to reach Slack", both)

        own_redis.stop()
        slack_server.state.release.set()  # the send completes; its acknowledgement cannot
        sent = NotificationStatus.SENT
        wait_for(lambda: status_of(before) == sent, 30, "the send to finish", both)
        own_redis.start()

        after = send(own_redis.url, target, "published after the restart")
        wait_for(
            lambda: status_of(after) == sent,
            60,
            "a task published after the restart to complete",
            both,
        )
        # Beat schedules on: its pruning, run by the worker, removes a row made only now.
        long_ago = timezone.now() - timedelta(days=settings.METRICS_RETENTION_DAYS + 1)
        gone = Worker.objects.create(
            name="long-gone", hostname="old", pid=1, started_at=long_ago, last_seen_at=long_ago
        )
        wait_for(
            lambda: not Worker.objects.filter(pk=gone.pk).exists(),
            30,
            "beat's pruning to run after the restart",
            both,
        )
        assert (worker.poll(), beat.poll()) == (None, None)
        texts = [
            post.body["text"] for post in slack_server.posts if post.body["channel"] == "C0OUT"
        ]
        assert texts == ["sent across the outage", "published after the restart"]

        # Asked to stop, they are stopped: no longer counted, and not missed.
        assert processes.stop(worker) == 0
        assert processes.stop(beat) == 0
    assert worker_row(worker).stopped_at is not None
    assert worker_row(beat).stopped_at is not None
    assert missing_after_liveness() == 0


def test_a_worker_that_dies_of_an_error_is_missed_not_stopped(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    crash_file = tmp_path / "crash-now"
    env = server_env(
        tmp_path / "var",
        {"REDIS_URL": own_redis.url, "INKWAVE_TEST_CRASH_FILE": str(crash_file), **QUIET_SCHEDULE},
    )
    command = compose_command("worker")
    command[command.index("inkwave")] = "tests.faulty_celery"
    with Processes(tmp_path) as processes:
        worker = processes.start(command, env)
        wait_for(lambda: reporting(worker, WorkerRole.CELERY), 60, "the worker to report", [worker])

        crash_file.touch()
        assert worker.wait(30) != 0
    row = worker_row(worker)
    assert row.stopped_at is None
    assert missing_after_liveness() == 1


def test_a_web_process_that_dies_of_an_error_is_missed_not_stopped(tmp_path: Path) -> None:
    # Its port is taken: the server starts, reports, then exits on the listen failure.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        log_path = tmp_path / "daphne.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [*SERVER_COMMAND, "-b", "127.0.0.1", "-p", port, "inkwave.asgi:application"],
                cwd=ROOT,
                env=server_env(tmp_path / "var"),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            try:
                server.wait(60)
            finally:
                Processes.stop(server)
    assert "Listen failure" in log_path.read_text(), log_path.read_text()[-LOG_TAIL_CHARS:]
    row = Worker.objects.get(pid=server.pid)
    assert (row.role, row.stopped_at) == (WorkerRole.WEB, None)
    assert missing_after_liveness() == 1

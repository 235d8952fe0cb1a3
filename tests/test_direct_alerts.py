"""Alerts about the database or Redis get out without them, and are recorded afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitoring.alerting import direct
from monitoring.alerting.defaults import install_defaults
from monitoring.models import Incident, IncidentEventKind, IncidentStatus
from notifications.defaults import create_default_routes
from notifications.local_slack import TOKEN, SlackServer
from notifications.models import Destination, Notification, NotificationStatus, Route
from tests.fakes import closed_port
from tests.servers import ServerGroup, poll_until


@pytest.fixture(autouse=True)
def operations_channel(settings: Any) -> None:
    """The direct send's channel: the setting, since the database may be what is down."""
    settings.SLACK_OPERATIONS_CHANNEL_ID = "C0OPS"


@pytest.fixture
def alerter(tmp_path: Path, settings: Any) -> direct.DirectAlerter:
    settings.VAR_DIR = tmp_path
    settings.DIRECT_ALERT_INTERVAL_SECONDS = 900
    return direct.DirectAlerter()


def spooled() -> list[dict[str, Any]]:
    path = direct.spool_path()
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_direct_alert_needs_no_database_and_is_rate_limited(
    slack: SlackServer, alerter: direct.DirectAlerter
) -> None:
    # No django_db mark: pytest-django fails any database access in this test.
    assert alerter.alert("database", "OperationalError: connection refused") is True
    assert alerter.alert("database", "OperationalError: connection refused") is False
    assert alerter.alert("redis", "Redis does not answer PING") is True
    texts = [post.body["text"] for post in slack.posts]
    assert len(texts) == 2
    assert texts[0].startswith("🔴 Database connection lost")
    assert "Error: OperationalError: connection refused" in texts[0]
    assert texts[1].startswith("🔴 Redis unreachable")
    assert [entry["dependency"] for entry in spooled()] == ["database", "redis"]
    assert all(entry["sent"] for entry in spooled())


def test_processes_on_one_host_send_one_message_per_outage(
    slack: SlackServer, alerter: direct.DirectAlerter
) -> None:
    other_process = direct.DirectAlerter()  # its own memory, the same spool file
    assert alerter.alert("database", "refused") is True
    assert other_process.alert("database", "refused") is False
    assert len(slack.posts) == 1


def test_without_slack_the_alert_is_spooled_for_the_outbox(
    alerter: direct.DirectAlerter, settings: Any
) -> None:
    settings.SLACK_BOT_TOKEN = ""
    settings.SLACK_WEBHOOK_URL = ""
    assert alerter.alert("database", "down") is False
    (entry,) = spooled()
    assert entry["sent"] is False


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The loosest umask a process might inherit: file modes are then exactly what we ask."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("permissive_umask")
def test_the_spool_is_readable_by_this_user_only(alerter: direct.DirectAlerter) -> None:
    alerter.alert("database", "OperationalError: password authentication failed")
    assert stat.S_IMODE(direct.spool_path().stat().st_mode) == 0o600


@pytest.mark.usefixtures("permissive_umask")
def test_a_spool_left_world_readable_is_narrowed_and_a_symlink_refused(
    alerter: direct.DirectAlerter, tmp_path: Path
) -> None:
    path = direct.spool_path()
    path.write_text("")
    path.chmod(0o644)
    alerter.alert("redis", "down")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("")
    path.symlink_to(elsewhere)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        direct.take_spool("redis")
    assert elsewhere.read_text() == ""


@pytest.mark.django_db
def test_once_the_database_is_back_the_outage_is_recorded_and_resolved(
    slack: SlackServer, alerter: direct.DirectAlerter, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_default_routes(Destination, Route)
    install_defaults()
    monkeypatch.setattr(direct, "alerter", alerter)
    alerter.alert("database", "OperationalError: connection refused")
    sent_ts = slack.posts[0].ts
    assert direct.record_recovery("database") == 1
    assert spooled() == []
    incident = Incident.objects.get(rule__name="Database connection lost")
    assert incident.status == IncidentStatus.RESOLVED
    kinds = list(incident.events.values_list("kind", flat=True))
    assert kinds == [
        IncidentEventKind.OPENED,
        IncidentEventKind.NOTIFIED,
        IncidentEventKind.RESOLVED,
    ]
    recorded = incident.notification
    assert recorded is not None
    assert recorded.status == NotificationStatus.SENT
    assert recorded.slack_ts == sent_ts
    reply = Notification.objects.get(thread_parent=recorded)
    assert reply.status == NotificationStatus.PENDING
    assert reply.text.startswith("✅ Resolved: Database connection lost")
    assert direct.record_recovery("database") == 0  # taken once


async def first_direct_alerts(slack: SlackServer, tmp_path: Path, **broken: str) -> list[Any]:
    """Start a real server with a broken dependency; what reaches Slack within 20 s."""
    with ServerGroup(tmp_path / "servers") as group:
        group.start(
            SLACK_BOT_TOKEN=TOKEN,
            SLACK_API_URL=slack.api_url,
            SLACK_OPERATIONS_CHANNEL_ID="C0OPS",
            **broken,
        )

        async def posts() -> list[Any]:
            return slack.posts

        arrived = await poll_until(posts, lambda found: len(found) >= 1, 20)
        assert arrived, "no direct alert reached Slack"
        # Several more flushes fail meanwhile; the rate limit keeps them out of Slack.
        await asyncio.sleep(2)
    return slack.posts


@pytest.mark.system
@pytest.mark.django_db(transaction=True)
async def test_a_server_whose_database_is_down_tells_slack_directly(
    slack: SlackServer, tmp_path: Path
) -> None:
    url = f"postgres://postgres@127.0.0.1:{closed_port()}/inkwave"
    arrived = await first_direct_alerts(slack, tmp_path, DATABASE_URL=url)
    assert arrived[0].body["channel"] == "C0OPS"
    assert arrived[0].body["text"].startswith("🔴 Database connection lost")
    assert len(arrived) == 1  # ~7 failed flushes, one message per interval


@pytest.mark.system
@pytest.mark.django_db(transaction=True)
async def test_a_server_that_loses_redis_tells_slack_directly(
    slack: SlackServer, tmp_path: Path
) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    arrived = await first_direct_alerts(slack, tmp_path, REDIS_URL=url)
    assert arrived[0].body["text"].startswith("🔴 Redis unreachable")
    assert len(arrived) == 1


# --- processes on different hosts: one message per outage ----------------------------------


class Host:
    """A process on its own host (container): its own spool and its own pid."""

    def __init__(self, name: str, pid: int, var_dir: Path) -> None:
        self.name, self.pid, self.var_dir = name, pid, var_dir
        var_dir.mkdir(exist_ok=True)
        self.alerter = direct.DirectAlerter()

    def enter(self, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Host:
        settings.VAR_DIR = self.var_dir
        monkeypatch.setattr(direct.socket, "gethostname", lambda: self.name)
        monkeypatch.setattr(direct.os, "getpid", lambda: self.pid)
        monkeypatch.setattr(direct, "alerter", self.alerter)
        return self


@pytest.fixture
def hosts(tmp_path: Path, settings: Any) -> list[Host]:
    settings.DIRECT_ALERT_INTERVAL_SECONDS = 900
    return [Host(f"web-{n}", 100 + n, tmp_path / f"host-{n}") for n in (1, 2, 3)]


@pytest.mark.django_db
@pytest.mark.parametrize("dependency", ["database", "redis"])
def test_hosts_that_share_no_spool_send_one_message_through_the_store_still_up(
    slack: SlackServer,
    hosts: list[Host],
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    dependency: str,
) -> None:
    """The database's outage is claimed in Redis, Redis's in the database."""
    sent = [host.enter(settings, monkeypatch).alerter.alert(dependency, "down") for host in hosts]
    assert sent == [True, False, False]
    assert len(slack.posts) == 1
    for host in hosts[1:]:
        settings.VAR_DIR = host.var_dir
        (entry,) = spooled()
        assert entry["elsewhere"] is True  # it saw the outage; another host told Slack


def test_with_the_other_store_down_too_every_host_sends(
    slack: SlackServer, hosts: list[Host], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"  # nobody to agree with
    sent = [
        host.enter(settings, monkeypatch).alerter.alert("database", "down") for host in hosts[:2]
    ]
    assert sent == [True, True]
    assert len(slack.posts) == 2


@pytest.mark.django_db
def test_one_outage_seen_by_three_hosts_is_one_incident_and_one_reply(
    slack: SlackServer, hosts: list[Host], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_default_routes(Destination, Route)
    install_defaults()
    for host in hosts:
        host.enter(settings, monkeypatch).alerter.alert("database", "refused")
    # Recovering in an order that puts the host that told Slack in the middle: the hosts
    # before it have nothing to reply to yet.
    for host in (hosts[2], hosts[0], hosts[1]):
        host.enter(settings, monkeypatch)
        direct.record_recovery("database")
    (incident,) = Incident.objects.all()
    assert Notification.objects.filter(context__direct=True).count() == 1  # what was posted
    (reply,) = Notification.objects.filter(context__recovery=incident.pk)
    assert reply.thread_parent_id == incident.notification_id
    assert reply.text.startswith("✅ Resolved: Database connection lost")
    for host in hosts:
        assert f"{host.name} (pid {host.pid})" in reply.text
    # The claim is released with the recovery: the next outage is news again.
    assert hosts[1].enter(settings, monkeypatch).alerter.alert("database", "again")

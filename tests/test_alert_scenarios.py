"""What an on-call person reads: alert timelines replayed through the engine under a
controlled clock, every notification delivered to the local Slack server as the workers
deliver it, and the Slack calls counted (posts, thread replies, edits) with their times.

The timelines are those of the side-by-side run with Alertmanager (issue 9): a storm over
8 venues, flapping that stops, flapping that then stays firing, a dependency outage with
three dependents, a 3-hour unacknowledged critical alert, and a silence that an alert
resolves and re-fires across. In each, every change an operator must know is said once,
nothing goes silent while a critical alert fires, and no more is sent than grouping promises.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from monitoring.alerting import metrics
from monitoring.alerting.defaults import install_defaults
from monitoring.alerting.engine import run_cycle
from monitoring.models import AlertRule, Incident, IncidentStatus, Silence, WebSocketSample, Worker
from notifications import delivery
from notifications.defaults import create_default_routes
from notifications.local_slack import Post, SlackServer
from notifications.models import Destination, Route
from tests.fakes import closed_port

pytestmark = pytest.mark.django_db

START = datetime(2026, 6, 5, 12, 0, tzinfo=UTC)
CHANNEL = "C0OPS"


@dataclass(frozen=True)
class Call:
    kind: str  # "post", "reply", "broadcast reply" or "edit"
    at: float  # seconds since START
    text: str


def classify(post: Post) -> Call:
    body = post.body
    if post.path.endswith("chat.update"):
        kind = "edit"
    elif body.get("thread_ts"):
        kind = "broadcast reply" if body.get("reply_broadcast") else "reply"
    else:
        kind = "post"
    return Call(kind, round(post.at - START.timestamp()), body.get("text", ""))


class Channel:
    """The engine every minute, the outbox drained as workers drain it, Slack counted."""

    def __init__(self, clock: Any, slack: SlackServer) -> None:
        self.clock, self.slack = clock, slack
        self.operations = Destination.objects.get(name="operations")

    def run(self, minutes: int, feed: Callable[[int], None] = lambda minute: None) -> None:
        for _ in range(minutes):
            minute = int((timezone.now() - START).total_seconds() // 60)
            feed(minute)
            run_cycle()
            self._deliver_until(timezone.now() + timedelta(seconds=60))

    def _deliver_until(self, end: datetime) -> None:
        while True:
            result = delivery.drain(self.operations.pk)
            wait = result.wait
            if wait is None or timezone.now() + timedelta(seconds=wait) >= end:
                break
            self.clock.shift(max(wait, 0.001))
        self.clock.move_to(end)

    @property
    def calls(self) -> list[Call]:
        return [classify(post) for post in self.slack.posts]

    def count(self, *kinds: str) -> int:
        return sum(1 for call in self.calls if call.kind in kinds)

    def tally(self) -> dict[str, int]:
        kinds = ("post", "reply", "broadcast reply", "edit")
        return {kind: self.count(kind) for kind in kinds}


@pytest.fixture
def channel(settings: Any, slack: SlackServer) -> Iterator[Channel]:
    settings.ALERT_GROUP_WAIT_SECONDS = 30
    settings.ALERT_EVALUATION_SECONDS = 60
    settings.ALERT_FLAP_WINDOW_SECONDS = 3600
    settings.SLACK_MIN_INTERVAL_SECONDS = 1
    settings.WORKER_LIVENESS_SECONDS = 3600
    create_default_routes(Destination, Route)
    install_defaults()
    AlertRule.objects.update(enabled=False)
    Destination.objects.filter(name="operations").update(slack_channel_id=CHANNEL)
    with time_machine.travel(START, tick=False) as clock:
        yield Channel(clock, slack)


VENUES = [str(n) for n in range(1, 9)]


@pytest.fixture
def venue_failures(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """A per-venue metric whose values the timeline sets (the storm is about grouping, not
    about how a venue's failure rate is computed)."""
    values: dict[str, float] = {}
    monkeypatch.setitem(
        metrics.REGISTRY,
        "venue.failures",
        metrics.Metric(
            "venue.failures", "Failed orders", "%", lambda window: dict(values), per_venue=True
        ),
    )
    return values


def rule(**fields: Any) -> AlertRule:
    defaults: dict[str, Any] = {
        "metric": "venue.failures",
        "comparison": "gt",
        "threshold": 5,
        "window_seconds": 60,
        "pending_seconds": 0,
        "clear_seconds": 120,
        "severity": "critical",
        "repeat_interval_seconds": 4 * 3600,
        "escalation_delay_seconds": 15 * 60,
    }
    return AlertRule.objects.create(**{**defaults, **fields})


# --- the storm ----------------------------------------------------------------------------


def test_a_storm_over_eight_venues_is_one_thread(
    channel: Channel, venue_failures: dict[str, float]
) -> None:
    """4 venues fail, 4 more two minutes later; the first 4 recover at minute 8, the rest at
    minute 10. Alertmanager sent 2 messages; 8 replies and 8 edits were sent before."""
    rule(name="Failed orders", escalation_delay_seconds=0)

    def feed(minute: int) -> None:
        for venue in VENUES:
            started = 0 if int(venue) <= 4 else 2
            ended = 8 if int(venue) <= 4 else 10
            venue_failures[venue] = 40.0 if started <= minute < ended else 0.0

    channel.run(16, feed)
    calls = channel.calls
    assert [c.kind for c in calls] == [
        "post",  # 4 alerts, after the group wait
        "edit",  # the post, now with 8
        "broadcast reply",  # the 4 that joined, in one reply shown in the channel
        "reply",  # venues 1-4 resolved, 5-8 still firing
        "edit",
        "reply",  # venues 5-8 resolved: all of them
        "edit",
    ], dump(channel)
    post, grown, joined, first_end, _, last_end, final = calls
    assert post.at == 30
    assert post.text.startswith("⚠️ 4 alerts (4 firing)")
    assert joined.text.count("🆕 Joined this group") == 4
    assert "(venue 5)" in joined.text
    assert grown.text.startswith("⚠️ 8 alerts (8 firing)")
    for venue in ("1", "2", "3", "4"):
        assert f"✅ Resolved: Failed orders (venue {venue})" in first_end.text
    assert "Still firing: Failed orders (venue 5), Failed orders (venue 6)" in first_end.text
    assert "Every alert of this group has resolved." in last_end.text
    assert final.text.startswith("✅ 8 alerts, all resolved")
    assert "[CRITICAL]" not in final.text
    assert Incident.objects.filter(status=IncidentStatus.FIRING).count() == 0
    assert channel.tally() == {"post": 1, "reply": 2, "broadcast reply": 1, "edit": 3}


# --- flapping -----------------------------------------------------------------------------


def flapping_until(minute: int) -> Callable[[int], bool]:
    """Breaching every other minute until `minute`."""
    return lambda now: now < minute and now % 4 < 2


def test_flapping_that_stops_is_announced_once_and_again_when_it_settles(
    channel: Channel, venue_failures: dict[str, float]
) -> None:
    rule(name="Failed orders", clear_seconds=0, severity="warning", flap_threshold=4)
    breaching = flapping_until(20)

    def feed(minute: int) -> None:
        venue_failures["1"] = 40.0 if breaching(minute) else 0.0

    channel.run(40, feed)
    calls = channel.calls
    notices = [c for c in calls if c.text.startswith("🔁 Flapping")]
    assert len(notices) == 1
    # Two openings and their resolutions, the notice; nothing until it settles.
    before = calls[: calls.index(notices[0]) + 1]
    assert [c.kind for c in before] == ["post", "reply", "edit", "post", "reply", "edit", "post"], (
        dump(channel)
    )
    after = calls[calls.index(notices[0]) + 1 :]
    assert [c.kind for c in after] == ["edit", "broadcast reply"], dump(channel)
    edited, settled = after
    assert "settled resolved" in edited.text
    assert settled.text.startswith("✅ Settled: Failed orders (venue 1) has been clear for")
    # The last change (minute 18 resolves) plus the settle period (10 minutes).
    assert 28 * 60 <= settled.at <= 30 * 60
    assert channel.tally() == {"post": 3, "reply": 2, "broadcast reply": 1, "edit": 3}


def test_a_critical_alert_that_flaps_and_then_fires_is_announced_and_escalated(
    channel: Channel, venue_failures: dict[str, float]
) -> None:
    """Flapping for 20 minutes, then firing for 2 hours: before, the last message was the
    flapping notice, for good. Now: announced once it holds, escalated, reminded."""
    rule(
        name="Failed orders",
        clear_seconds=0,
        flap_threshold=4,
        repeat_interval_seconds=3600,
    )
    breaching = flapping_until(20)

    def feed(minute: int) -> None:
        venue_failures["1"] = 40.0 if breaching(minute) or minute >= 20 else 0.0

    channel.run(140, feed)
    calls = channel.calls
    (notice,) = [c for c in calls if c.text.startswith("🔁 Flapping")]
    after = calls[calls.index(notice) + 1 :]
    assert [c.kind for c in after] == [
        "edit",  # the notice: settled firing
        "post",  # announced as firing, like any alert
        "broadcast reply",  # escalation: nobody on call, shown in the channel
        "broadcast reply",  # an hour later: a reminder, shown in the channel too
    ]
    settled_edit, announced, escalated, *reminders = after
    assert "settled firing" in settled_edit.text
    assert announced.text.startswith("🔴 Failed orders (venue 1)")
    assert "without a break" in announced.text
    assert escalated.text.startswith("🚨 Escalation: Failed orders (venue 1)")
    assert "nobody is on call" in escalated.text
    # Announced once it held firing for the settle period; escalated 15 minutes later.
    assert announced.at - 20 * 60 in range(10 * 60, 11 * 60)
    assert escalated.at - announced.at in range(15 * 60 - 1, 16 * 60)
    assert all(r.text.startswith("⏰ Still firing") for r in reminders)
    # Nothing goes quiet for longer than the repeat interval while it fires.
    times = [c.at for c in calls] + [140 * 60]
    assert max(b - a for a, b in itertools.pairwise(times)) <= 3600 + 60
    assert channel.tally() == {"post": 4, "reply": 2, "broadcast reply": 2, "edit": 3}


# --- a dependency and its dependents ------------------------------------------------------


def test_a_redis_outage_is_one_alert_and_its_dependents_wait_for_their_windows(
    channel: Channel, settings: Any
) -> None:
    """Redis is down for 5 minutes; the error rate, connection spike and disconnection spike
    all breach because of it. One message (and its resolution); of the three, only what
    still breaches once its window no longer covers the outage is announced."""
    AlertRule.objects.filter(
        name__in=["Redis unreachable", "High error rate", "Connection spike", "Disconnection spike"]
    ).update(enabled=True, escalation_delay_seconds=0)
    web = Worker.objects.create(
        name="web-1", role="web", hostname="h", pid=1, started_at=START, last_seen_at=START
    )
    up = settings.REDIS_URL

    def feed(minute: int) -> None:
        settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0" if minute < 5 else up
        storm = minute < 7  # clients thrown out reconnect into the following minutes
        errors = 10 if minute < 12 else 0  # the error rate stays high on its own afterwards
        row = WebSocketSample.objects.create(
            worker=web,
            recorded_at=timezone.now(),
            interval_seconds=60,
            connections=60 if storm else 1,
            disconnections=60 if storm else 0,
            messages_received=100,
            errors=errors,
        )
        Worker.objects.filter(pk=web.pk).update(last_seen_at=timezone.now(), last_sample=row)

    channel.run(25, feed)
    calls = channel.calls
    posts = [c for c in calls if c.kind == "post"]
    assert posts[0].text.startswith("🔴 Redis unreachable")
    assert not any("spike" in c.text for c in calls)  # explained by the outage: never sent
    # The error rate outlived the outage's window: announced once, then resolved.
    (error_rate,) = [c for c in posts if "High error rate" in c.text]
    assert error_rate.at >= (5 + 5) * 60
    assert len(posts) == 2
    assert channel.tally() == {"post": 2, "reply": 2, "broadcast reply": 0, "edit": 2}


# --- a long unacknowledged critical alert -------------------------------------------------


def test_a_three_hour_unacknowledged_critical_alert_escalates_and_keeps_reminding(
    channel: Channel, venue_failures: dict[str, float]
) -> None:
    rule(name="Failed orders", repeat_interval_seconds=3600)
    venue_failures["1"] = 40.0
    channel.run(180)
    assert [c.kind for c in channel.calls] == [
        "post",
        "broadcast reply",  # escalation at 15 minutes
        "broadcast reply",  # reminders an hour apart
        "broadcast reply",
    ], dump(channel)
    _, escalated, first, second = channel.calls
    assert escalated.at == 15 * 60  # counted from the opening, not from the group wait
    assert escalated.text.startswith("🚨 Escalation: Failed orders (venue 1)")
    assert first.text.startswith("⏰ Still firing after 75 minutes")  # an hour after the last
    assert second.at - first.at == 3600
    assert channel.tally() == {"post": 1, "reply": 0, "broadcast reply": 3, "edit": 0}


# --- a silence ----------------------------------------------------------------------------


def test_an_alert_that_resolves_and_fires_again_inside_a_silence(
    channel: Channel, venue_failures: dict[str, float]
) -> None:
    """Announced before the silence; resolves inside it (its post is corrected, nothing is
    posted); fires again inside it (held); the silence ends: one summary, then the alert
    that still fires. Alertmanager muted the resolution and never announced the re-firing."""
    failed = rule(name="Failed orders", severity="warning", clear_seconds=0)
    Silence.objects.create(
        reason="kitchen printer swap",
        rule=failed,
        starts_at=START + timedelta(minutes=5),
        ends_at=START + timedelta(minutes=35),
    )

    def feed(minute: int) -> None:
        venue_failures["1"] = 40.0 if minute < 10 or minute >= 20 else 0.0

    channel.run(45, feed)
    assert [c.kind for c in channel.calls] == ["post", "edit", "post", "post"], dump(channel)
    post, corrected, summary, announced = channel.calls
    assert post.at == 30
    assert corrected.text.startswith("✅ Resolved: Failed orders (venue 1)")
    assert 10 * 60 <= corrected.at < 11 * 60
    assert summary.text.startswith("🔕 Silence ended: kitchen printer swap")
    assert "Failed orders (venue 1): resolved at 2026-06-05 12:10 PM UTC" in summary.text
    assert "fired at 2026-06-05 12:20 PM UTC and is still firing" in summary.text
    assert announced.text.startswith("🟠 Failed orders (venue 1)")
    assert 35 * 60 <= summary.at < announced.at < 37 * 60
    assert channel.tally() == {"post": 3, "reply": 0, "broadcast reply": 0, "edit": 1}


def dump(channel: Channel) -> str:
    return "\n".join(f"{c.at:>6} {c.kind:<16} {c.text[:150]!r}" for c in channel.calls)

"""A rule firing at many venues at once (a platform-wide fault): each group's Slack post is
composed once per cycle, not once per member, and the venues that fire on are carried in
bulk, so a cycle's work does not grow with the square of the venues (bench/alert_storm.py
measures it at thousands)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from monitoring.alerting import groups, incidents, messages, metrics, notify, suppression
from monitoring.alerting.engine import run_cycle
from monitoring.models import (
    AlertRule,
    AlertState,
    Incident,
    IncidentEvent,
    IncidentEventKind,
    IncidentStatus,
    Inhibition,
    Silence,
)
from notifications.defaults import create_default_routes
from notifications.models import Destination, Notification, NotificationStatus, Route

pytestmark = pytest.mark.django_db

START = datetime(2026, 6, 5, 19, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def setup(db: Any, settings: Any) -> None:
    create_default_routes(Destination, Route)
    AlertRule.objects.update(enabled=False)
    settings.ALERT_GROUP_WAIT_SECONDS = 30


@pytest.fixture
def clock() -> Iterator[Any]:
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


@pytest.fixture
def values(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """A per-venue metric the test sets (the storm is about the engine, not the metric)."""
    found: dict[str, float] = {}
    monkeypatch.setitem(
        metrics.REGISTRY,
        "venue.storm",
        metrics.Metric("venue.storm", "Failures", "%", lambda w: dict(found), per_venue=True),
    )
    return found


@pytest.fixture
def composed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every group message composed."""
    sizes: list[int] = []
    compose = messages.incident_message

    def counted(members: Any) -> Any:
        sizes.append(len(members))
        return compose(members)

    monkeypatch.setattr(messages, "incident_message", counted)
    # Composed at the end of the cycle only, however slow the machine (compose_due's test).
    monkeypatch.setattr(groups, "COMPOSE_EVERY_SECONDS", 3600.0)
    return sizes


STORM_RULE = "Venue failures"


def storm_rule() -> AlertRule:
    return AlertRule.objects.create(
        name=STORM_RULE,
        metric="venue.storm",
        comparison="gt",
        threshold=5,
        window_seconds=60,
        pending_seconds=0,
        clear_seconds=60,
        severity="warning",
        repeat_interval_seconds=3600,
        group_by="rule",
    )


def fire(values: dict[str, float], venues: range, value: float = 40.0) -> None:
    values.update({str(v): value for v in venues})


def rows_since(mark: int) -> list[Notification]:
    return list(Notification.objects.filter(pk__gt=mark).order_by("pk"))


def last_row() -> int:
    return Notification.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def test_a_storm_is_one_post_composed_once_per_cycle_as_it_grows_and_ends(
    clock: Any, values: dict[str, float], composed: list[int]
) -> None:
    storm_rule()
    fire(values, range(1, 31))
    run_cycle()
    (post,) = Notification.objects.filter(destination__name="operations")
    assert post.text.startswith("⚠️ 30 alerts (30 firing)")
    # The first member's message starts the group; the 30 are composed once, at the end.
    assert composed == [1, 30]
    Notification.objects.filter(pk=post.pk).update(
        status=NotificationStatus.SENT, slack_ts="1.000100", sent_at=timezone.now()
    )

    clock.shift(60)
    composed.clear()
    mark = last_row()
    fire(values, range(31, 61))
    run_cycle()
    edit, joined = rows_since(mark)
    assert composed == [60]
    assert (edit.update_target_id, joined.thread_parent_id) == (post.pk, post.pk)
    assert edit.text.startswith("⚠️ 60 alerts (60 firing)")
    assert joined.text.count("🆕 Joined this group") == 30
    assert joined.broadcast
    assert IncidentEvent.objects.filter(message="joined an open group").count() == 30

    clock.shift(60)
    composed.clear()
    mark = last_row()
    run_cycle()
    assert (composed, rows_since(mark)) == ([], [])  # firing on: nothing to say

    for venue in range(1, 31):
        values[str(venue)] = 0.0
    clock.shift(60)
    run_cycle()  # clearing
    clock.shift(60)
    composed.clear()
    mark = last_row()
    Notification.objects.filter(pk=edit.pk).update(status=NotificationStatus.SENT)
    run_cycle()
    resolved, edited = rows_since(mark)
    assert composed == [60]
    assert resolved.text.count("✅ Resolved: Venue failures") == 30
    assert resolved.text.count("Still firing:") == 1
    assert edited.text.startswith("⚠️ 60 alerts (30 firing)")
    assert Incident.objects.filter(status=IncidentStatus.RESOLVED).count() == 30


def test_a_long_cycle_composes_what_it_gathered_every_few_seconds(
    clock: Any, values: dict[str, float], composed: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle longer than the group wait (thousands of openings) composes as it goes: the
    post the outbox sends once it is due holds nearly all that opened."""
    monkeypatch.setattr(groups, "COMPOSE_EVERY_SECONDS", 0.0)
    storm_rule()
    fire(values, range(1, 6))
    run_cycle()
    assert composed == [1, 2, 3, 4, 5]
    (post,) = Notification.objects.filter(destination__name="operations")
    assert post.text.startswith("⚠️ 5 alerts (5 firing)")


def steady_queries(clock: Any, values: dict[str, float], venues: int) -> int:
    """The queries of the cycle after `venues` opened (the storm rule starting afresh)."""
    Incident.objects.filter(rule__name=STORM_RULE).delete()
    AlertState.objects.filter(rule__name=STORM_RULE).delete()
    fire(values, range(1, venues + 1))
    run_cycle()
    clock.shift(60)
    with CaptureQueriesContext(connection) as queries:
        run_cycle()
    return len(queries)


def test_venues_that_fire_on_are_carried_in_bulk_whatever_their_number(
    clock: Any, values: dict[str, float]
) -> None:
    rule = storm_rule()
    few = steady_queries(clock, values, 10)
    many = steady_queries(clock, values, 60)
    assert many == few
    firing = Incident.objects.filter(rule=rule, status=IncidentStatus.FIRING)
    assert firing.count() == 60

    clock.shift(60)
    values["7"] = 55.0
    values["8"] = 6.0
    run_cycle()
    seven, eight = firing.get(scope="7"), firing.get(scope="8")
    assert (seven.occurrences, seven.peak_value, seven.last_value) == (3, 55.0, 55.0)
    assert (eight.occurrences, eight.peak_value, eight.last_value) == (3, 40.0, 6.0)
    assert eight.last_seen_at == timezone.now()
    state = AlertState.objects.get(rule=rule, scope="8")
    assert (state.last_value, state.last_evaluated_at) == (6.0, timezone.now())
    assert state.breaching_since is not None


def test_a_storm_held_by_a_silence_is_carried_in_bulk_and_announced_when_it_ends(
    clock: Any, values: dict[str, float]
) -> None:
    """A maintenance window over every venue: the incidents open held back; while the
    silence holds, each cycle reads the silences once for all of them (not a query per
    venue); once it ends, what still fires is announced."""
    rule = storm_rule()
    Silence.objects.create(
        reason="deploy", rule=rule, starts_at=START, ends_at=START + timedelta(minutes=10)
    )
    assert steady_queries(clock, values, 10) == steady_queries(clock, values, 40)
    assert not Notification.objects.filter(destination__name="operations").exists()
    clock.shift(10 * 60)
    run_cycle()
    post, summary = Notification.objects.filter(destination__name="operations").order_by("-pk")
    assert summary.text.startswith("🔕 Silence ended: deploy")
    assert post.text.startswith("⚠️ 40 alerts (40 firing)"), post.text


def test_a_storm_held_back_by_an_inhibition_is_carried_in_bulk_and_announced_after(
    clock: Any, values: dict[str, float]
) -> None:
    """The venues' rule is held back while a cause fires (as the database's outage holds
    every rule that needs the database): the inhibition is read once for all the venues,
    and what still fires is announced once the cause is over."""
    rule = storm_rule()
    cause = AlertRule.objects.create(name="Cause", metric="venue.storm", threshold=1000)
    Inhibition.objects.create(source=cause, target=rule, same_scope=False)
    outage = Incident.objects.create(
        rule=cause, title="Cause", severity="critical", opened_at=START, last_seen_at=START,
        first_value=1, peak_value=1, last_value=1,
    )  # fmt: skip
    assert steady_queries(clock, values, 10) == steady_queries(clock, values, 40)
    assert not Notification.objects.exists()
    Incident.objects.filter(pk=outage.pk).update(
        status=IncidentStatus.RESOLVED, resolved_at=timezone.now() - timedelta(hours=1)
    )
    clock.shift(60)
    run_cycle()
    (post,) = Notification.objects.filter(destination__name="operations")
    assert post.text.startswith("⚠️ 40 alerts (40 firing)"), post.text


def test_a_reminder_due_at_one_venue_of_a_storm_is_sent_there_alone(
    clock: Any, values: dict[str, float]
) -> None:
    storm_rule()
    fire(values, range(1, 21))
    run_cycle()
    Incident.objects.filter(scope="4").update(last_notified_at=timezone.now() - timedelta(hours=2))
    clock.shift(60)
    run_cycle()
    reminded = IncidentEvent.objects.filter(kind=IncidentEventKind.REMINDED)
    assert sorted(reminded.values_list("incident__scope", flat=True)) == ["4"]


def two_firing_and_sent(clock: Any, values: dict[str, float]) -> AlertRule:
    """Two venues firing, their group's post sent to Slack, a minute before."""
    rule = storm_rule()
    fire(values, range(1, 3))
    run_cycle()
    (post,) = Notification.objects.filter(destination__name="operations")
    Notification.objects.filter(pk=post.pk).update(
        status=NotificationStatus.SENT, slack_ts="1.000100", sent_at=timezone.now()
    )
    clock.shift(60)
    return rule


@pytest.mark.django_db(transaction=True)  # the deferred constraints are checked at commit
def test_a_member_whose_transaction_rolled_back_is_left_out_of_its_group(
    clock: Any, values: dict[str, float]
) -> None:
    """A cycle's opening that failed after it joined the group (its transaction rolled back)
    is not composed into the post, and does not stop the members that did open."""
    rule = two_firing_and_sent(clock, values)
    now, mark = timezone.now(), last_row()
    with groups.composed_once(now):
        with transaction.atomic():
            third = incidents.open_incident(rule, "3", 9.0, now, "over 5")
            notify.opened(third, now)
        try:
            with transaction.atomic():
                gone = incidents.open_incident(rule, "99", 9.0, now, "over 5")
                notify.opened(gone, now)
                raise RuntimeError("the cycle failed after the opening")
        except RuntimeError:
            pass
    edit, joined = rows_since(mark)
    assert edit.text.startswith("⚠️ 3 alerts (3 firing)")
    assert joined.text.count("🆕 Joined this group") == 1
    assert "(venue 3)" in joined.text
    assert not Incident.objects.filter(scope="99").exists()


def test_a_cycle_that_died_before_composing_is_caught_up_by_the_next(
    clock: Any, values: dict[str, float]
) -> None:
    """The process died after the openings committed and before their group's post was
    composed (SIGKILL mid-cycle): the next cycle sees the post behind its members and
    composes it, with the reply the channel missed."""
    rule = two_firing_and_sent(clock, values)
    now, mark = timezone.now(), last_row()
    with groups.composed_once(now):
        for scope in ("3", "4"):
            with transaction.atomic():
                notify.opened(incidents.open_incident(rule, scope, 9.0, now, "over 5"), now)
        assert groups._gathered.changes
        groups._gathered.changes.clear()  # what a SIGKILL leaves: nothing composed
    assert rows_since(mark) == []

    fire(values, range(3, 5), 9.0)
    clock.shift(15)
    run_cycle()
    edit, joined = rows_since(mark)
    assert edit.text.startswith("⚠️ 4 alerts (4 firing)")
    assert joined.text.count("🆕 Joined this group") == 2
    mark = last_row()
    run_cycle()
    assert rows_since(mark) == []  # caught up once


def test_the_scopes_held_back_are_those_suppression_holds_back_one_by_one(clock: Any) -> None:
    """held_scopes (asked once for a rule's venues) against suppression (asked per incident):
    a silence of one venue, a cause firing at two venues (same scope), one over since."""
    rule = storm_rule()
    cause = AlertRule.objects.create(name="Cause", metric="venue.storm", threshold=1000)
    Inhibition.objects.create(source=cause, target=rule, same_scope=True)
    Silence.objects.create(
        reason="one venue", scope="3", starts_at=START, ends_at=START + timedelta(hours=1)
    )
    for scope, resolved in (("2", None), ("5", None), ("6", START - timedelta(hours=2))):
        Incident.objects.create(
            rule=cause, scope=scope, title="Cause", severity="critical", opened_at=START,
            last_seen_at=START, first_value=1, peak_value=1, last_value=1,
            status=IncidentStatus.RESOLVED if resolved else IncidentStatus.FIRING,
            resolved_at=resolved,
        )  # fmt: skip
    scopes = [str(n) for n in range(1, 8)]
    now = timezone.now()
    one_by_one = {
        scope for scope in scopes if suppression.suppression(Incident(rule=rule, scope=scope), now)
    }
    assert one_by_one == {"2", "3", "5"}
    assert suppression.held_scopes(rule, scopes, now) == one_by_one

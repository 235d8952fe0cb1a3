"""Acting on incidents from Slack: signed clicks, who may act, the admin's code path, the
message edited in place, and the refusals (ephemeral, logged, nothing changed)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
import structlog.testing
import time_machine
from celery import current_app
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import close_old_connections, connections
from django.test import Client
from django.utils import timezone

from monitoring.alerting import messages
from monitoring.alerting.buttons import Action
from monitoring.alerting.engine import run_cycle
from monitoring.models import (
    AlertRule,
    Incident,
    IncidentEventKind,
    IncidentStatus,
    Silence,
    WebSocketSample,
    Worker,
)
from monitoring.slackapp.views import DATABASE_DOWN
from notifications import delivery
from notifications.formatting import MARKER
from notifications.local_slack import Reply, SlackServer
from notifications.models import (
    Destination,
    Notification,
    NotificationKind,
    SlackLinkSource,
    SlackRequestSeen,
    SlackUser,
)
from notifications.outbox import enqueue
from notifications.slack import SlackMessage, webhook_payload
from notifications.slack_requests import sign
from notifications.tasks import respond
from tests.fakes import closed_port

# Committed, as in production: a click's answers leave once its transaction commits.
pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
URL = "/slack/interactivity"
START = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
TRIGGERS = itertools.count()


@pytest.fixture(autouse=True)
def setup(settings: Any, slack_channels: SlackServer) -> None:
    settings.SLACK_SIGNING_SECRET = SECRET
    settings.ALERT_GROUP_WAIT_SECONDS = 0
    settings.SLACK_MIN_INTERVAL_SECONDS = 0
    settings.TIME_ZONE = "Europe/London"
    settings.PUBLIC_URL = "https://ops.example.com"
    # The request waits for its task's publish (instant on the in-memory broker) rather than
    # the tests sleeping for it.
    settings.NOTIFICATION_DISPATCH_WAIT_SECONDS = 30
    AlertRule.objects.update(enabled=False)
    published()  # what earlier tests left in the in-memory broker


@pytest.fixture
def clock() -> Iterator[Any]:
    with time_machine.travel(START, tick=True) as traveller:
        yield traveller


def operations() -> Destination:
    return Destination.objects.get(name="operations")


def open_incident(name: str = "Spike test", **rule: Any) -> Incident:
    """A real incident: a rule over its threshold, one evaluation, its post sent to Slack."""
    fields = {
        "severity": "warning",
        "repeat_interval_seconds": 0,
        "escalation_delay_seconds": 0,
        **rule,
    }
    AlertRule.objects.create(
        name=name,
        metric="ws.new_connections_per_minute",
        comparison="gte",
        threshold=50,
        window_seconds=60,
        pending_seconds=0,
        clear_seconds=0,
        **fields,
    )
    evaluate()
    delivery.drain(operations().pk)
    return Incident.objects.select_related("rule").get(title=name)


def evaluate() -> None:
    """One evaluation cycle over a fresh sample above the threshold, and its posts sent."""
    now = timezone.now()
    worker, _ = Worker.objects.update_or_create(
        name="web-1",
        defaults={"hostname": "h", "pid": 1, "last_seen_at": now},
        create_defaults={
            "hostname": "h",
            "pid": 1,
            "started_at": now - timedelta(hours=1),
            "last_seen_at": now,
        },
    )
    WebSocketSample.objects.create(
        worker=worker, recorded_at=now, interval_seconds=10, connections=75
    )
    run_cycle()
    delivery.drain(operations().pk)


def make_user(name: str, slack_id: str, *perms: str) -> Any:
    user = unlinked_user(name, f"{name}@example.com", *perms)
    SlackUser.objects.create(user=user, slack_user_id=slack_id)
    return user


def unlinked_user(name: str, email: str, *perms: str, active: bool = True) -> Any:
    user = get_user_model().objects.create_user(name, email, "pw", is_staff=True, is_active=active)
    user.user_permissions.add(*Permission.objects.filter(codename__in=perms))
    return user


@pytest.fixture
def ana() -> Any:
    return make_user("ana", "U0ANA", "change_incident", "add_silence")


def click_body(action: str, value: str, *, user: str = "U0ANA", name: str = "ana.s") -> bytes:
    post = Notification.objects.filter(destination__name="operations").exclude(slack_ts="").first()
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": name, "name": name, "team_id": "T000"},
        "api_app_id": "A000",
        "container": {
            "type": "message",
            "message_ts": post.slack_ts if post else "1.1",
            "channel_id": "C0OPS",
            "is_ephemeral": False,
        },
        "trigger_id": f"1.2.{next(TRIGGERS)}",
        "response_url": SlackServer_response_url[0],
        "actions": [
            {
                "action_id": action,
                "block_id": f"incident:{value}",
                "value": value,
                "type": "button",
                "action_ts": "1.3",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


SlackServer_response_url = [""]


@pytest.fixture(autouse=True)
def response_url(slack_channels: SlackServer) -> None:
    SlackServer_response_url[0] = slack_channels.response_url()


def signed_post(
    client: Client,
    body: bytes,
    *,
    url: str = URL,
    secret: str = SECRET,
    at: float | None = None,
    signature: str | None = None,
) -> Any:
    timestamp = str(int(time.time() if at is None else at))
    return client.post(
        url,
        body,
        content_type="application/x-www-form-urlencoded",
        HTTP_X_SLACK_REQUEST_TIMESTAMP=timestamp,
        HTTP_X_SLACK_SIGNATURE=signature or sign(secret, timestamp, body),
    )


def published() -> list[tuple[str, tuple[Any, ...]]]:
    """The tasks the code under test queued (the tests' broker is in memory), taken off it."""
    tasks = []
    with current_app.connection_for_read() as conn:
        queue = conn.SimpleQueue("celery")
        try:
            while True:
                try:
                    message = queue.get(block=False)
                except queue.Empty:
                    break
                args, _kwargs, _embed = message.decode()
                tasks.append((message.headers["task"], tuple(args)))
                message.ack()
        finally:
            queue.close()
    return tasks


def answers(slack: SlackServer) -> list[str]:
    """Run the response tasks that were queued (as a worker would), and return what reached
    the click's response_url."""
    start = slack.count()
    for name, args in published():
        if name == "notifications.respond":
            respond(*args)
    return [
        post.body["text"]
        for post in slack.posts_from(start)
        if post.path.startswith("/actions/") and post.body.get("response_type") == "ephemeral"
    ]


def updates(slack: SlackServer) -> list[dict[str, Any]]:
    return [post.body for post in slack.posts if post.path == "/api/chat.update"]


def action_ids(blocks: list[dict[str, Any]]) -> list[str]:
    return [
        element["action_id"]
        for block in blocks
        if block.get("type") == "actions"
        for element in block["elements"]
    ]


# --- the buttons -----------------------------------------------------------------------------


def test_an_alert_posted_with_the_bot_token_carries_the_four_buttons(
    slack_channels: SlackServer,
) -> None:
    incident = open_incident()
    (post,) = [p for p in slack_channels.posts if p.path == "/api/chat.postMessage"]
    assert action_ids(post.body["blocks"]) == [a.value for a in Action]
    buttons = next(b for b in post.body["blocks"] if b.get("type") == "actions")["elements"]
    assert {b["value"] for b in buttons} == {str(incident.pk)}
    assert buttons[3]["text"]["text"] == "Silence until 09:00 Europe/London"
    # The webhook's stand-in note is not sent where the buttons are.
    assert "in the admin" not in json.dumps(post.body["blocks"])


def test_a_webhook_destination_gets_a_link_to_the_admin_instead_of_buttons(
    slack_channels: SlackServer,
) -> None:
    Destination.objects.filter(name="operations").update(
        slack_channel_id="", webhook_url=slack_channels.webhook_url()
    )
    incident = open_incident()
    (post,) = [p for p in slack_channels.posts if p.path.startswith("/services/")]
    assert action_ids(post.body["blocks"]) == []
    url = f"https://ops.example.com/admin/monitoring/incident/{incident.pk}/change/"
    assert f"<{url}|incident {incident.pk}>" in json.dumps(post.body["blocks"])


def test_without_a_signing_secret_there_are_no_buttons_and_the_url_is_off(
    settings: Any, slack_channels: SlackServer, ana: Any
) -> None:
    settings.SLACK_SIGNING_SECRET = ""
    incident = open_incident()
    (post,) = [p for p in slack_channels.posts if p.path == "/api/chat.postMessage"]
    assert action_ids(post.body["blocks"]) == []
    assert "in the admin" in json.dumps(post.body["blocks"])
    response = signed_post(Client(), click_body(Action.ACKNOWLEDGE, str(incident.pk)))
    assert response.status_code == 404


# --- a click does what the admin does --------------------------------------------------------


def test_acknowledge_from_slack_records_who_and_updates_the_message_in_place(
    slack_channels: SlackServer, ana: Any
) -> None:
    incident = open_incident()
    post = Notification.objects.get(destination__name="operations", update_target=None)
    response = signed_post(Client(), click_body(Action.ACKNOWLEDGE, str(incident.pk)))
    assert response.status_code == 200
    incident.refresh_from_db()
    assert incident.acknowledged_by == ana
    event = incident.events.get(kind=IncidentEventKind.ACKNOWLEDGED)
    assert (event.actor, event.message) == (ana, "by @ana.s via Slack")

    delivery.drain(operations().pk)
    (update,) = updates(slack_channels)
    assert (update["channel"], update["ts"]) == ("C0OPS", post.slack_ts)
    assert "Acknowledged" in update["text"]
    assert "by ana" in update["text"]
    # Acknowledge no longer applies; the rest still do.
    assert action_ids(update["blocks"]) == [
        Action.RESOLVE,
        Action.SILENCE_HOUR,
        Action.SILENCE_MORNING,
    ]
    assert answers(slack_channels) == []  # the winner sees the message change


def test_resolve_from_slack_resolves_and_drops_every_button(
    slack_channels: SlackServer, ana: Any
) -> None:
    incident = open_incident()
    signed_post(Client(), click_body(Action.RESOLVE, str(incident.pk)))
    incident.refresh_from_db()
    assert (incident.status, incident.resolved_by) == (IncidentStatus.RESOLVED, ana)
    assert incident.events.get(kind=IncidentEventKind.RESOLVED).message == (
        "resolved by hand by @ana.s via Slack"
    )
    delivery.drain(operations().pk)
    (update,) = updates(slack_channels)
    assert update["text"].startswith("✅ Resolved: Spike test")
    assert action_ids(update["blocks"]) == []
    replies = [p for p in slack_channels.posts if p.body.get("thread_ts")]
    assert replies
    assert replies[0].body["text"].startswith("✅ Resolved by ana")


def test_a_click_updates_the_escalation_reply_too_so_no_stale_buttons_are_left(
    slack_channels: SlackServer, ana: Any, clock: Any
) -> None:
    incident = open_incident(severity="critical", escalation_delay_seconds=60)
    clock.shift(120)
    evaluate()
    post = Notification.objects.get(destination__name="operations", thread_parent=None)
    escalation = Notification.objects.get(thread_parent=post, text__startswith="🚨")
    sent = next(p for p in slack_channels.posts if p.ts == escalation.slack_ts)
    assert sent.body["reply_broadcast"] is True  # shown in the channel: it is acted on there
    assert action_ids(sent.body["blocks"]) == [a.value for a in Action]

    signed_post(Client(), click_body(Action.ACKNOWLEDGE, str(incident.pk)))
    delivery.drain(operations().pk)
    edited = {u["ts"]: u for u in updates(slack_channels)}
    assert set(edited) == {post.slack_ts, escalation.slack_ts}
    for update in edited.values():
        assert action_ids(update["blocks"]) == [
            Action.RESOLVE,
            Action.SILENCE_HOUR,
            Action.SILENCE_MORNING,
        ]
    # The escalation says what it said (how long it had fired, nobody on call), and now who
    # acknowledged it.
    again = edited[escalation.slack_ts]
    assert again["text"].startswith(escalation.text.split("\n")[0])
    assert "nobody is on call" in again["blocks"][0]["text"]["text"]
    assert "Acknowledged: by ana" in again["text"]

    signed_post(Client(), click_body(Action.RESOLVE, str(incident.pk)))
    delivery.drain(operations().pk)
    last = {u["ts"]: u for u in updates(slack_channels)[2:]}
    assert set(last) == {post.slack_ts, escalation.slack_ts}
    assert all(action_ids(u["blocks"]) == [] for u in last.values())


def test_silence_until_tomorrow_morning_is_09_00_in_the_operators_time_zone(
    slack_channels: SlackServer, ana: Any
) -> None:
    with time_machine.travel(datetime(2026, 1, 15, 23, 30, tzinfo=UTC), tick=True):
        incident = open_incident()
        signed_post(Client(), click_body(Action.SILENCE_MORNING, str(incident.pk)))
        (silence,) = Silence.objects.all()
        # London is on UTC in January: 23:30 on the 15th → 09:00 on the 16th.
        assert silence.ends_at == datetime(2026, 1, 16, 9, 0, tzinfo=UTC)
        assert (silence.rule, silence.scope, silence.created_by) == (incident.rule, "", ana)
        event = incident.events.get(kind=IncidentEventKind.SILENCED)
        assert event.message == "until 2026-01-16 09:00 GMT by @ana.s via Slack"
        delivery.drain(operations().pk)
        (update,) = updates(slack_channels)
        assert "Silenced: until 2026-01-16 09:00 GMT by ana" in update["text"]
        assert action_ids(update["blocks"]) == [Action.ACKNOWLEDGE, Action.RESOLVE]


def test_silence_for_an_hour_holds_the_alerts_notifications_for_an_hour(
    slack_channels: SlackServer, ana: Any, clock: Any
) -> None:
    incident = open_incident()
    signed_post(Client(), click_body(Action.SILENCE_HOUR, str(incident.pk)))
    (silence,) = Silence.objects.all()
    assert silence.ends_at is not None
    assert silence.starts_at is not None
    assert silence.ends_at - silence.starts_at == timedelta(hours=1)
    assert silence.active_at(timezone.now())


def test_a_group_of_30_alerts_stays_within_slacks_50_blocks_and_says_how_many_more(
    slack_channels: SlackServer,
) -> None:
    rule = AlertRule.objects.create(
        name="Venue errors", metric="ws.error_rate", threshold=0.05, severity="warning"
    )
    now = timezone.now()
    group = [
        Incident.objects.create(
            rule=rule,
            scope=f"venue-{n:02d}",
            title=f"Venue errors at venue-{n:02d}",
            severity="warning",
            opened_at=now,
            last_seen_at=now,
            first_value=0.1,
            peak_value=0.1,
            last_value=0.1,
        )
        for n in range(30)
    ]
    message = messages.incident_message(group)
    (row,) = enqueue(NotificationKind.WEBSOCKET_ALERT, message, destinations=[operations()])
    delivery.drain(operations().pk)
    (post,) = [p for p in slack_channels.posts if p.path == "/api/chat.postMessage"]
    blocks = post.body["blocks"]
    assert len(blocks) <= 50
    rows = [b for b in blocks if b["type"] == "actions"]
    assert len(rows) == messages.MAX_MEMBERS_WITH_BUTTONS
    text = json.dumps(blocks)
    assert f"and {30 - messages.MAX_MEMBERS_WITH_BUTTONS} more firing without buttons" in text
    assert "/inkwave incidents" in text
    # Every member is still named, those without buttons in one list.
    assert all(f"venue-{n:02d}" in text for n in range(30))
    assert MARKER not in text
    # A webhook's copy (the admin note in place of each button row) fits as well.
    assert len(webhook_payload(SlackMessage(text=row.text, blocks=row.blocks))["blocks"]) <= 50


# --- who may act -----------------------------------------------------------------------------


def test_an_unlinked_slack_user_is_refused_ephemerally_logged_and_nothing_changes(
    slack_channels: SlackServer, ana: Any
) -> None:
    incident = open_incident()
    with structlog.testing.capture_logs() as logs:
        signed_post(Client(), click_body(Action.ACKNOWLEDGE, str(incident.pk), user="U0STRANGER"))
    (refusal,) = [entry for entry in logs if entry["event"] == "slack_action_refused"]
    assert refusal["slack_user"] == "U0STRANGER"
    # Slack was asked (users.info) and knows no such member: nobody to match by e-mail.
    assert refusal["reason"] == "unlinked: Slack refused the lookup"
    assert "response_url" not in str(refusal)
    incident.refresh_from_db()
    assert incident.acknowledged_at is None
    (note,) = answers(slack_channels)
    assert note.startswith("You can't do that")
    delivery.drain(operations().pk)
    assert updates(slack_channels) == []


def test_a_member_whose_confirmed_email_is_a_users_is_linked_once_and_acts(
    slack_channels: SlackServer,
) -> None:
    fay = unlinked_user("fay", "fay@example.com", "change_incident")
    slack_channels.add_member("U0FAY", "Fay@Example.COM")
    incident = open_incident()
    with structlog.testing.capture_logs() as logs:
        signed_post(Client(), click_body(Action.ACKNOWLEDGE, str(incident.pk), user="U0FAY"))
    incident.refresh_from_db()
    assert incident.acknowledged_by == fay
    link = SlackUser.objects.get(slack_user_id="U0FAY")
    assert (link.user, link.linked_via) == (fay, SlackLinkSource.EMAIL)
    (linked,) = [entry for entry in logs if entry["event"] == "slack_user_linked"]
    assert (linked["slack_user"], linked["user"]) == ("U0FAY", fay.pk)
    assert "fay@" not in str(logs).lower()  # ids only: the address is not logged
    # Matched once: the next click finds the link and asks Slack nothing.
    signed_post(Client(), click_body(Action.RESOLVE, str(incident.pk), user="U0FAY"))
    incident.refresh_from_db()
    assert incident.resolved_by == fay
    assert slack_channels.lookups() == ["U0FAY"]
    assert answers(slack_channels) == []


def refused_link(slack: SlackServer, incident: Incident, member: str = "U0GUS") -> str:
    """A click by an unlinked member: nothing changes, no link, and what they were told."""
    with structlog.testing.capture_logs() as logs:
        response = signed_post(
            Client(), click_body(Action.ACKNOWLEDGE, str(incident.pk), user=member)
        )
    assert response.status_code == 200
    incident.refresh_from_db()
    assert incident.acknowledged_at is None
    assert not SlackUser.objects.filter(slack_user_id=member).exists()
    (refusal,) = [entry for entry in logs if entry["event"] == "slack_action_refused"]
    assert refusal["reason"].startswith("unlinked")
    (note,) = answers(slack)
    return note


def test_an_unconfirmed_email_links_nobody(slack_channels: SlackServer) -> None:
    unlinked_user("gus", "gus@example.com", "change_incident")
    slack_channels.add_member("U0GUS", "gus@example.com", confirmed=False)
    assert refused_link(slack_channels, open_incident()).startswith("You can't do that")
    assert slack_channels.lookups() == ["U0GUS"]


def test_an_email_two_users_share_links_neither(slack_channels: SlackServer) -> None:
    unlinked_user("gus", "gus@example.com", "change_incident")
    unlinked_user("gus2", "GUS@example.com", "change_incident")
    slack_channels.add_member("U0GUS", "gus@example.com")
    assert refused_link(slack_channels, open_incident()).startswith("You can't do that")


def test_an_inactive_users_email_links_nobody(slack_channels: SlackServer) -> None:
    unlinked_user("gus", "gus@example.com", "change_incident", active=False)
    slack_channels.add_member("U0GUS", "gus@example.com")
    assert refused_link(slack_channels, open_incident()).startswith("You can't do that")


@pytest.mark.parametrize("kind", ["is_bot", "deleted", "guest"])
def test_bots_deactivated_members_and_guests_are_never_matched_by_email(
    slack_channels: SlackServer, kind: str
) -> None:
    unlinked_user("gus", "gus@example.com", "change_incident")
    slack_channels.add_member("U0GUS", "gus@example.com", **{kind: True})
    assert refused_link(slack_channels, open_incident()).startswith("You can't do that")


def test_a_user_linked_to_another_member_is_not_taken_over_by_email(
    slack_channels: SlackServer,
) -> None:
    make_user("gus", "U0GUSOLD", "change_incident")
    slack_channels.add_member("U0GUS", "gus@example.com")
    assert refused_link(slack_channels, open_incident()).startswith("You can't do that")
    assert SlackUser.objects.get(user__username="gus").slack_user_id == "U0GUSOLD"


def test_slack_answering_the_lookup_with_an_error_refuses_cleanly(
    slack_channels: SlackServer,
) -> None:
    unlinked_user("gus", "gus@example.com", "change_incident")
    incident = open_incident()
    # Not a member Slack knows (user_not_found), then a missing scope.
    assert refused_link(slack_channels, incident).startswith("You can't do that")
    slack_channels.add_member("U0GUS", "gus@example.com")
    slack_channels.fail_next(Reply.error("missing_scope"))
    assert refused_link(slack_channels, incident).startswith("You can't do that")


@pytest.mark.parametrize("failure", [Reply.drop(), Reply.status(503), Reply.hang(5)])
def test_slack_unreachable_for_the_lookup_refuses_with_a_clear_note_in_time(
    slack_channels: SlackServer, failure: Reply
) -> None:
    unlinked_user("gus", "gus@example.com", "change_incident")
    slack_channels.add_member("U0GUS", "gus@example.com")
    incident = open_incident()
    slack_channels.fail_next(failure)
    started = time.monotonic()
    note = refused_link(slack_channels, incident)
    assert note.startswith("Inkwave couldn't ask Slack who you are, so nothing changed")
    # A hung users.info is given one second: the click is still answered within Slack's 3.
    assert time.monotonic() - started < 2.5


def test_a_linked_user_without_the_permission_is_refused(
    slack_channels: SlackServer,
) -> None:
    make_user("bo", "U0BO", "view_incident")
    incident = open_incident()
    for action in (Action.ACKNOWLEDGE, Action.RESOLVE, Action.SILENCE_HOUR):
        signed_post(Client(), click_body(action, str(incident.pk), user="U0BO"))
    incident.refresh_from_db()
    assert (incident.status, incident.acknowledged_at) == (IncidentStatus.FIRING, None)
    assert not Silence.objects.exists()
    notes = answers(slack_channels)
    assert [n[:17] for n in notes] == ["You can't do that"] * 3
    # Linked already: told which permission is missing, not sent to link their account.
    assert "may not change incidents" in notes[0]
    assert "may not add silences" in notes[2]
    assert not any("not linked" in note for note in notes)


def test_acknowledging_needs_change_incident_and_silencing_needs_add_silence(
    slack_channels: SlackServer,
) -> None:
    make_user("cy", "U0CY", "add_silence")
    incident = open_incident()
    signed_post(Client(), click_body(Action.ACKNOWLEDGE, str(incident.pk), user="U0CY"))
    signed_post(Client(), click_body(Action.SILENCE_HOUR, str(incident.pk), user="U0CY"))
    incident.refresh_from_db()
    assert incident.acknowledged_at is None
    assert Silence.objects.count() == 1


def test_an_incident_already_resolved_is_said_so_and_left_alone(
    slack_channels: SlackServer, ana: Any
) -> None:
    incident = open_incident()
    make_user("dee", "U0DEE", "change_incident")
    signed_post(Client(), click_body(Action.RESOLVE, str(incident.pk), user="U0DEE"))
    answers(slack_channels)
    signed_post(Client(), click_body(Action.ACKNOWLEDGE, str(incident.pk)))
    incident.refresh_from_db()
    assert incident.acknowledged_at is None
    assert answers(slack_channels) == ["Spike test was already resolved by dee."]


def test_two_people_clicking_at_once_one_wins_and_the_other_is_told(
    slack_channels: SlackServer, ana: Any
) -> None:
    make_user("eve", "U0EVE", "change_incident")
    incident = open_incident()
    bodies = {
        "ana": click_body(Action.ACKNOWLEDGE, str(incident.pk)),
        "eve": click_body(Action.ACKNOWLEDGE, str(incident.pk), user="U0EVE", name="eve"),
    }
    barrier = threading.Barrier(2)
    statuses: dict[str, int] = {}

    def click(who: str) -> None:
        try:
            barrier.wait()
            statuses[who] = signed_post(Client(), bodies[who]).status_code
        finally:
            close_old_connections()

    threads = [threading.Thread(target=click, args=(who,)) for who in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == {"ana": 200, "eve": 200}
    incident.refresh_from_db()
    assert incident.acknowledged_by is not None
    winner = incident.acknowledged_by.get_username()
    loser = "eve" if winner == "ana" else "ana"
    assert incident.events.filter(kind=IncidentEventKind.ACKNOWLEDGED).count() == 1
    assert answers(slack_channels) == [f"Spike test was already acknowledged by {winner}."]
    delivery.drain(operations().pk)
    (update,) = updates(slack_channels)
    assert f"by {winner}" in update["text"]
    assert f"by {loser}" not in update["text"]


# --- without a database ----------------------------------------------------------------------


@contextmanager
def database_unreachable() -> Iterator[None]:
    """This thread's connection (and a pool of its own, waiting 1 s) aimed at a port nothing
    listens on, as a database that went away; the real one back after."""
    wrapper = connections["default"]
    wrapper.close()
    pools = type(wrapper)._connection_pools  # type: ignore[attr-defined]
    saved_settings, saved_pool = wrapper.settings_dict, pools.pop(wrapper.alias, None)
    options = {**saved_settings["OPTIONS"], "connect_timeout": 1}
    if "pool" in options:
        options["pool"] = {**options["pool"], "timeout": 1}
    wrapper.settings_dict = {
        **saved_settings,
        "HOST": "127.0.0.1",
        "PORT": closed_port(),
        "OPTIONS": options,
    }
    try:
        yield
    finally:
        wrapper.close()
        dead = pools.pop(wrapper.alias, None)
        if dead is not None:
            dead.close()
        wrapper.settings_dict = saved_settings
        if saved_pool is not None:
            pools[wrapper.alias] = saved_pool


def test_a_click_without_a_database_gets_a_note_through_its_response_url_not_a_500(
    slack_channels: SlackServer, ana: Any
) -> None:
    incident = open_incident()
    body = click_body(Action.ACKNOWLEDGE, str(incident.pk))
    with structlog.testing.capture_logs() as logs, database_unreachable():
        response = signed_post(Client(), body)
    assert response.status_code == 200
    assert response.content == b""
    assert DATABASE_DOWN.startswith("Inkwave can't reach its database")
    assert answers(slack_channels) == [DATABASE_DOWN]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "slack_request_without_database"
    ]
    incident.refresh_from_db()
    assert incident.acknowledged_at is None
    # The signature was checked, not recorded: once the database is back, the same click
    # (still within its five minutes) is taken.
    assert not SlackRequestSeen.objects.exists()
    assert signed_post(Client(), body).status_code == 200
    incident.refresh_from_db()
    assert incident.acknowledged_by == ana


def test_a_forged_click_without_a_database_is_still_refused_and_never_answered(
    slack_channels: SlackServer, ana: Any
) -> None:
    body = click_body(Action.ACKNOWLEDGE, "1")
    with database_unreachable():
        assert signed_post(Client(), body, secret="not-the-secret").status_code == 401
    assert answers(slack_channels) == []


def test_a_command_without_a_database_gets_the_note_not_a_500(
    slack_channels: SlackServer,
) -> None:
    start = slack_channels.count()
    with database_unreachable():
        response = command("status")
    assert (response.status_code, response.content) == (200, b"")
    for name, args in published():
        if name == "notifications.respond":
            respond(*args)
    (note,) = [p.body for p in slack_channels.posts_from(start) if p.path.startswith("/commands/")]
    assert (note["response_type"], note["text"]) == ("ephemeral", DATABASE_DOWN)


# --- the signature, and what an attacker may send --------------------------------------------


def test_a_request_with_a_bad_signature_is_refused_before_it_is_read(
    slack_channels: SlackServer, ana: Any
) -> None:
    incident = open_incident()
    body = click_body(Action.RESOLVE, str(incident.pk))
    assert signed_post(Client(), body, secret="not-the-secret").status_code == 401
    assert signed_post(Client(), body, signature="v0=" + "0" * 64).status_code == 401
    assert signed_post(Client(), body, signature="garbage\u00e9").status_code == 401
    incident.refresh_from_db()
    assert incident.is_open


def test_missing_headers_and_old_or_odd_timestamps_are_refused(
    slack_channels: SlackServer, ana: Any
) -> None:
    incident = open_incident()
    body = click_body(Action.RESOLVE, str(incident.pk))
    client = Client()
    unsigned = client.post(URL, body, content_type="application/x-www-form-urlencoded")
    assert unsigned.status_code == 401
    six_minutes_ago = time.time() - 360
    assert signed_post(client, body, at=six_minutes_ago).status_code == 401
    assert signed_post(client, body, at=time.time() + 360).status_code == 401
    odd = client.post(
        URL,
        body,
        content_type="application/x-www-form-urlencoded",
        HTTP_X_SLACK_REQUEST_TIMESTAMP="1e9",
        HTTP_X_SLACK_SIGNATURE=sign(SECRET, "1e9", body),
    )
    assert odd.status_code == 401
    incident.refresh_from_db()
    assert incident.is_open


def test_a_replayed_request_is_refused_even_within_its_five_minutes(
    slack_channels: SlackServer, ana: Any
) -> None:
    incident = open_incident()
    body = click_body(Action.ACKNOWLEDGE, str(incident.pk))
    timestamp = str(int(time.time()))
    headers = {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": sign(SECRET, timestamp, body),
    }
    client = Client()
    first = client.post(
        URL, body, content_type="application/x-www-form-urlencoded", headers=headers
    )
    again = client.post(
        URL, body, content_type="application/x-www-form-urlencoded", headers=headers
    )
    assert (first.status_code, again.status_code) == (200, 401)
    assert SlackRequestSeen.objects.count() == 1


def test_a_huge_body_is_refused_unread(slack_channels: SlackServer) -> None:
    body = b"payload=" + b"x" * (300 * 1024)
    assert signed_post(Client(), body).status_code == 413


@pytest.mark.parametrize(
    "body",
    [
        b"payload=%7Bnot+json",
        b"payload=%5B1%2C2%5D",
        b"nothing=here",
        b"payload=" + json.dumps({"type": "block_actions", "user": "x"}).encode(),
        urlencode(
            {
                "payload": json.dumps(
                    {"type": "block_actions", "user": {}, "container": {}, "actions": []}
                )
            }
        ).encode(),
        b"\xff\xfe",
        urlencode({"payload": "[" * 50000}).encode(),
    ],
)
def test_signed_but_malformed_payloads_get_a_400_not_a_500(
    slack_channels: SlackServer, body: bytes
) -> None:
    assert signed_post(Client(), body).status_code == 400


@pytest.mark.parametrize("value", ["999999", "-1", "abc", "1" * 40, ""])
def test_an_action_for_an_incident_that_does_not_exist_is_refused_ephemerally(
    slack_channels: SlackServer, ana: Any, value: str
) -> None:
    open_incident()
    response = signed_post(Client(), click_body(Action.ACKNOWLEDGE, value))
    assert response.status_code == 200
    (note,) = answers(slack_channels)
    assert note.startswith("There is no incident")
    assert not Incident.objects.exclude(acknowledged_at=None).exists()


def test_an_unknown_action_id_changes_nothing(slack_channels: SlackServer, ana: Any) -> None:
    incident = open_incident()
    response = signed_post(Client(), click_body("incident.delete", str(incident.pk)))
    assert response.status_code == 200
    assert answers(slack_channels) == ["That button is not one of ours."]
    incident.refresh_from_db()
    assert incident.is_open
    assert incident.acknowledged_at is None


def test_a_response_url_that_is_not_slacks_is_never_posted_to(
    slack_channels: SlackServer, ana: Any
) -> None:
    SlackServer_response_url[0] = "http://169.254.169.254/latest/meta-data"
    incident = open_incident()
    signed_post(Client(), click_body(Action.ACKNOWLEDGE, str(incident.pk), user="U0NOBODY"))
    sent = [respond(*args) for name, args in published() if name == "notifications.respond"]
    assert sent == [False]


# --- /inkwave ---------------------------------------------------------------------------------


def command(text: str, user: str = "U0ANA") -> Any:
    body = urlencode(
        {
            "command": "/inkwave",
            "text": text,
            "user_id": user,
            "user_name": "ana.s",
            "channel_id": "C0OPS",
            "team_id": "T000",
            "response_url": SlackServer_response_url[0].replace("/actions/", "/commands/"),
            # Slack's trigger_id differs per request: two identical bodies signed in one
            # second would be a replay.
            "trigger_id": f"1.2.{next(TRIGGERS)}",
        }
    ).encode()
    return signed_post(Client(), body, url="/slack/commands")


def test_inkwave_status_answers_health_and_figures_privately_unless_public(
    slack_channels: SlackServer,
) -> None:
    open_incident()
    answer = command("status").json()
    assert answer["response_type"] == "ephemeral"
    assert answer["text"].startswith("Health: ")
    assert "Connections: 0 on 1 web process(es)" in answer["text"]
    assert "Open incidents: 1" in answer["text"]
    assert command("status public").json()["response_type"] == "in_channel"


def test_inkwave_incidents_lists_the_open_ones_with_their_buttons(
    slack_channels: SlackServer,
) -> None:
    incident = open_incident()
    answer = command("incidents").json()
    assert "Spike test" in json.dumps(answer["blocks"])
    assert action_ids(answer["blocks"]) == [a.value for a in Action]
    assert {
        e["value"] for b in answer["blocks"] if b["type"] == "actions" for e in b["elements"]
    } == {str(incident.pk)}


def test_inkwave_ack_acknowledges_for_a_linked_user_and_refuses_others(
    slack_channels: SlackServer, ana: Any
) -> None:
    incident = open_incident()
    assert (
        command(f"ack {incident.pk}", user="U0NOBODY")
        .json()["text"]
        .startswith("You can't do that")
    )
    assert command(f"ack {incident.pk}").json()["text"] == "You acknowledged Spike test."
    incident.refresh_from_db()
    assert incident.acknowledged_by == ana
    assert command(f"ack {incident.pk}").json()["text"] == (
        "Spike test was already acknowledged by ana."
    )


@pytest.mark.parametrize("text", ["", "help", "ack", "ack 1 2", "status now", "<!channel>"])
def test_inkwave_with_bad_input_answers_its_usage(slack_channels: SlackServer, text: str) -> None:
    answer = command(text).json()
    assert answer["text"].startswith("Usage: /inkwave status")
    assert answer["response_type"] == "ephemeral"


def test_an_unsigned_command_is_refused(slack_channels: SlackServer) -> None:
    response = Client().post(
        "/slack/commands", b"text=status", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 401

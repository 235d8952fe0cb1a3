"""Text from users reaches Slack inert: no mention, no hidden link, no formatting, capped.

Every user-controlled field (table, item and venue names, rule names, descriptions, runbook
links, incident scope, on-call names, deploy notes, error text, destination names) is sent
with each of Slack's control sequences, and what the local Slack server receives, or the
payload() dict, is checked in the fallback text and in every block.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from monitoring import notices
from monitoring.alerting import direct, incidents, messages
from monitoring.alerting.engine import run_cycle
from monitoring.models import (
    AlertRule,
    Incident,
    IncidentStatus,
    OnCallShift,
    Severity,
    WebSocketSample,
    Worker,
)
from notifications import outbox
from notifications.delivery import drain
from notifications.formatting import Composed
from notifications.local_slack import SlackServer
from notifications.models import Destination, Notification, NotificationKind
from notifications.slack import SlackMessage, payload
from notifications.slack_text import MARKER, cap, escape_text, safe_link
from notifications.testing import send_test_messages
from orders import reports
from orders.models import OrderEvent, OrderEventKind, Venue, VenueAccessToken

INJECTIONS = [
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<@U123>",
    "<!subteam^S123>",
    "<#C123>",
    "<https://evil.example|label>",
    "*bold*",
]
ISSUE_TEXT = "<!channel> Kitchen fire, evacuate: <https://evil.example|status page>"
NOW = datetime(2026, 6, 5, 12, 0, tzinfo=UTC)


def entities(raw: str) -> str:
    return raw.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def inert(raw: str) -> str:
    """How the raw text must read in mrkdwn: entities, and `*` as its look-alike."""
    return entities(raw).replace("*", "\u2217")


def text_objects(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(type, text) of the fallback text and of every text object in the blocks."""
    found = [("mrkdwn", body["text"])]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str) and node.get("type") in ("mrkdwn", "plain_text"):
                found.append((node["type"], node["text"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(body.get("blocks", []))
    return found


ADMIN_LINK = re.compile(r"<https?://[\w.:-]+/admin/monitoring/incident/(\d+)/change/\|incident \1>")


def assert_inert(body: dict[str, Any], raw: str, *, allowed: tuple[str, ...] = ()) -> None:
    """No Slack control sequence survives but the code's own (`allowed`), and the raw text
    shows up escaped in the fallback and in a block (so the field was really there)."""
    objects = text_objects(body)
    for kind, text in objects:
        for token in allowed:
            text = text.replace(token, "")
        # The code's own link to an incident's admin page (where a message has no buttons).
        text = ADMIN_LINK.sub("", text)
        assert "<" not in text, (kind, text)
        assert ">" not in text, (kind, text)
        if kind == "mrkdwn":
            assert "*bold*" not in text, text
    assert inert(raw) in body["text"]
    assert any(
        inert(raw) in text if kind == "mrkdwn" else entities(raw) in text
        for kind, text in objects[1:]
    ), objects


def body_of(message: Composed) -> dict[str, Any]:
    return payload(SlackMessage(text=message.text, blocks=message.blocks, channel="C0OPS"))


@pytest.fixture
def unlimited_slack(settings: Any, slack_channels: SlackServer) -> SlackServer:
    """`slack_channels` with no send interval, and the operations channel also in the setting
    (what a direct alert reads)."""
    settings.SLACK_MIN_INTERVAL_SECONDS = 0
    settings.SLACK_OPERATIONS_CHANNEL_ID = "C0OPS"
    return slack_channels


def deliver_all() -> None:
    for destination in Destination.objects.all():
        assert drain(destination.pk).wait is None


def posts_but_signups(unlimited_slack: SlackServer) -> list[Any]:
    """What reached Slack, without the sign-up announcement of the venues a test made."""
    return [p for p in unlimited_slack.posts if not p.body["text"].startswith("🎉 New Venue")]


def post(client: Client, body: Any) -> Any:
    return client.post("/api/v1/orders", json.dumps(body), content_type="application/json")


def patch(client: Client, order_id: int, body: Any) -> Any:
    return client.patch(
        f"/api/v1/orders/{order_id}", json.dumps(body), content_type="application/json"
    )


# --- the helpers ------------------------------------------------------------------------


def test_escape_text_makes_every_control_sequence_inert() -> None:
    assert escape_text(ISSUE_TEXT) == (
        "&lt;!channel&gt; Kitchen fire, evacuate: &lt;https://evil.example|status page&gt;"
    )
    assert escape_text("Fish & chips") == "Fish &amp; chips"
    # Look-alikes: U+2217 asterisk operator, U+02CD low macron, U+223C tilde operator and
    # U+02CB modifier grave accent.
    assert escape_text("*bold* _it_ ~gone~ `code`") == (
        "\u2217bold\u2217 \u02cdit\u02cd \u223cgone\u223c \u02cbcode\u02cb"
    )
    # Inside a word an underscore formats nothing, so names keep theirs.
    assert escape_text("ws.error_rate T_5") == "ws.error_rate T_5"


def test_escape_text_keeps_user_text_on_its_line_and_out_of_quotes() -> None:
    assert escape_text("Table 5\n*Total:*\n$0") == "Table 5 \u2217Total:\u2217 $0"
    assert escape_text("> quoted").startswith("\u00ad&gt;")
    assert escape_text("a\n> b", multiline=True) == "a\n\u00ad&gt; b"


def test_fields_are_capped_with_a_visible_marker_and_never_cut_inside_an_entity() -> None:
    capped = escape_text("x" * 1000)
    assert len(capped) == 300
    assert capped.endswith(MARKER)
    assert cap("&amp;" * 10, 9 + len(MARKER)) == "&amp;" + MARKER


def test_only_http_links_are_links() -> None:
    assert safe_link("https://runbooks.example/db") == "<https://runbooks.example/db>"
    assert safe_link("https://x.example/a?b=1&c=<!here>|y") == (
        "<https://x.example/a?b=1&amp;c=%3C!here%3E%7Cy>"
    )
    assert safe_link("javascript:alert(1)") == "javascript:alert(1)"
    assert safe_link("<!channel>") == "&lt;!channel&gt;"
    assert safe_link("https://ok.example", "<!here>") == "<https://ok.example|&lt;!here&gt;>"


# --- orders, end to end through the API and the local Slack server ----------------------


@pytest.mark.parametrize("raw", INJECTIONS)
def test_table_item_and_venue_names_reach_slack_inert(
    unlimited_slack: SlackServer, raw: str
) -> None:
    venue = Venue.objects.create(name=f"Venue {raw}", slug="v")
    _, token = VenueAccessToken.issue(venue, "Kitchen")
    device = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    item = {"name": raw, "quantity": 1, "unitPrice": "5.00"}
    created = post(device, {"venue": venue.pk, "table": raw, "items": [item]})
    assert created.status_code == 201
    order_id = created.json()["id"]
    assert patch(device, order_id, {"status": "accepted"}).status_code == 200
    assert patch(device, order_id, {"paymentStatus": "failed"}).status_code == 200
    deliver_all()
    titles = sorted(p.body["text"].splitlines()[0] for p in unlimited_slack.posts)
    assert titles == sorted(
        [
            "💳 Payment Issue: Order #1",
            "💳 Payment Issue: Order #1",
            "🔄 Order #1 accepted",
            f"🎉 New Venue: Venue {inert(raw)}",  # the venue's sign-up
            "🛒 New Order #1",
        ]
    )
    for sent in unlimited_slack.posts:
        assert_inert(sent.body, raw)
        if not sent.body["text"].startswith("🎉"):
            assert f"Table: {inert(raw)}" in sent.body["text"]
            assert f"Venue: Venue {inert(raw)}" in sent.body["text"]


def test_the_issues_text_as_a_table_reaches_slack_inert(unlimited_slack: SlackServer) -> None:
    venue = Venue.objects.create(name="Main", slug="main")
    _, token = VenueAccessToken.issue(venue, "Kitchen")
    device = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    item = {"name": ISSUE_TEXT, "quantity": 1, "unitPrice": "5.00"}
    # Too long for a table: a failed creation, announced for the device's own venue.
    response = post(device, {"venue": venue.pk, "table": ISSUE_TEXT, "items": [item]})
    assert response.status_code == 400
    deliver_all()
    assert {p.body["channel"] for p in posts_but_signups(unlimited_slack)} == {"C0OPS", "C0ORD"}
    for sent in posts_but_signups(unlimited_slack):
        assert sent.body["text"].startswith("❌ Failed Order Creation")
        # The table is recorded and shown up to its column's 50 characters.
        assert_inert(sent.body, ISSUE_TEXT[:50])


@pytest.mark.parametrize("raw", INJECTIONS)
def test_a_new_venue_and_its_daily_summary_reach_slack_inert(
    unlimited_slack: SlackServer, raw: str
) -> None:
    with time_machine.travel(NOW - timedelta(days=2), tick=False):
        Venue.objects.create(name=raw, slug="v")  # announced as a sign-up
    with time_machine.travel(NOW, tick=False):
        assert reports.daily_summaries(timezone.now())
    deliver_all()
    (signup,) = [p for p in unlimited_slack.posts if p.body["text"].startswith("🎉")]
    summaries = [p for p in unlimited_slack.posts if p.body["text"].startswith("📊")]
    assert signup.body["blocks"][0]["text"]["text"] == f"🎉 New Venue: {entities(raw)}"
    assert_inert(signup.body, raw)
    assert summaries
    for sent in summaries:
        assert_inert(sent.body, raw)
        blocks = [b["text"]["text"] for b in sent.body["blocks"][1:]]
        assert blocks[0].startswith(f"*{inert(raw)}* (")  # the code's bold, the user's text


# --- alerts and incidents ---------------------------------------------------------------


def make_rule(raw: str, **fields: Any) -> AlertRule:
    return AlertRule.objects.create(
        name=f"Rule {raw}",
        description=f"Described {raw}",
        metric="ws.new_connections_per_minute",
        threshold=50,
        severity=Severity.CRITICAL,
        **fields,
    )


def make_incident(rule: AlertRule, scope: str, status: str = IncidentStatus.FIRING) -> Incident:
    now = timezone.now()
    return Incident.objects.create(
        rule=rule,
        scope=scope,
        title=incidents.title_for(rule, scope),  # as the engine names it
        severity=rule.severity,
        status=status,
        opened_at=now - timedelta(minutes=30),
        last_seen_at=now,
        resolved_at=now if status == IncidentStatus.RESOLVED else None,
        first_value=75,
        peak_value=80,
        last_value=75,
    )


@pytest.mark.parametrize("raw", INJECTIONS)
def test_rule_names_descriptions_scopes_and_on_call_names_are_inert(db: Any, raw: str) -> None:
    rule = make_rule(raw)
    firing = make_incident(rule, scope=raw)
    other = make_incident(make_rule(f"{raw} 2"), scope="")
    # An old row, from before member ids were checked: the person's name, no mention.
    bad_shift = OnCallShift(person=raw, slack_user_id="U1>|<!channel", starts_at=NOW, ends_at=NOW)
    good_shift = OnCallShift(person="Dana", slack_user_id="U0DANA", starts_at=NOW, ends_at=NOW)
    composed = [
        messages.incident_message([firing]),
        messages.incident_message([firing, other]),
        messages.reminder(firing),
        messages.flapping(firing, 6, 3600),
        messages.escalation(firing, bad_shift),
        messages.joined_reply([firing, other]),
        messages.group_resolved_reply([firing], [other]),
        messages.settled_resolved(firing, 6),
        messages.settled_firing(firing, 6),
        messages.flap_notice_settled(firing, 6, "firing", NOW),
        messages.silence_summary(raw, NOW - timedelta(hours=1), NOW, [firing, other]),
        messages.escalation(firing, None),
    ]
    for message in composed:
        assert_inert(body_of(message), raw)
    assert f"Venue: venue {inert(raw)}" in composed[0].text
    assert f"Described {inert(raw)}" in composed[0].text
    assert f"(venue {inert(raw)})" in composed[1].text
    assert f"On call: {inert(raw)}" in composed[4].text
    escalated = body_of(messages.escalation(firing, good_shift))
    assert_inert(escalated, raw, allowed=("<@U0DANA>",))  # the rota's mention, nothing else
    assert "On call: <@U0DANA>" in escalated["text"]
    resolved = make_incident(make_rule(f"{raw} 3"), scope="", status=IncidentStatus.RESOLVED)
    assert_inert(body_of(messages.resolved_reply(resolved)), raw)
    assert_inert(body_of(messages.incident_message([resolved])), raw)


@pytest.mark.parametrize("raw", INJECTIONS)
def test_a_venue_named_by_its_owner_is_shown_inert_in_its_alerts(db: Any, raw: str) -> None:
    venue = Venue.objects.create(name=raw, slug="evil")
    firing = make_incident(make_rule("Orders stopped"), scope=str(venue.pk))
    assert firing.title == f"Rule Orders stopped ({raw}, venue {venue.pk})"
    for message in (messages.incident_message([firing]), messages.reminder(firing)):
        assert_inert(body_of(message), raw)
    text = messages.incident_message([firing]).text
    assert f"Venue: {inert(raw)}, venue {venue.pk}" in text


def test_a_long_rule_name_and_venue_name_still_make_an_incident(db: Any) -> None:
    venue = Venue.objects.create(name="V" * 200, slug="long")
    rule = make_rule("R" * 190)
    title = incidents.title_for(rule, str(venue.pk))
    assert len(title) == 300
    assert title.endswith("…)")
    assert make_incident(rule, scope=str(venue.pk)).title == title  # stored, not refused


@pytest.mark.parametrize("raw", INJECTIONS)
def test_a_runbook_that_is_not_an_http_link_is_shown_inert(db: Any, raw: str) -> None:
    # Saved without validation (an old row, a script): still no link, no mention.
    rule = make_rule(raw)
    AlertRule.objects.filter(pk=rule.pk).update(runbook_url=raw)
    rule.refresh_from_db()
    body = body_of(messages.incident_message([make_incident(rule, scope="")]))
    assert_inert(body, raw)
    assert f"Runbook: {inert(raw)}" in body["text"]


def test_a_runbook_link_carries_no_markup_in_its_url(db: Any) -> None:
    url = "https://runbooks.example/db?a=1&b=<!channel>|<https://evil.example|x>"
    rule = make_rule("db", runbook_url=url)
    rule.full_clean()  # a valid http(s) URL, odd characters and all
    body = body_of(messages.incident_message([make_incident(rule, scope="")]))
    link = "<https://runbooks.example/db?a=1&amp;b=%3C!channel%3E%7C%3Chttps://evil.example%7Cx%3E>"
    assert f"Runbook: {link}" in body["text"]
    for _, text in text_objects(body):
        assert "<" not in ADMIN_LINK.sub("", text.replace(link, ""))


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "ftp://files.example/runbook", "<!channel>", "data:text/html,x"]
)
def test_runbooks_must_be_http_links_in_the_model_and_the_admin(
    admin_client: Client, url: str
) -> None:
    rule = AlertRule(
        name="Spike", metric="ws.new_connections_per_minute", threshold=50, runbook_url=url
    )
    with pytest.raises(ValidationError) as caught:
        rule.full_clean()
    assert "runbook_url" in caught.value.message_dict
    form = {
        "name": "Spike",
        "description": "",
        "enabled": "on",
        "severity": "warning",
        "runbook_url": url,
        "metric": "ws.new_connections_per_minute",
        "comparison": "gte",
        "threshold": "50",
        "window_seconds": "60",
        "pending_seconds": "0",
        "clear_seconds": "120",
        "repeat_interval_seconds": "0",
        "escalation_delay_seconds": "0",
        "flap_threshold": "4",
        "settle_seconds": "600",
        "group_by": "",
    }
    form.update(
        {
            f"inhibited_by-{field}": "0"
            for field in ("TOTAL_FORMS", "INITIAL_FORMS", "MIN_NUM_FORMS", "MAX_NUM_FORMS")
        }
    )
    response = admin_client.post("/admin/monitoring/alertrule/add/", form)
    assert response.status_code == 200
    assert "runbook_url" in response.context["adminform"].form.errors
    assert not AlertRule.objects.filter(name="Spike").exists()
    ok = admin_client.post(
        "/admin/monitoring/alertrule/add/", {**form, "runbook_url": "https://runbooks.example/x"}
    )
    assert ok.status_code == 302


@pytest.mark.parametrize("member_id", ["<!channel>", "U1>|<!here", "here", "u0dana", "U0 DANA"])
def test_on_call_mentions_take_only_a_slack_member_id(db: Any, member_id: str) -> None:
    shift = OnCallShift(
        person="Dana", slack_user_id=member_id, starts_at=NOW, ends_at=NOW + timedelta(hours=1)
    )
    with pytest.raises(ValidationError) as caught:
        shift.full_clean()
    assert "slack_user_id" in caught.value.message_dict
    assert shift.mention == "Dana"
    OnCallShift(
        person="Dana", slack_user_id="U0DANA", starts_at=NOW, ends_at=NOW + timedelta(hours=1)
    ).full_clean()


def _sample(at: datetime, connections: int) -> None:
    worker, _ = Worker.objects.get_or_create(
        name="web-1",
        defaults={
            "hostname": "h",
            "pid": 1,
            "started_at": at - timedelta(hours=1),
            "last_seen_at": at,
        },
    )
    Worker.objects.filter(pk=worker.pk).update(last_seen_at=at)
    row = WebSocketSample.objects.create(
        worker=worker, recorded_at=at, interval_seconds=10, connections=connections
    )
    Worker.objects.filter(pk=worker.pk).update(last_sample=row)


def test_an_alert_from_the_engine_reaches_slack_inert(
    unlimited_slack: SlackServer, settings: Any
) -> None:
    settings.ALERT_GROUP_WAIT_SECONDS = 0
    AlertRule.objects.update(enabled=False)
    make_rule(ISSUE_TEXT, runbook_url="https://runbooks.example/spike", pending_seconds=0)
    with time_machine.travel(NOW, tick=False):
        _sample(timezone.now(), 75)
        run_cycle()
        deliver_all()
    (sent,) = unlimited_slack.posts
    assert sent.body["text"].startswith("🔴 Rule")
    assert_inert(sent.body, ISSUE_TEXT, allowed=("<https://runbooks.example/spike>",))
    assert "Runbook: <https://runbooks.example/spike>" in sent.body["text"]


# --- operations messages ----------------------------------------------------------------


@pytest.mark.parametrize("raw", INJECTIONS)
def test_deploy_notices_error_alerts_and_plain_messages_are_inert(
    unlimited_slack: SlackServer, raw: str
) -> None:
    notices.deployment(release=f"1.4.2 {raw}", environment=raw, note=f"Note {raw}")
    notices.send_error_alert(RuntimeError(raw), {"source": raw, "type": raw, "action": raw})
    outbox.send_message("operations", f"Hello {raw}")
    deliver_all()
    assert len(unlimited_slack.posts) == 3
    for sent in unlimited_slack.posts:
        assert_inert(sent.body, raw)


@pytest.mark.parametrize("raw", INJECTIONS)
def test_direct_alerts_are_inert(
    unlimited_slack: SlackServer, tmp_path: Path, settings: Any, raw: str
) -> None:
    settings.VAR_DIR = tmp_path
    assert direct.DirectAlerter().alert("database", f"OperationalError: {raw}")
    (sent,) = unlimited_slack.posts
    assert_inert(sent.body, raw)


@pytest.mark.parametrize("raw", INJECTIONS)
def test_the_test_message_names_its_destination_inert(
    unlimited_slack: SlackServer, raw: str
) -> None:
    Destination.objects.filter(name="operations").update(name=raw)
    results = send_test_messages(list(Destination.objects.filter(name=raw)))
    assert [r.ok for _, r in results] == [True]
    (sent,) = unlimited_slack.posts
    assert_inert(sent.body, raw)


# --- who may make the system post -------------------------------------------------------


def failed_order_notices() -> int:
    return Notification.objects.filter(kind=NotificationKind.ORDER_FAILED).count()


def order(venue: Any, table: str = ISSUE_TEXT) -> dict[str, Any]:
    return {
        "venue": venue,
        "table": table,
        "items": [{"name": ISSUE_TEXT, "quantity": 1, "unitPrice": "5.00"}],
    }


def test_a_user_with_no_venue_cannot_make_the_system_post(
    unlimited_slack: SlackServer, plain_user: Any, venue: Venue
) -> None:
    outsider = Client()
    outsider.force_login(plain_user)
    assert post(outsider, order(venue.pk)).status_code == 403  # a venue not theirs
    assert post(outsider, order(999_999)).status_code == 400  # no such venue
    assert post(outsider, order(None)).status_code == 400
    assert post(outsider, order("main-branch")).status_code == 400
    # Recorded for the audit, never announced.
    failed = OrderEvent.objects.filter(kind=OrderEventKind.CREATION_FAILED)
    assert failed.count() == 3
    assert not failed.exclude(venue=None).exists()
    assert failed_order_notices() == 0
    deliver_all()
    assert posts_but_signups(unlimited_slack) == []


def test_a_venue_token_cannot_post_about_an_unnamed_or_other_venue(
    unlimited_slack: SlackServer, venue: Venue, other_venue: Venue, venue_token: str
) -> None:
    device = Client(HTTP_AUTHORIZATION=f"Bearer {venue_token}")
    assert post(device, order(other_venue.pk)).status_code == 403
    assert post(device, order(None)).status_code == 400
    assert post(device, {"table": ISSUE_TEXT}).status_code == 400
    assert OrderEvent.objects.filter(kind=OrderEventKind.CREATION_FAILED, venue=None).count() == 2
    assert failed_order_notices() == 0
    # Its own venue's failures are still announced, inert.
    assert post(device, order(venue.pk)).status_code == 400
    assert failed_order_notices() == 2
    deliver_all()
    assert len(posts_but_signups(unlimited_slack)) == 2
    for sent in posts_but_signups(unlimited_slack):
        assert_inert(sent.body, ISSUE_TEXT[:50])  # the table's column holds 50 characters


def test_the_escape_is_structural_a_bare_string_cannot_inject(db: Any) -> None:
    # A future composer that forgets every helper still goes through the builders.
    from notifications.formatting import compose, context_block, fit, section_block

    composed = [
        compose(ISSUE_TEXT, [(ISSUE_TEXT, ISSUE_TEXT)], note=ISSUE_TEXT),
        fit(ISSUE_TEXT, [section_block(ISSUE_TEXT), context_block(ISSUE_TEXT)]),
    ]
    for message in composed:
        body = body_of(message)
        assert_inert(body, ISSUE_TEXT)
        # Escaped once, not twice.
        assert not any("&amp;lt;" in text for _, text in text_objects(body))
        assert not re.search(r"&(?!amp;|lt;|gt;)", body["text"])

"""Slack destinations in the admin: the webhook URL is a secret, and only Slack is posted to."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from notifications.local_slack import Reply, SlackServer
from notifications.models import Destination

pytestmark = pytest.mark.django_db

SECRET = "T000/B000/Xq7hooksecret9Zk2"


@pytest.fixture
def webhook_slack(settings: Any, slack_server: SlackServer) -> SlackServer:
    """The local Slack server, reached by webhooks only (no bot token)."""
    settings.SLACK_BOT_TOKEN = ""
    settings.SLACK_API_URL = slack_server.api_url
    return slack_server


@pytest.fixture
def hooked(webhook_slack: SlackServer) -> Destination:
    return Destination.objects.create(name="kitchen", webhook_url=webhook_slack.webhook_url(SECRET))


def staff_with(*codenames: str) -> Client:
    user = get_user_model().objects.create_user("viewer", password="pw-view-123", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def change_form(destination: Destination, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": destination.name,
        "slack_channel_id": destination.slack_channel_id,
        "webhook_url": "",
        "enabled": "on",
        "routes-TOTAL_FORMS": "0",
        "routes-INITIAL_FORMS": "0",
        "routes-MIN_NUM_FORMS": "0",
        "routes-MAX_NUM_FORMS": "1000",
    }
    data.update(changes)
    return data


def url_of(destination: Destination) -> str:
    return f"/admin/notifications/destination/{destination.pk}/change/"


def test_a_view_only_user_sees_the_webhook_masked(hooked: Destination) -> None:
    page = staff_with("view_destination").get(url_of(hooked))
    assert page.status_code == 200
    html = page.content.decode()
    assert "hooksecret" not in html
    assert "T000/B000" not in html
    assert "/…9Zk2" in html  # enough to recognise it


def test_an_editor_is_not_shown_the_url_and_blank_keeps_it(
    hooked: Destination, admin_client: Client
) -> None:
    stored = hooked.webhook_url
    html = admin_client.get(url_of(hooked)).content.decode()
    assert "hooksecret" not in html
    assert "/…9Zk2" in html
    response = admin_client.post(url_of(hooked), change_form(hooked, enabled=""))
    assert response.status_code == 302
    hooked.refresh_from_db()
    assert hooked.webhook_url == stored
    assert hooked.enabled is False


def test_an_editor_can_replace_or_remove_the_webhook(
    hooked: Destination, admin_client: Client, webhook_slack: SlackServer
) -> None:
    new = webhook_slack.webhook_url("T000/B000/another")
    response = admin_client.post(url_of(hooked), change_form(hooked, webhook_url=new))
    assert response.status_code == 302
    hooked.refresh_from_db()
    assert hooked.webhook_url == new
    response = admin_client.post(url_of(hooked), change_form(hooked, remove_webhook_url="on"))
    assert response.status_code == 302
    hooked.refresh_from_db()
    assert hooked.webhook_url == ""


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://hooks.slack.com/services/T/B/X",  # not over https
        "https://hooks.slack.com.evil.example/services/T/B/X",
        "https://hooks.slack.com@10.0.0.5/services/T/B/X",
        "https://hooks.slack.com:8443/services/T/B/X",
        "http://127.0.0.1:1/services/T/B/X",  # SLACK_API_URL's host, another port
    ],
)
def test_the_admin_refuses_a_webhook_that_is_not_slack(
    hooked: Destination, admin_client: Client, url: str
) -> None:
    stored = hooked.webhook_url
    response = admin_client.post(url_of(hooked), change_form(hooked, webhook_url=url))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "webhook_url" in errors
    hooked.refresh_from_db()
    assert hooked.webhook_url == stored


def test_slack_itself_is_accepted(hooked: Destination, admin_client: Client) -> None:
    url = "https://hooks.slack.com/services/T0ABC/B0DEF/abcdefabcdef"
    response = admin_client.post(url_of(hooked), change_form(hooked, webhook_url=url))
    assert response.status_code == 302
    hooked.refresh_from_db()
    assert hooked.webhook_url == url


def send_test(client: Client, destination: Destination) -> list[str]:
    response = client.post(
        "/admin/notifications/destination/",
        {"action": "send_test", "_selected_action": [destination.pk]},
        follow=True,
    )
    return [str(message) for message in response.context["messages"]]


def test_the_test_message_is_not_posted_to_an_internal_url(
    webhook_slack: SlackServer, admin_client: Client
) -> None:
    with SlackServer() as internal:
        # Stored before the admin checked URLs (or written around it): refused at send time.
        Destination.objects.create(name="sneaky", webhook_url=internal.webhook_url())
        (shown,) = send_test(admin_client, Destination.objects.get(name="sneaky"))
        assert internal.posts == []
        assert internal.state.request_started.is_set() is False
    assert shown.startswith("sneaky: failed: webhook URL refused")


def test_the_test_message_never_shows_the_remote_body(
    hooked: Destination, admin_client: Client, webhook_slack: SlackServer
) -> None:
    webhook_slack.fail_next(Reply.status(500))  # answers with an HTML page
    (shown,) = send_test(admin_client, hooked)
    assert shown == "kitchen: failed: webhook 500"
    assert "upstream" not in shown
    webhook_slack.fail_next(Reply.error("no_service"))  # Slack's own error codes are kept
    assert send_test(admin_client, hooked) == ["kitchen: failed: webhook 404: no_service"]


def test_the_list_says_when_slack_is_not_configured_instead_of_ok(
    admin_client: Client, settings: Any
) -> None:
    settings.SLACK_BOT_TOKEN = ""
    Destination.objects.filter(name__in=["operations", "orders"]).update(
        webhook_url="", slack_channel_id="C0OPS"
    )
    Destination.objects.create(name="night-shift", enabled=False)
    page = admin_client.get("/admin/notifications/destination/").content.decode()
    assert page.count("Messages are recorded, not sent: Slack is not configured") == 2
    assert "Messages are recorded, not sent: the destination is disabled" in page
    assert "OK: sent" not in page
    settings.SLACK_BOT_TOKEN = "xoxb-test"
    page = admin_client.get("/admin/notifications/destination/").content.decode()
    assert page.count("OK: sent by bot token") == 2


def test_the_list_says_since_when_slack_is_failing_a_destination(
    admin_client: Client, settings: Any
) -> None:
    from datetime import UTC, datetime

    settings.SLACK_BOT_TOKEN = "xoxb-test"
    Destination.objects.filter(name__in=["operations", "orders"]).update(slack_channel_id="C0OPS")
    Destination.objects.filter(name="orders").update(
        failing_since=datetime(2026, 6, 5, 12, 0, 7, tzinfo=UTC)
    )
    page = admin_client.get("/admin/notifications/destination/").content.decode()
    assert "Slack failing since 2026-06-05 12:00:07 UTC: messages are kept" in page
    assert page.count("OK: sent by bot token") == 1

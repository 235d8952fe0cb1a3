"""Slack users in the admin: who may act from Slack, listed, added (member ids checked) and
found by name, e-mail or member id."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from notifications.models import SlackLinkSource, SlackUser

pytestmark = pytest.mark.django_db

LIST = "/admin/notifications/slackuser/"
ADD = "/admin/notifications/slackuser/add/"


def person(name: str, email: str = "") -> Any:
    return get_user_model().objects.create_user(name, email or f"{name}@example.com", "pw")


def admin_with(*codenames: str) -> Client:
    user = get_user_model().objects.create_user("keeper", password="pw-keep-123", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def keeper() -> Client:
    return admin_with("view_slackuser", "add_slackuser", "change_slackuser")


def test_the_list_shows_each_link_and_how_it_was_made(keeper: Client) -> None:
    SlackUser.objects.create(user=person("ana"), slack_user_id="U0ANA")
    SlackUser.objects.create(
        user=person("fay"), slack_user_id="W0FAY", linked_via=SlackLinkSource.EMAIL
    )
    page = keeper.get(LIST).content.decode()
    assert "U0ANA" in page
    assert "W0FAY" in page
    assert "Set in the admin" in page
    assert "Matched by confirmed e-mail" in page
    only_email = keeper.get(LIST, {"linked_via__exact": "email"}).content.decode()
    assert "W0FAY" in only_email
    assert "U0ANA" not in only_email


def test_adding_a_link_with_a_member_id_records_it_as_set_in_the_admin(keeper: Client) -> None:
    ana = person("ana")
    response = keeper.post(ADD, {"user": ana.pk, "slack_user_id": "U024BE7LH"})
    assert response.status_code == 302
    link = SlackUser.objects.get()
    assert (link.user, link.slack_user_id, link.linked_via) == (
        ana,
        "U024BE7LH",
        SlackLinkSource.ADMIN,
    )


@pytest.mark.parametrize(
    "member_id",
    ["u024be7lh", "C024BE7LH", "U0", "<@U024BE7LH>", "U024 BE7LH", "ana@example.com", ""],
)
def test_what_is_not_a_member_id_is_refused_with_the_reason(keeper: Client, member_id: str) -> None:
    response = keeper.post(ADD, {"user": person("ana").pk, "slack_user_id": member_id})
    assert response.status_code == 200  # the form again, with its error
    errors = response.context["adminform"].form.errors["slack_user_id"]
    assert errors
    if member_id:
        assert errors == ["A Slack member id: U or W, then capitals and digits."]
    assert not SlackUser.objects.exists()


def test_one_member_id_links_one_user_and_one_user_one_member(keeper: Client) -> None:
    ana, bo = person("ana"), person("bo")
    SlackUser.objects.create(user=ana, slack_user_id="U0ANA")
    taken_id = keeper.post(ADD, {"user": bo.pk, "slack_user_id": "U0ANA"})
    assert "slack_user_id" in taken_id.context["adminform"].form.errors
    taken_user = keeper.post(ADD, {"user": ana.pk, "slack_user_id": "U0OTHER"})
    assert "user" in taken_user.context["adminform"].form.errors
    assert SlackUser.objects.count() == 1


@pytest.mark.parametrize(
    ("query", "found"), [("fay", "W0FAY"), ("ana@ex", "U0ANA"), ("W0F", "W0FAY")]
)
def test_links_are_found_by_user_name_email_or_member_id(
    keeper: Client, query: str, found: str
) -> None:
    SlackUser.objects.create(user=person("ana"), slack_user_id="U0ANA")
    SlackUser.objects.create(user=person("fay", "f.y@example.org"), slack_user_id="W0FAY")
    page = keeper.get(LIST, {"q": query}).content.decode()
    other = {"U0ANA", "W0FAY"} - {found}
    assert found in page
    assert not any(member in page for member in other)


def test_how_a_link_was_made_cannot_be_edited(keeper: Client) -> None:
    link = SlackUser.objects.create(user=person("ana"), slack_user_id="U0ANA")
    url = f"{LIST}{link.pk}/change/"
    form = keeper.get(url).context["adminform"].form
    assert "linked_via" not in form.fields
    keeper.post(url, {"user": link.user_id, "slack_user_id": "U0ANA", "linked_via": "email"})
    link.refresh_from_db()
    assert link.linked_via == SlackLinkSource.ADMIN


def test_a_viewer_cannot_link_anyone() -> None:
    viewer = admin_with("view_slackuser")
    assert viewer.get(LIST).status_code == 200
    assert viewer.post(ADD, {"user": person("ana").pk, "slack_user_id": "U0ANA"}).status_code == 403
    assert not SlackUser.objects.exists()

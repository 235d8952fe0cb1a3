"""Venues and their device tokens, as an operator manages them."""

from __future__ import annotations

import re
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages.storage.cookie import CookieStorage
from django.core.management import CommandError, call_command
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.test import Client

from orders.models import Venue, VenueAccessToken, hash_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in(client: Client) -> Client:
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(user)
    return client


def test_the_command_prints_a_token_once_and_stores_only_its_hash(venue: Venue) -> None:
    out = StringIO()
    call_command(
        "create_venue_token", venue.slug, "--name", "Bar tablet", "--token-only", stdout=out
    )
    raw = out.getvalue().strip()
    token = VenueAccessToken.objects.get(venue=venue)
    assert raw.startswith("iwv_")
    assert token.token_hash == hash_token(raw)
    assert raw not in token.token_hash
    assert VenueAccessToken.authenticate(raw) == token


def test_the_command_prints_the_rooms_websocket_url(venue: Venue, settings: Any) -> None:
    settings.PUBLIC_URL = "https://ops.inkwave.example"
    out = StringIO()
    call_command("create_venue_token", str(venue.pk), "--name", "Pass", stdout=out)
    (url,) = [line.strip() for line in out.getvalue().splitlines() if "/ws/venues/" in line]
    raw = url.split("?token=")[1]
    assert url == f"wss://ops.inkwave.example/ws/venues/{venue.pk}/?token={raw}"
    assert VenueAccessToken.authenticate(raw) is not None
    assert f"venue {venue.pk}" in out.getvalue()


def test_the_venue_list_shows_each_venues_id(admin_client_logged_in: Client, venue: Venue) -> None:
    page = admin_client_logged_in.get("/admin/orders/venue/").content.decode()
    cells = re.findall(r'<td class="field-id">([^<]*)</td>', page)
    assert "column-id" in page
    assert cells == [str(venue.pk)], page[page.find("result_list") :][:1500]


def test_the_command_warns_that_an_inactive_venues_room_refuses_connections(venue: Venue) -> None:
    Venue.objects.filter(pk=venue.pk).update(is_active=False)
    out, err = StringIO(), StringIO()
    call_command("create_venue_token", venue.slug, "--name", "Spare", stdout=out, stderr=err)
    assert "is not active" in err.getvalue()
    assert "/ws/venues/" in out.getvalue()


def test_the_command_explains_an_unknown_venue(db: Any) -> None:
    with pytest.raises(CommandError, match="No venue"):
        call_command("create_venue_token", "nowhere", "--name", "x", stdout=StringIO())


def test_adding_a_token_in_the_admin_shows_it_once_and_never_in_a_cookie(
    admin_client_logged_in: Client, venue: Venue
) -> None:
    response = admin_client_logged_in.post(
        "/admin/orders/venueaccesstoken/add/", {"venue": venue.pk, "name": "Kitchen screen"}
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    token = VenueAccessToken.objects.get(venue=venue)
    page = response.content.decode()
    raw = page.split('<code id="venue-token">')[1].split("</code>")[0]
    assert token.token_hash == hash_token(raw)
    assert f"/ws/venues/{venue.pk}/?token={raw}" in page
    assert token.created_by is not None
    # The messages cookie is signed, not encrypted (and may be compressed): decode it too.
    for morsel in response.cookies.values():
        assert raw not in morsel.value
    assert raw not in str(messages_in_cookie(response))
    assert raw not in str(dict(admin_client_logged_in.session))
    later = admin_client_logged_in.get(f"/admin/orders/venueaccesstoken/{token.pk}/change/")
    assert raw not in later.content.decode()


def messages_in_cookie(response: HttpResponseBase) -> list[Any]:
    """What a browser holding the response's cookies would read back as messages."""
    morsel = response.cookies.get(CookieStorage.cookie_name)
    if morsel is None or not morsel.value:
        return []
    request = HttpRequest()
    request.COOKIES[CookieStorage.cookie_name] = morsel.value
    return list(CookieStorage(request))


def test_revoking_tokens_from_the_admin_list(admin_client_logged_in: Client, venue: Venue) -> None:
    token, raw = VenueAccessToken.issue(venue, "Old tablet")
    admin_client_logged_in.post(
        "/admin/orders/venueaccesstoken/",
        {"action": "revoke", "_selected_action": [token.pk]},
        follow=True,
    )
    token.refresh_from_db()
    assert token.is_revoked
    assert VenueAccessToken.authenticate(raw) is None


def test_a_venue_with_an_unknown_timezone_or_currency_is_rejected(
    admin_client_logged_in: Client,
) -> None:
    response = admin_client_logged_in.post(
        "/admin/orders/venue/add/",
        {"name": "X", "slug": "x", "timezone": "Mars/Olympus", "currency": "dollars"},
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "timezone" in errors
    assert "currency" in errors
    assert not Venue.objects.filter(slug="x").exists()


def test_orders_and_their_events_are_listed_in_the_admin(
    admin_client_logged_in: Client, venue: Venue
) -> None:
    from orders.models import Order, OrderEvent, OrderEventKind, OrderItem

    order = Order.objects.create(venue=venue, number=7, table="Table 5", currency="USD", total=42)
    OrderItem.objects.create(order=order, name="Margherita", quantity=2, unit_price=21)
    OrderEvent.objects.create(kind=OrderEventKind.PLACED, venue=venue, order=order)
    listing = admin_client_logged_in.get("/admin/orders/order/?status__exact=placed")
    assert "Table 5" in listing.content.decode()
    page = admin_client_logged_in.get(f"/admin/orders/order/{order.pk}/change/").content.decode()
    assert "Margherita" in page
    assert "order.placed" in page
    assert admin_client_logged_in.get("/admin/orders/order/add/").status_code == 403

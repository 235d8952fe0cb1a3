"""Every way access to a venue room ends closes the connections it let in.

Driven through the real middleware stack, the Redis channel layer and the database: each
test opens a connection, ends its grant the way an operator or the system would, and checks
the close code and that nothing broadcast afterwards reaches it, while a connection whose
grant still holds keeps receiving.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import time_machine
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.test import Client, override_settings

from inkwave.db import database_sync_to_async
from monitoring.monitor import WebSocketMonitor
from orders.access import Grant, _lapsed_grants
from orders.broadcast import abroadcast_to_venue, venue_event_message
from orders.models import Venue, VenueAccessToken
from orders.protocol import CloseCode
from tests.test_venue_room import group_members, join

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_client")]

# Long enough for a signal's message to cross Redis to the consumer on a loaded machine.
CLOSE_TIMEOUT = 10.0
# The periodic re-check in the tests that rely on it (the default is 30 s).
FAST_RECHECK = override_settings(WS_ACCESS_RECHECK_SECONDS=0.2)


def signed_in(user: Any) -> tuple[Client, bytes]:
    """A browser's session: the client that owns it, and its cookie for the WebSocket."""
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return client, f"{name}={client.cookies[name].value}".encode()


async def join_as(user: Any, venue: Venue) -> tuple[Client, WebsocketCommunicator]:
    client, cookie = await database_sync_to_async(signed_in)(user)
    return client, await join(f"/ws/venues/{venue.pk}/", cookie=cookie)


async def join_with_token(venue: Venue, name: str = "Kitchen screen") -> WebsocketCommunicator:
    _, raw = await database_sync_to_async(VenueAccessToken.issue)(venue, name)
    return await join(f"/ws/venues/{venue.pk}/?token={raw}")


async def closed_and_deaf(
    closed: WebsocketCommunicator,
    code: int,
    venue: Venue,
    *,
    kept: WebsocketCommunicator | None = None,
) -> None:
    """`closed` was closed with `code` and gets no later broadcast; `kept` still gets it."""
    assert await closed.receive_output(timeout=CLOSE_TIMEOUT) == {
        "type": "websocket.close",
        "code": code,
    }
    await abroadcast_to_venue(venue.pk, "order.created", {"order": 1})
    if kept is not None:
        event = await kept.receive_json_from(timeout=CLOSE_TIMEOUT)
        assert event["event"] == "order.created"
    assert await closed.receive_nothing(timeout=0.3)
    await closed.disconnect()


def _not_json(constant: str) -> None:
    raise AssertionError(f"the server sent {constant}, which is not JSON")


def strict_json(text: str) -> dict[str, Any]:
    """Parse as JSON, not as Python's json module does by default (which takes NaN)."""
    value = json.loads(text, parse_constant=_not_json)
    assert isinstance(value, dict)
    return value


async def still_open(comm: WebsocketCommunicator) -> None:
    """A round trip: every message for it sent before has been handled by now."""
    await comm.send_json_to({"type": "ping", "ts": 1})
    assert strict_json(await comm.receive_from(timeout=CLOSE_TIMEOUT))["type"] == "pong"


@pytest.fixture
def member(venue: Venue, plain_user: Any) -> Any:
    venue.members.add(plain_user)
    return plain_user


# --- tokens and venues --------------------------------------------------------------------


async def test_deleting_a_token_closes_its_connections(
    venue: Venue, fresh_monitor: WebSocketMonitor
) -> None:
    deleted = await join_with_token(venue)
    kept = await join_with_token(venue, "Bar tablet")
    await VenueAccessToken.objects.filter(name="Kitchen screen").adelete()
    await closed_and_deaf(deleted, 4401, venue, kept=kept)
    assert fresh_monitor.errors_by_type == {"access_revoked": 1}
    await kept.disconnect()


@pytest.mark.parametrize("how", ["deactivate", "delete"])
async def test_a_venue_that_goes_away_closes_every_connection_with_4404(
    venue: Venue, other_venue: Venue, staff_user: Any, how: str
) -> None:
    device = await join_with_token(venue)
    _, staff = await join_as(staff_user, venue)
    elsewhere = await join_with_token(other_venue, "Harbour screen")

    def end() -> None:
        if how == "deactivate":
            venue.is_active = False
            venue.save()
        else:
            venue.delete()

    await database_sync_to_async(end)()
    await closed_and_deaf(device, 4404, venue)
    await closed_and_deaf(staff, 4404, venue)
    await still_open(elsewhere)
    await elsewhere.disconnect()
    assert await group_members(venue.pk) == 0


# --- people -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["deactivate", "delete", "no_longer_staff", "new_password"])
async def test_a_staff_user_whose_grant_ends_is_disconnected_everywhere(
    venue: Venue, other_venue: Venue, staff_user: Any, how: str
) -> None:
    _, here = await join_as(staff_user, venue)
    _, there = await join_as(staff_user, other_venue)
    device = await join_with_token(venue)

    def end() -> None:
        if how == "delete":
            staff_user.delete()
            return
        if how == "deactivate":
            staff_user.is_active = False
        elif how == "no_longer_staff":
            staff_user.is_staff = False
        else:  # a password change ends the user's sessions, as it does for HTTP requests
            staff_user.set_password("a-new-password-456")
        staff_user.save()

    await database_sync_to_async(end)()
    await closed_and_deaf(here, 4401, venue, kept=device)
    await closed_and_deaf(there, 4401, other_venue)
    await device.disconnect()


async def test_a_staff_member_who_stays_a_member_keeps_the_room(
    venue: Venue, staff_user: Any
) -> None:
    await database_sync_to_async(venue.members.add)(staff_user)
    _, comm = await join_as(staff_user, venue)

    def no_longer_staff() -> None:
        staff_user.is_staff = False
        staff_user.save()

    await database_sync_to_async(no_longer_staff)()
    # The re-check it caused found the membership: the next broadcast still arrives.
    await abroadcast_to_venue(venue.pk, "order.created", {"order": 1})
    assert (await comm.receive_json_from(timeout=CLOSE_TIMEOUT))["event"] == "order.created"
    await still_open(comm)
    await comm.disconnect()


async def test_a_login_elsewhere_does_not_disconnect_anyone(venue: Venue, staff_user: Any) -> None:
    _, comm = await join_as(staff_user, venue)
    await database_sync_to_async(signed_in)(staff_user)  # saves last_login only
    await still_open(comm)
    await comm.disconnect()


MEMBERSHIP_ENDS: dict[str, Callable[[Venue, Any], None]] = {
    "remove": lambda venue, user: venue.members.remove(user),
    "clear": lambda venue, user: venue.members.clear(),
    "set": lambda venue, user: venue.members.set([]),
    "set_with_clear": lambda venue, user: venue.members.set([], clear=True),
    "reverse_remove": lambda venue, user: user.venues.remove(venue),
    "reverse_clear": lambda venue, user: user.venues.clear(),
    "reverse_set": lambda venue, user: user.venues.set([]),
}


@pytest.mark.parametrize("how", sorted(MEMBERSHIP_ENDS))
async def test_a_person_who_is_no_longer_a_member_is_disconnected(
    venue: Venue, member: Any, staff_user: Any, how: str
) -> None:
    await database_sync_to_async(venue.members.add)(staff_user)
    _, comm = await join_as(member, venue)
    _, staff = await join_as(staff_user, venue)  # staff see every venue, member or not
    device = await join_with_token(venue)
    await database_sync_to_async(MEMBERSHIP_ENDS[how])(venue, member)
    await closed_and_deaf(comm, 4401, venue, kept=device)
    assert (await staff.receive_json_from(timeout=CLOSE_TIMEOUT))["event"] == "order.created"
    await still_open(staff)
    await staff.disconnect()
    await device.disconnect()


# --- sessions -----------------------------------------------------------------------------


async def test_logging_out_closes_that_sessions_connections(venue: Venue, member: Any) -> None:
    browser, comm = await join_as(member, venue)
    _, other_browser = await join_as(member, venue)
    await database_sync_to_async(browser.logout)()
    await closed_and_deaf(comm, 4401, venue, kept=other_browser)
    await other_browser.disconnect()


@FAST_RECHECK
async def test_a_deleted_session_is_noticed_by_the_periodic_recheck(
    venue: Venue, member: Any
) -> None:
    browser, comm = await join_as(member, venue)
    _, other_browser = await join_as(member, venue)
    key = browser.session.session_key
    # A queryset delete, as `clearsessions` does, sends no signal.
    await Session.objects.filter(session_key=key).adelete()
    await closed_and_deaf(comm, 4401, venue, kept=other_browser)
    await other_browser.disconnect()


@FAST_RECHECK
async def test_an_expired_session_is_noticed_by_the_periodic_recheck(
    venue: Venue, member: Any
) -> None:
    device = await join_with_token(venue)
    browser, comm = await join_as(member, venue)

    def expires_soon() -> datetime:
        # Two minutes, not weeks: the Redis layer drops group members older than its group
        # expiry (CHANNEL_LAYER_GROUP_EXPIRY_SECONDS, 5 minutes) when the clock jumps.
        session = browser.session
        session.set_expiry(120)
        session.save()
        return session.get_expiry_date()

    expiry = await database_sync_to_async(expires_soon)()
    with time_machine.travel(expiry + timedelta(seconds=1), tick=True):
        await closed_and_deaf(comm, 4401, venue, kept=device)
    await device.disconnect()


@FAST_RECHECK
async def test_changes_made_without_signals_are_noticed_by_the_periodic_recheck(
    venue: Venue, member: Any
) -> None:
    _, comm = await join_as(member, venue)
    await get_user_model().objects.filter(pk=member.pk).aupdate(is_active=False)
    await closed_and_deaf(comm, 4401, venue)
    device = await join_with_token(venue)
    await Venue.objects.filter(pk=venue.pk).aupdate(is_active=False)
    await closed_and_deaf(device, 4404, venue)


async def test_the_recheck_costs_a_few_queries_whatever_the_number_of_connections(
    venue: Venue,
    other_venue: Venue,
    member: Any,
    staff_user: Any,
    django_assert_max_num_queries: Any,
) -> None:
    def grants() -> list[Grant]:
        tokens = [VenueAccessToken.issue(venue, f"Screen {i}")[0] for i in range(100)]
        sessions = [signed_in(user)[0].session.session_key for user in (member, staff_user) * 50]
        users = [member, staff_user] * 50
        return [Grant(venue.pk, token_id=t.pk) for t in tokens] + [
            Grant(v.pk, user_id=u.pk, session_key=key)
            for u, key in zip(users, sessions, strict=True)
            for v in (venue, other_venue)
        ]

    every = await database_sync_to_async(grants)()

    def check() -> dict[Grant, CloseCode]:
        with django_assert_max_num_queries(5):
            return _lapsed_grants(every)

    lapsed = await database_sync_to_async(check)()
    # Only the member's grants for a venue they are not a member of have lapsed.
    assert set(lapsed) == {g for g in every if g.user_id == member.pk and g.venue_id != venue.pk}
    assert set(lapsed.values()) == {CloseCode.UNAUTHENTICATED}


# --- numbers that are not JSON ------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "ping", "ts": 1e400}',
        '{"type": "ping", "ts": -1e400}',
        '{"type": "ping", "ts": Infinity}',
        '{"type": "ping", "ts": -Infinity}',
        '{"type": "ping", "ts": NaN}',
        '{"type": "ping", "rttMs": 1e999}',
        '{"type": "ping", "extra": {"deep": [1, 2, NaN]}}',
    ],
)
async def test_non_finite_numbers_are_invalid_and_the_connection_lives_on(
    venue: Venue, venue_token: str, fresh_monitor: WebSocketMonitor, frame: str
) -> None:
    comm = await join(f"/ws/venues/{venue.pk}/?token={venue_token}")
    await comm.send_to(text_data=frame)
    error = strict_json(await comm.receive_from())
    assert error["type"] == "error"
    assert error["code"] == "invalid_message"
    assert "finite" in error["message"]
    assert fresh_monitor.errors_by_type == {"invalid_message": 1}
    await still_open(comm)
    await comm.disconnect()


def test_an_event_holding_a_non_finite_number_is_never_sent() -> None:
    with pytest.raises(ValueError, match="JSON"):
        venue_event_message("order.created", {"total": math.inf})

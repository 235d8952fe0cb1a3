"""The rooms' door (orders/entry.py): many handshakes answered in one batch of a few queries,
with the rules of admission, and no revocation lost to the moment between the door's look and
the connection joining its groups."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inkwave.db import database_sync_to_async
from orders import entry
from orders.access import Credentials
from orders.entry import Ask, _answer_all, get_door
from orders.hub import get_hub
from orders.models import Venue, VenueAccessToken
from orders.protocol import CloseCode, ResyncReason
from tests.test_room_access import CLOSE_TIMEOUT, signed_in
from tests.test_room_resume import place
from tests.test_venue_room import communicator, group_members, join, refused_with

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_client")]


def session_key(cookie: bytes) -> str:
    return cookie.decode().split("=", 1)[1]


def asks_for(
    venue: Venue, other_venue: Venue, staff_user: Any, plain_user: Any, copies: int
) -> tuple[list[Ask], list[int | CloseCode]]:
    """A mixed crowd at the door, `copies` of each kind, and what each must be answered."""
    _, token = VenueAccessToken.issue(venue, "Kitchen")
    _, other_token = VenueAccessToken.issue(other_venue, "Harbour")
    revoked, revoked_raw = VenueAccessToken.issue(venue, "Old tablet")
    revoked.revoked_at = timezone.now()
    revoked.save()
    staff = session_key(signed_in(staff_user)[1])
    outsider = session_key(signed_in(plain_user)[1])
    inactive = Venue.objects.create(name="Closed", slug="closed", is_active=False)
    kinds: list[tuple[Ask, int | CloseCode]] = [
        (Ask(venue.pk, None, Credentials(token=token)), venue.pk),
        (Ask(venue.pk, None, Credentials(session_key=staff)), venue.pk),
        (Ask(venue.pk, None, Credentials(token=revoked_raw)), CloseCode.UNAUTHENTICATED),
        (Ask(venue.pk, None, Credentials(session_key="nosuchsession")), CloseCode.UNAUTHENTICATED),
        (Ask(venue.pk, None, Credentials(token=other_token)), CloseCode.FORBIDDEN),
        (Ask(venue.pk, None, Credentials(session_key=outsider)), CloseCode.FORBIDDEN),
        (Ask(inactive.pk, None, Credentials(session_key=staff)), CloseCode.NOT_FOUND),
        (Ask(10**9, None, Credentials(token=token)), CloseCode.NOT_FOUND),
        (Ask(other_venue.pk, 0, None), other_venue.pk),  # a member asking for the state only
    ]
    asks = [ask for ask, _ in kinds] * copies
    expected = [outcome for _, outcome in kinds] * copies
    return asks, expected


def answered(answer: entry.Answer) -> int | CloseCode:
    if answer.admission is not None and answer.admission.grant is None:
        assert answer.state is None
        assert answer.admission.refusal is not None
        return answer.admission.refusal
    assert answer.state is not None
    if answer.admission is None:
        return 0
    assert answer.admission.grant is not None
    return answer.admission.grant.venue_id


@pytest.mark.parametrize("copies", [1, 40])
def test_a_crowd_is_answered_by_the_rules_of_admission_in_a_few_queries(
    venue: Venue, other_venue: Venue, staff_user: Any, plain_user: Any, copies: int
) -> None:
    asks, expected = asks_for(venue, other_venue, staff_user, plain_user, copies)
    with CaptureQueriesContext(connection) as queries:
        answers = _answer_all(asks)
    outcomes = [answered(a) for a in answers]
    assert outcomes == [0 if e == other_venue.pk else e for e in expected]
    # venues, tokens, the tokens' last use, sessions, users, memberships: the same for 9 asks
    # as for 360.
    assert len(queries) <= 6, [q["sql"] for q in queries]


def test_the_state_read_with_admission_replays_what_each_client_missed(
    venue: Venue, device: Client, venue_token: str
) -> None:
    place(device, venue, 5)
    token = venue_token
    current = Venue.objects.get(pk=venue.pk).room_seq
    shown = Credentials(token=token)
    asks = [Ask(venue.pk, after, shown) for after in (None, current, current - 2, 0, current + 9)]
    with CaptureQueriesContext(connection) as queries:
        states = [a.state for a in _answer_all(asks)]
    assert all(s is not None and s.current == current for s in states)
    assert [len(s.frames) for s in states if s is not None] == [0, 0, 2, current, 0]
    assert states[4] is not None
    assert states[4].resync == ResyncReason.UNKNOWN
    assert len(queries) <= 4  # venues, tokens (+ their last use), one for every replay


async def test_concurrent_handshakes_share_batches(venue: Venue, venue_token: str) -> None:
    door = get_door()
    before = door.batches
    rooms = await asyncio.gather(
        *(join(f"/ws/venues/{venue.pk}/?token={venue_token}") for _ in range(30))
    )
    assert door.batches - before <= 15, door.batches - before
    await asyncio.gather(*(room.disconnect() for room in rooms))


async def test_no_credentials_are_refused_without_a_lookup_or_joining(
    venue: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = get_channel_layer()
    joined: list[str] = []
    real_add = layer.group_add

    async def group_add(group: str, channel: str) -> None:
        joined.append(group)
        await real_add(group, channel)

    monkeypatch.setattr(layer, "group_add", group_add)
    room = f"/ws/venues/{venue.pk}/"
    codes = await asyncio.gather(
        *(refused_with(room + query) for query in ("", "?token=", "?token=not-a-token")),
        refused_with(f"{room}?token=iwv_{'x' * 200}"),
        refused_with(room, cookie=b"sessionid=../../etc"),
    )
    assert codes == [4401] * 5
    assert joined == []


async def test_a_venue_id_no_venue_can_have_is_refused_without_joining(
    venue_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No venue's id is past the largest primary key; from 94 digits on, its group's name is
    one the channel layer refuses: the join raised, the client was told 1011 (come back
    later, for ever), and the process kept trying to leave a group it never joined."""
    layer = get_channel_layer()
    joined: list[str] = []
    real_add = layer.group_add

    async def group_add(group: str, channel: str) -> None:
        joined.append(group)
        await real_add(group, channel)

    monkeypatch.setattr(layer, "group_add", group_add)
    codes = [
        await refused_with(f"/ws/venues/{venue_id}/?token={venue_token}")
        for venue_id in (2**63, "9" * 100)
    ]
    assert codes == [4404, 4404]
    assert joined == []
    assert get_hub().unleft == {}


async def test_a_refused_connection_leaves_the_room_it_joined_to_knock(venue: Venue) -> None:
    assert await refused_with(f"/ws/venues/{venue.pk}/?token=iwv_unknown") == 4401
    assert await group_members(venue.pk) == 0


def revoking_after_the_door_looks(monkeypatch: pytest.MonkeyPatch, revoke: Any) -> asyncio.Event:
    """The door answers, then `revoke` commits (on the door's thread, before the connection
    has joined the rest of its groups or been accepted)."""
    real = entry._answer_all
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def answer_then_revoke(asks: list[Ask]) -> list[entry.Answer]:
        answers = real(asks)
        if not done.is_set():
            revoke()
            loop.call_soon_threadsafe(done.set)
        return answers

    monkeypatch.setattr(entry, "answer_all", database_sync_to_async(answer_then_revoke))
    return done


async def test_a_token_revoked_while_its_handshake_is_answered_is_closed_at_once(
    venue: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, raw = await database_sync_to_async(VenueAccessToken.issue)(venue, "Kitchen")

    def revoke() -> None:
        token.revoked_at = timezone.now()
        token.save()

    revoked = revoking_after_the_door_looks(monkeypatch, revoke)
    comm = await join(f"/ws/venues/{venue.pk}/?token={raw}")  # the door said yes
    assert revoked.is_set()
    closed = await comm.receive_output(timeout=CLOSE_TIMEOUT)
    assert closed == {"type": "websocket.close", "code": 4401}


async def test_a_session_logged_out_while_its_handshake_is_answered_is_closed_at_once(
    venue: Venue, staff_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, cookie = await database_sync_to_async(signed_in)(staff_user)
    revoked = revoking_after_the_door_looks(monkeypatch, lambda: client.post("/admin/logout/"))
    comm = communicator(f"/ws/venues/{venue.pk}/", cookie=cookie)
    connected, _ = await comm.connect()
    assert connected
    assert revoked.is_set()
    outputs = [await comm.receive_output(timeout=CLOSE_TIMEOUT) for _ in range(2)]
    assert outputs[-1] == {"type": "websocket.close", "code": 4401}, outputs


async def test_a_failed_batch_turns_every_asker_away_with_1011(
    venue: Venue, venue_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(asks: list[Ask]) -> list[entry.Answer]:
        raise OSError("the database is down")

    monkeypatch.setattr(entry, "answer_all", database_sync_to_async(down))
    codes = await asyncio.gather(
        *(refused_with(f"/ws/venues/{venue.pk}/?token={venue_token}") for _ in range(5))
    )
    assert codes == [1011] * 5
    assert await group_members(venue.pk) == 0

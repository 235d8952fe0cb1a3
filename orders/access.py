"""Who may join a venue's room, and whether what let a connection in still holds.

Admission runs once per connection. Afterwards a connection keeps its `Grant` (the venue and
the token, or the user and session, that let it in); `lapsed_grants` re-checks many grants
at once in a fixed number of queries, for the process's periodic sweep and for the re-checks
that signals ask for (orders/revocation.py, orders/watch.py).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib import import_module
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from orders.models import Venue, VenueAccessToken
from orders.protocol import CloseCode


@dataclass(frozen=True, slots=True)
class Grant:
    """What let one connection in; the connection stays only while it holds."""

    venue_id: int
    token_id: int | None = None
    user_id: int | None = None
    # The session that authenticated the user (None when the scope's user came without one).
    session_key: str | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    grant: Grant | None
    refusal: CloseCode | None


def _admit(scope: dict[str, Any], venue_id: int) -> Admission:
    user = scope.get("user")
    raw_token = scope.get("venue_token")
    # A token of an inactive venue still identifies the caller: its venue is "not found".
    token = VenueAccessToken.authenticate(raw_token, inactive_venues=True) if raw_token else None
    user_ok = bool(user is not None and user.is_authenticated and user.is_active)
    if token is None and not user_ok:
        return Admission(None, CloseCode.UNAUTHENTICATED)
    venue = Venue.objects.filter(pk=venue_id, is_active=True).first()
    if venue is None:
        return Admission(None, CloseCode.NOT_FOUND)
    if token is not None and token.venue_id == venue.pk:
        return Admission(Grant(venue.pk, token_id=token.pk), None)
    if user is not None and user_ok and venue.is_accessible_by(user):
        session_key = getattr(scope.get("session"), "session_key", None)
        return Admission(Grant(venue.pk, user_id=user.pk, session_key=session_key), None)
    return Admission(None, CloseCode.FORBIDDEN)


admit = database_sync_to_async(_admit)


def _session_data(keys: Collection[str], now: datetime) -> dict[str, dict[str, Any]]:
    """The decoded data of those sessions that still exist and have not expired."""
    if not keys:
        return {}
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    model_class = getattr(store_class, "get_model_class", None)
    if model_class is None:  # cache or cookie sessions: one lookup each
        return {key: data for key in keys if (data := store_class(key).load())}
    rows = model_class().objects.filter(session_key__in=keys, expire_date__gt=now)
    return {key: _decode(data) for key, data in rows.values_list("session_key", "session_data")}


@lru_cache(maxsize=10_000)
def _decode(session_data: str) -> dict[str, Any]:
    """Verifying a session's signature is most of a re-check's time, and the same data comes
    back every sweep: decode each distinct value once. Callers only read the result."""
    decoded: dict[str, Any] = (
        import_module(settings.SESSION_ENGINE).SessionStore().decode(session_data)
    )
    return decoded


def _session_hashes(user: Any) -> list[str]:
    """The session hashes Django's own get_user() accepts for this user (key fallbacks too)."""
    hashes = [user.get_session_auth_hash()]
    hashes += [user._get_session_auth_hash(secret=key) for key in settings.SECRET_KEY_FALLBACKS]
    return hashes


def _session_holds(
    grant: Grant, user: Any, sessions: dict[str, dict[str, Any]], hashes: list[str]
) -> bool:
    if grant.session_key is None:
        return True
    data = sessions.get(grant.session_key)
    if data is None or str(data.get(SESSION_KEY)) != str(user.pk):
        return False  # logged out, deleted, expired, or another user's now
    stored = str(data.get(HASH_SESSION_KEY, ""))
    # A password change ends the user's other sessions, as it does for HTTP requests.
    return any(constant_time_compare(stored, h) for h in hashes)


def _lapsed_grants(grants: Collection[Grant]) -> dict[Grant, CloseCode]:
    """The grants that no longer hold, each with the code its connections close with.

    Five queries at most, whatever the number of grants: venues, tokens, sessions, users,
    memberships. The rules are those of admission, so a connection is closed exactly when
    connecting again would be refused.
    """
    if not grants:
        return {}
    now = timezone.now()
    venue_ids = {g.venue_id for g in grants}
    active_venues = set(
        Venue.objects.filter(pk__in=venue_ids, is_active=True).values_list("pk", flat=True)
    )
    token_ids = {g.token_id for g in grants if g.token_id is not None}
    token_venues = dict(
        VenueAccessToken.objects.filter(pk__in=token_ids, revoked_at__isnull=True).values_list(
            "pk", "venue_id"
        )
        if token_ids
        else ()
    )
    user_grants = [g for g in grants if g.user_id is not None]
    user_ids = {g.user_id for g in user_grants}
    users = (
        {u.pk: u for u in get_user_model().objects.filter(pk__in=user_ids, is_active=True)}
        if user_ids
        else {}
    )
    sessions = _session_data({g.session_key for g in user_grants if g.session_key}, now)
    hashes = {pk: _session_hashes(u) for pk, u in users.items()}  # once per user, not per tab
    non_staff = [pk for pk, u in users.items() if not getattr(u, "is_staff", False)]
    memberships = set(
        Venue.members.through.objects.filter(
            user_id__in=non_staff, venue_id__in=venue_ids
        ).values_list("venue_id", "user_id")
        if non_staff
        else ()
    )
    lapsed: dict[Grant, CloseCode] = {}
    for grant in grants:
        if grant.venue_id not in active_venues:
            lapsed[grant] = CloseCode.NOT_FOUND
        elif grant.token_id is not None:
            if token_venues.get(grant.token_id) != grant.venue_id:
                lapsed[grant] = CloseCode.UNAUTHENTICATED
        elif grant.user_id is None or not _user_holds(
            grant, users.get(grant.user_id), sessions, hashes.get(grant.user_id, []), memberships
        ):
            lapsed[grant] = CloseCode.UNAUTHENTICATED
    return lapsed


def _user_holds(
    grant: Grant,
    user: Any,
    sessions: dict[str, dict[str, Any]],
    hashes: list[str],
    memberships: set[tuple[int, int]],
) -> bool:
    if user is None or not _session_holds(grant, user, sessions, hashes):
        return False
    # As Venue.is_accessible_by: staff see every venue, others the ones they are members of.
    return bool(getattr(user, "is_staff", False)) or (grant.venue_id, user.pk) in memberships


# Not on the thread that admits connections: a sweep of thousands must not hold up connects.
lapsed_grants = database_sync_to_async(_lapsed_grants, thread_sensitive=False)

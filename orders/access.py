"""Who may join a venue's room, and whether what let a connection in still holds.

Admission runs once per connection, for many connections at once (`admit_all`, called by
orders/entry.py for every connection that knocked while the last batch was answered). Then a
connection keeps its `Grant` (the venue and the token, or the user and session, that let it
in); `lapsed_grants` re-checks many grants at once in a fixed number of queries, with the
same rules, for the process's periodic sweep and for the re-checks that signals ask for
(orders/revocation.py, orders/watch.py).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from inkwave.db import database_sync_to_async
from orders.models import TOKEN_PREFIX, TOKEN_TOUCH_INTERVAL, Venue, VenueAccessToken, hash_token
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


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a connection shows at the door: a device token, a session cookie, or both."""

    token: str | None = None
    session_key: str | None = None


MAX_TOKEN_LENGTH = 100
MAX_SESSION_KEY_LENGTH = 40  # the session table's column


def credentials(scope: dict[str, Any]) -> Credentials | None:
    """The scope's credentials, or None when it has none worth a lookup (answered 4401 at
    once, without a query or a channel layer call)."""
    token = scope.get("venue_token") or None
    if token is not None and not (
        len(token) <= MAX_TOKEN_LENGTH and token.startswith(TOKEN_PREFIX)
    ):
        token = None
    key = scope.get("cookies", {}).get(settings.SESSION_COOKIE_NAME) or None
    if key is not None and not (len(key) <= MAX_SESSION_KEY_LENGTH and key.isalnum()):
        key = None
    if token is None and key is None:
        return None
    return Credentials(token, key)


def admit_all(
    asks: Sequence[tuple[int, Credentials]], active_venues: Collection[int]
) -> list[Admission]:
    """Admission of many connections at once, each (venue id, credentials), in three queries
    whatever their number (tokens, sessions and users, memberships), with the rules of the
    re-check below: a connection is let in exactly when its grant would then hold.

    `active_venues`: which of the asked venues exist and are active, read by the caller.
    """
    now = timezone.now()
    tokens = _tokens({c.token for _, c in asks if c.token}, now)
    people = _people({c.session_key for _, c in asks if c.session_key}, (), {v for v, _ in asks})
    admissions = []
    for venue_id, creds in asks:
        token = tokens.get(creds.token) if creds.token else None
        user_grant = people.session_grant(venue_id, creds.session_key)
        if token is None and user_grant is None:
            admissions.append(Admission(None, CloseCode.UNAUTHENTICATED))
        elif venue_id not in active_venues:
            admissions.append(Admission(None, CloseCode.NOT_FOUND))
        elif token is not None and token[1] == venue_id:
            admissions.append(Admission(Grant(venue_id, token_id=token[0]), None))
        elif user_grant is not None and people.holds(user_grant):
            admissions.append(Admission(user_grant, None))
        else:
            admissions.append(Admission(None, CloseCode.FORBIDDEN))
    return admissions


def _tokens(raws: Collection[str], now: datetime) -> dict[str, tuple[int, int]]:
    """The unrevoked tokens among `raws`: raw -> (token id, venue id); marks them used."""
    if not raws:
        return {}
    by_hash = {hash_token(raw): raw for raw in raws}
    rows = VenueAccessToken.objects.filter(
        token_hash__in=by_hash, revoked_at__isnull=True
    ).values_list("token_hash", "pk", "venue_id", "last_used_at")
    found: dict[str, tuple[int, int]] = {}
    stale: list[int] = []
    for token_hash, pk, venue_id, last_used_at in rows:
        found[by_hash[token_hash]] = (pk, venue_id)
        if last_used_at is None or last_used_at < now - TOKEN_TOUCH_INTERVAL:
            stale.append(pk)
    if stale:
        VenueAccessToken.objects.filter(pk__in=stale).update(last_used_at=now)
    return found


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


def _session_user_id(data: dict[str, Any]) -> Any:
    """The user a session signed in, as Django's get_user() reads it; None when it has none
    or its backend is no longer configured."""
    if data.get(BACKEND_SESSION_KEY) not in settings.AUTHENTICATION_BACKENDS:
        return None
    try:
        return get_user_model()._meta.pk.to_python(data.get(SESSION_KEY))  # type: ignore[union-attr]
    except ValidationError:
        return None


@dataclass
class _People:
    """What decides whether signed-in users hold their grants: their sessions, the users
    (active ones only), the session hashes each accepts, and their memberships."""

    sessions: dict[str, dict[str, Any]]
    users: dict[Any, Any]
    hashes: dict[Any, list[str]]
    memberships: set[tuple[int, Any]]

    def session_grant(self, venue_id: int, session_key: str | None) -> Grant | None:
        """The grant a session would give in that venue if its user may enter it."""
        data = self.sessions.get(session_key) if session_key else None
        user_id = None if data is None else _session_user_id(data)
        if user_id is None or user_id not in self.users:
            return None
        return Grant(venue_id, user_id=user_id, session_key=session_key)

    def holds(self, grant: Grant) -> bool:
        user = self.users.get(grant.user_id)
        if user is None or not self._session_holds(grant, user):
            return False
        # As Venue.is_accessible_by: staff see every venue, others the ones they are members of.
        return (
            bool(getattr(user, "is_staff", False)) or (grant.venue_id, user.pk) in self.memberships
        )

    def _session_holds(self, grant: Grant, user: Any) -> bool:
        if grant.session_key is None:
            return True
        data = self.sessions.get(grant.session_key)
        if data is None or _session_user_id(data) != user.pk:
            return False  # logged out, deleted, expired, or another user's now
        stored = str(data.get(HASH_SESSION_KEY, ""))
        # A password change ends the user's other sessions, as it does for HTTP requests.
        return any(constant_time_compare(stored, h) for h in self.hashes.get(user.pk, ()))


def _people(
    session_keys: Collection[str], user_ids: Collection[Any], venue_ids: Collection[int]
) -> _People:
    """Loaded in three queries at most (sessions, users, memberships), whatever the numbers:
    the sessions named, the users named or signed in by them, their memberships of venues."""
    sessions = _session_data(session_keys, timezone.now())
    ids = set(user_ids)
    ids.update(uid for data in sessions.values() if (uid := _session_user_id(data)) is not None)
    users = (
        {u.pk: u for u in get_user_model().objects.filter(pk__in=ids, is_active=True)}
        if ids
        else {}
    )
    hashes = {pk: _session_hashes(u) for pk, u in users.items()}  # once per user, not per tab
    non_staff = [pk for pk, u in users.items() if not getattr(u, "is_staff", False)]
    memberships = set(
        Venue.members.through.objects.filter(
            user_id__in=non_staff, venue_id__in=venue_ids
        ).values_list("venue_id", "user_id")
        if non_staff and venue_ids
        else ()
    )
    return _People(sessions, users, hashes, memberships)


def _lapsed_grants(grants: Collection[Grant]) -> dict[Grant, CloseCode]:
    """The grants that no longer hold, each with the code its connections close with.

    Five queries at most, whatever the number of grants: venues, tokens, sessions, users,
    memberships. The rules are those of admission, so a connection is closed exactly when
    connecting again would be refused.
    """
    if not grants:
        return {}
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
    people = _people(
        {g.session_key for g in user_grants if g.session_key},
        {g.user_id for g in user_grants},
        venue_ids,
    )
    lapsed: dict[Grant, CloseCode] = {}
    for grant in grants:
        if grant.venue_id not in active_venues:
            lapsed[grant] = CloseCode.NOT_FOUND
        elif grant.token_id is not None:
            if token_venues.get(grant.token_id) != grant.venue_id:
                lapsed[grant] = CloseCode.UNAUTHENTICATED
        elif grant.user_id is None or not people.holds(grant):
            lapsed[grant] = CloseCode.UNAUTHENTICATED
    return lapsed


# Not on the thread that admits connections: a sweep of thousands must not hold up connects.
lapsed_grants = database_sync_to_async(_lapsed_grants, thread_sensitive=False)

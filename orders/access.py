"""Who may join a venue's room: database work for the consumer, once per connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async

from orders.models import Venue, VenueAccessToken
from orders.protocol import CloseCode


@dataclass(frozen=True, slots=True)
class Admission:
    venue_id: int | None
    refusal: CloseCode | None
    # Who was admitted, so a revocation can close exactly their connections.
    token_id: int | None = None
    user_id: int | None = None


def _admit(scope: dict[str, Any], venue_id: int) -> Admission:
    user = scope.get("user")
    raw_token = scope.get("venue_token")
    token = VenueAccessToken.authenticate(raw_token) if raw_token else None
    user_ok = bool(user is not None and user.is_authenticated and user.is_active)
    if token is None and not user_ok:
        return Admission(None, CloseCode.UNAUTHENTICATED)
    venue = Venue.objects.filter(pk=venue_id, is_active=True).first()
    if venue is None:
        return Admission(None, CloseCode.NOT_FOUND)
    if token is not None and token.venue_id == venue.pk:
        return Admission(venue.pk, None, token_id=token.pk)
    if user is not None and user_ok and venue.is_accessible_by(user):
        return Admission(venue.pk, None, user_id=user.pk)
    return Admission(None, CloseCode.FORBIDDEN)


admit = database_sync_to_async(_admit)

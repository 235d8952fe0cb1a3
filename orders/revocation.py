"""Access taken away takes effect on open connections too, not only on the next connect."""

from __future__ import annotations

from typing import Any

import structlog
from django.db import transaction

from orders.broadcast import revoke_in_venue

logger = structlog.get_logger(__name__)


def _after_commit(venue_id: int, **who: int) -> None:
    def send() -> None:
        revoke_in_venue(venue_id, **who)

    transaction.on_commit(send, robust=True)


def token_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if instance.revoked_at is not None:
        _after_commit(instance.venue_id, token_id=instance.pk)


def members_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: set[int] | None, **kwargs: Any
) -> None:
    if action not in ("post_remove", "post_clear"):
        return
    if reverse:  # user.venues.remove(venue): instance is the user
        for venue_id in pk_set or ():
            _after_commit(venue_id, user_id=instance.pk)
    elif action == "post_remove":
        for user_id in pk_set or ():
            _after_commit(instance.pk, user_id=user_id)
    else:
        logger.warning("venue_members_cleared", venue=instance.pk)

"""Access taken away takes effect on open connections too, not only on the next connect.

Each way a grant can end has a signal here, sent after the commit to the connections it may
concern, on every web process (orders/broadcast.py). They re-check their grant with the
rules of admission (orders/access.py) and close if it lapsed: 4404 when the venue is gone
or inactive, 4401 otherwise. A logout closes its session's connections directly.

What no signal announces (a session that expires, rows deleted or changed with a queryset
`update()` or in SQL) is found by each process's periodic re-check (orders/watch.py). Sessions
have no delete signal on purpose: a receiver on the Session model would make `clearsessions`
load every expired row instead of deleting them in one statement.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from django.db import transaction

from orders import broadcast

# A user's save that changes none of these cannot end their access (a login's last_login).
USER_ACCESS_FIELDS = frozenset({"is_active", "is_staff", "password"})


def _after_commit(send: Callable[[], None]) -> None:
    # robust: a channel layer that is down must not fail the change that was committed;
    # the periodic re-check closes the connections later.
    transaction.on_commit(send, robust=True)


# Ids are read when the signal is sent: a deleted instance's pk is None by the commit.


def token_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if instance.revoked_at is not None:
        token_deleted(sender, instance)


def token_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    venue_id, token_id = instance.venue_id, instance.pk
    _after_commit(lambda: broadcast.recheck_venue_access(venue_id, token=token_id))


def venue_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if not created and not instance.is_active:
        venue_deleted(sender, instance)


def venue_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    venue_id = instance.pk
    _after_commit(lambda: broadcast.recheck_venue_access(venue_id))


def members_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: set[int] | None, **kwargs: Any
) -> None:
    """remove(), clear() and set() (which removes, or clears) from either side."""
    if action not in ("post_remove", "post_clear"):
        return
    if reverse:  # user.venues.remove(...) / clear(): instance is the user
        user_id = instance.pk
        if action == "post_clear":
            _after_commit(lambda: broadcast.recheck_user_access(user_id))
        for venue_id in pk_set or ():
            _after_commit(partial(broadcast.recheck_venue_access, venue_id, user=user_id))
    elif action == "post_clear":  # who was a member is gone: re-check everyone in the room
        venue_id = instance.pk
        _after_commit(lambda: broadcast.recheck_venue_access(venue_id))
    else:
        venue_id = instance.pk
        for user_id in pk_set or ():
            _after_commit(partial(broadcast.recheck_venue_access, venue_id, user=user_id))


def user_saved(
    sender: Any,
    instance: Any,
    created: bool,
    update_fields: frozenset[str] | None = None,
    **kwargs: Any,
) -> None:
    """Deactivated, no longer staff, or a new password (which ends their other sessions)."""
    if created or (update_fields is not None and not USER_ACCESS_FIELDS & update_fields):
        return
    user_deleted(sender, instance)


def user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    user_id = instance.pk
    _after_commit(lambda: broadcast.recheck_user_access(user_id))


def user_logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    # Sent just before the session is flushed: a re-check now could still find it, so the
    # session's connections are told it ended instead.
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if user is not None and session_key:
        user_id = user.pk
        _after_commit(lambda: broadcast.end_session_access(user_id, session_key))

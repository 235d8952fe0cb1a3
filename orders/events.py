"""Order events: recorded, broadcast to the venue's room, and routed to Slack.

Each function runs inside the caller's transaction: the OrderEvent and the outbox rows
commit with the change itself; the room broadcast goes out after the commit.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from inkwave.lib.formats import local_time, money, plural, utc_time
from inkwave.lib.text import storable, storable_json
from notifications.formatting import Composed, compose
from notifications.models import Notification, NotificationKind
from notifications.outbox import Coalescing, Tally, enqueue, enqueue_coalesced
from orders.broadcast import broadcast_to_venue
from orders.messages import order_message
from orders.models import Order, OrderEvent, OrderEventKind, Venue
from orders.protocol import RoomEvent
from orders.serializers import FieldErrors, order_json

logger = structlog.get_logger(__name__)


# How a summary of one venue's order chatter names what it counts, per kind.
SUMMARY_TITLES: dict[str, tuple[str, str]] = {
    NotificationKind.ORDER_PLACED: ("🛒", "new order"),
    NotificationKind.ORDER_STATUS_CHANGED: ("🔄", "order status change"),
    NotificationKind.PAYMENT_ISSUE: ("💳", "payment issue"),
}


def _notify(kind: NotificationKind, order: Order, message: Composed) -> None:
    """Order chatter, held to ORDER_NOTIFY_LIMIT per venue and kind per window: past it, one
    message counts the venue's events, so one noisy venue cannot flood a channel. Every event
    is still recorded (OrderEvent) by the caller."""
    venue = order.venue
    enqueue_coalesced(
        kind,
        message,
        Coalescing(
            key=f"{kind}:venue:{venue.pk}",
            limit=settings.ORDER_NOTIFY_LIMIT,
            window_seconds=settings.ORDER_NOTIFY_WINDOW_SECONDS,
            summarize=partial(chatter_summary, kind, venue),
            label=f"#{order.number}",
            context={"venue": venue.pk},
        ),
        context={"order": order.pk, "venue": venue.pk},
    )


def chatter_summary(kind: NotificationKind, venue: Venue, tally: Tally) -> Composed:
    emoji, noun = SUMMARY_TITLES[kind]
    first, last = (datetime.fromisoformat(tally[key]) for key in ("first_at", "last_at"))
    window = settings.ORDER_NOTIFY_WINDOW_SECONDS
    return compose(
        f"{emoji} {plural(tally['count'], noun)} at {venue.name}",
        [
            ("Venue", venue.name),
            ("Events", str(tally["count"])),
            ("Latest Orders", ", ".join(tally["latest"]) or "none"),
            ("From", local_time(first, venue.timezone)),
            ("To", local_time(last, venue.timezone)),
        ],
        note=(
            f"Past {plural(settings.ORDER_NOTIFY_LIMIT, 'message')} in {window} s from this "
            f"venue, its further {noun}s are counted here; each one is recorded with its order."
            + (
                "\nAction Required: check the payment provider."
                if kind == NotificationKind.PAYMENT_ISSUE
                else ""
            )
        ),
    )


def _tell_room(
    order: Order, kind: OrderEventKind, event: RoomEvent, payload: dict[str, Any]
) -> OrderEvent:
    """Record the event with the next number of the venue's room sequence, and broadcast
    it with that number once the transaction commits.

    The number is taken under the venue row's lock (held to the commit), so numbers follow
    commit order and never repeat; the recorded frame is what a reconnecting client is sent
    again (orders.replay), so the number and the record cannot disagree.
    """
    Venue.objects.filter(pk=order.venue_id).update(room_seq=F("room_seq") + 1)
    seq = Venue.objects.values_list("room_seq", flat=True).get(pk=order.venue_id)
    data = order_json(order)
    recorded = OrderEvent.objects.create(
        kind=kind,
        venue_id=order.venue_id,
        order=order,
        payload=payload,
        seq=seq,
        room_event=str(event),
        room_data=data,
    )
    venue_id = order.venue_id

    def send() -> None:
        broadcast_to_venue(venue_id, event, data, seq=seq)

    # robust: a channel layer outage must not turn a committed order into an error; the
    # clients that missed it get it when they resume.
    transaction.on_commit(send, robust=True)
    return recorded


def order_placed(order: Order) -> None:
    _tell_room(order, OrderEventKind.PLACED, RoomEvent.ORDER_PLACED, {"total": str(order.total)})
    _notify(NotificationKind.ORDER_PLACED, order, order_message(order))
    logger.info(
        "order_created",
        order=order.pk,
        number=order.number,
        venue=order.venue_id,
        total=str(order.total),
    )


def order_changed(order: Order, changes: dict[str, tuple[str, str]]) -> None:
    """`changes` maps a field to (old, new)."""
    payload = {field: {"from": old, "to": new} for field, (old, new) in changes.items()}
    _tell_room(order, OrderEventKind.STATUS_CHANGED, RoomEvent.ORDER_UPDATED, payload)
    when = local_time(timezone.now(), order.venue.timezone)
    if "status" in changes:
        old, new = changes["status"]
        _notify(
            NotificationKind.ORDER_STATUS_CHANGED,
            order,
            compose(
                f"🔄 Order #{order.number} {new}",
                [
                    ("Venue", order.venue.name),
                    ("Table", order.table),
                    ("Status", f"{old} → {new}"),
                    ("Time", when),
                ],
            ),
        )
    if "payment_status" in changes and changes["payment_status"][1] == "failed":
        payment_issue(order, changes["payment_status"][0])


def payment_issue(order: Order, previous: str) -> None:
    OrderEvent.objects.create(
        kind=OrderEventKind.PAYMENT_ISSUE,
        venue=order.venue,
        order=order,
        payload={"from": previous, "to": order.payment_status},
    )
    _notify(
        NotificationKind.PAYMENT_ISSUE,
        order,
        compose(
            f"💳 Payment Issue: Order #{order.number}",
            [
                ("Venue", order.venue.name),
                ("Table", order.table),
                ("Payment", f"{previous} → {order.payment_status}"),
                ("Total", money(order.total, order.currency)),
                ("Time", local_time(timezone.now(), order.venue.timezone)),
            ],
            note="Action Required: check the payment provider and contact the table.",
        ),
    )


def order_creation_failed(
    venue: Venue | None, *, reason: str, errors: FieldErrors | None = None, table: str = ""
) -> None:
    """A validation failure or an exception: always recorded; notified only when it names a
    venue (the API refuses callers who may not use it) and at most once per
    ORDER_FAILURE_NOTIFY_SECONDS per venue, so a device looping on a bad order cannot bury
    the alerts queued behind it. The next notification says how many were held back.
    """
    # What the caller sent may hold NUL or unpaired surrogates, which PostgreSQL refuses even
    # inside JSON: clean it, so that the failure itself is always recorded.
    table = storable(table, 50)
    errors = _storable_errors(errors or {})
    event = OrderEvent.objects.create(
        kind=OrderEventKind.CREATION_FAILED,
        venue=venue,
        payload={"reason": reason, "errors": errors, "table": table},
    )
    logger.warning("order_creation_failed", venue=venue.pk if venue else None, reason=reason)
    if venue is None:
        # No venue the caller may use: anyone signed in, or holding any token, can get
        # here, so it is recorded for the audit and never announced.
        return
    now = timezone.now()
    venue_key = venue.pk if venue else None
    notices = Notification.objects.filter(
        kind=NotificationKind.ORDER_FAILED, context__venue=venue_key
    ).order_by("-pk")
    since = now - timedelta(seconds=settings.ORDER_FAILURE_NOTIFY_SECONDS)
    if notices.filter(created_at__gte=since).exists():
        return
    previous = notices.values_list("context", flat=True).first()
    held_back = (
        OrderEvent.objects.filter(
            kind=OrderEventKind.CREATION_FAILED,
            venue=venue,
            pk__gt=previous.get("event", event.pk),
            pk__lt=event.pk,
        ).count()
        if previous
        else 0
    )
    detail = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in (errors or {}).items())
    enqueue(
        NotificationKind.ORDER_FAILED,
        compose(
            "❌ Failed Order Creation",
            [
                ("Venue", venue.name if venue else "unknown"),
                ("Table", table or "unknown"),
                ("Reason", reason),
                *([("Errors", detail)] if detail else []),
                *([("Also failed since the last notice", str(held_back))] if held_back else []),
                ("Time", local_time(now, venue.timezone) if venue else utc_time(now)),
            ],
        ),
        context={"venue": venue_key, "reason": reason, "event": event.pk},
    )


# Enough to see what went wrong; a body with thousands of bad fields is not kept whole.
MAX_RECORDED_FIELDS = 20


def _storable_errors(errors: FieldErrors) -> FieldErrors:
    kept = dict(list(errors.items())[:MAX_RECORDED_FIELDS])
    if len(errors) > len(kept):
        kept["…"] = [f"{len(errors) - len(kept)} more fields"]
    cleaned: FieldErrors = storable_json(kept)
    return cleaned


def venue_signed_up(venue: Venue) -> None:
    enqueue(
        NotificationKind.VENUE_SIGNUP,
        compose(
            f"🎉 New Venue: {venue.name}",
            [
                ("Slug", venue.slug),
                ("Time Zone", venue.timezone),
                ("Currency", venue.currency),
                ("Time", utc_time(timezone.now())),
            ],
        ),
        context={"venue": venue.pk},
    )

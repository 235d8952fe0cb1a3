from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser, User
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from inkwave.lib.timezones import validate_timezone

TOKEN_PREFIX = "iwv_"  # noqa: S105 -- a public marker, not a secret
# A venue token's last use is written at most this often, not on every connection.
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)


class Venue(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    currency = models.CharField(
        max_length=3,
        default="USD",
        validators=[RegexValidator(r"^[A-Z]{3}$", "Use an ISO 4217 code such as USD or EUR.")],
    )
    is_active = models.BooleanField(default=True)
    # The last order number handed out; incremented under the row lock of an UPDATE.
    order_counter = models.PositiveIntegerField(default=0, editable=False)
    # The sequence number of the last event told to the venue's room (orders.events), which
    # a reconnecting client resumes after; incremented the same way.
    room_seq = models.PositiveBigIntegerField(default=0, editable=False)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="venues",
        help_text="Staff users who may follow this venue's room. Superusers and staff see all.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    # Moved only by `UPDATE ... + 1` under the row's lock (orders.api, orders.events): saving
    # a Venue read earlier (the admin's form, a script) must never write an older value back,
    # or the next order would take a number that is already used.
    COUNTERS = ("order_counter", "room_seq")

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                f.name
                for f in self._meta.concrete_fields
                if not f.primary_key and f.name not in self.COUNTERS
            ]
        super().save(*args, **kwargs)

    def is_accessible_by(self, user: AbstractBaseUser | AnonymousUser) -> bool:
        if not user.is_authenticated or not user.is_active:
            return False
        if getattr(user, "is_staff", False):
            return True
        return self.members.filter(pk=user.pk).exists()


def hash_token(raw: str) -> str:
    # Tokens are 256-bit random strings, so a fast hash is enough: there is nothing to
    # brute-force, unlike a password.
    return hashlib.sha256(raw.encode()).hexdigest()


class VenueAccessTokenQuerySet(models.QuerySet["VenueAccessToken"]):
    def active(self) -> VenueAccessTokenQuerySet:
        return self.filter(revoked_at__isnull=True, venue__is_active=True)


class VenueAccessToken(models.Model):
    """A device's credential for one venue's room (a kitchen screen, a waiter's tablet)."""

    venue = models.ForeignKey(Venue, on_delete=models.CASCADE, related_name="access_tokens")
    name = models.CharField(max_length=100, help_text="What holds it, e.g. 'Kitchen screen'.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(
        max_length=12, editable=False, help_text="The token's first characters."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = VenueAccessTokenQuerySet.as_manager()

    class Meta:
        ordering = ["venue", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def generate() -> str:
        return TOKEN_PREFIX + secrets.token_urlsafe(32)

    def set_token(self, raw: str) -> None:
        self.token_hash = hash_token(raw)
        self.prefix = raw[: len(TOKEN_PREFIX) + 4]

    @classmethod
    def issue(
        cls, venue: Venue, name: str, created_by: User | None = None
    ) -> tuple[VenueAccessToken, str]:
        raw = cls.generate()
        token = cls(venue=venue, name=name, created_by=created_by)
        token.set_token(raw)
        token.save()
        return token, raw

    @classmethod
    def authenticate(cls, raw: str, *, inactive_venues: bool = False) -> VenueAccessToken | None:
        """The unrevoked token; of an active venue unless `inactive_venues` (to answer 4404)."""
        if not raw.startswith(TOKEN_PREFIX) or len(raw) > 100:
            return None
        tokens = cls.objects.active()
        if inactive_venues:
            tokens = cls.objects.filter(revoked_at__isnull=True)
        token = tokens.select_related("venue").filter(token_hash=hash_token(raw)).first()
        if token is not None:
            token.touch()
        return token

    def touch(self) -> None:
        now = timezone.now()
        stale = now - TOKEN_TOUCH_INTERVAL
        type(self).objects.filter(pk=self.pk).filter(
            models.Q(last_used_at__isnull=True) | models.Q(last_used_at__lt=stale)
        ).update(last_used_at=now)

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class OrderStatus(models.TextChoices):
    PLACED = "placed", "Placed"
    ACCEPTED = "accepted", "Accepted"
    PREPARING = "preparing", "Preparing"
    READY = "ready", "Ready"
    SERVED = "served", "Served"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"


class PaymentStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PAID = "paid", "Paid"
    FAILED = "failed", "Failed"
    REFUNDED = "refunded", "Refunded"


# An order in these has not been taken by the kitchen (a cancel is not a take).
TAKEN_NOT = (OrderStatus.PLACED, OrderStatus.CANCELLED)

# Orders that no longer count as revenue.
NON_REVENUE_STATUSES = (OrderStatus.CANCELLED,)


class Order(models.Model):
    venue = models.ForeignKey(Venue, on_delete=models.PROTECT, related_name="orders")
    number = models.PositiveIntegerField(help_text="Sequential within the venue.")
    table = models.CharField(max_length=50)
    status = models.CharField(
        max_length=16, choices=OrderStatus.choices, default=OrderStatus.PLACED
    )
    payment_status = models.CharField(
        max_length=16, choices=PaymentStatus.choices, default=PaymentStatus.PENDING
    )
    currency = models.CharField(max_length=3)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    # When the kitchen first took it (its status left `placed` other than by a cancel).
    accepted_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The caller's Idempotency-Key (orders.api): a retry with it gets this order back instead
    # of a second one; `request_digest` tells a retry from another order under the same key.
    idempotency_key = models.CharField(
        max_length=255, blank=True, default="", db_default="", editable=False
    )
    request_digest = models.CharField(
        max_length=64, blank=True, default="", db_default="", editable=False
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["venue", "number"], name="order_number_per_venue"),
            models.UniqueConstraint(
                fields=["venue", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="order_idempotency_key_per_venue",
            ),
            models.CheckConstraint(
                condition=models.Q(total__gte=0), name="order_total_not_negative"
            ),
        ]
        indexes = [
            models.Index(fields=["venue", "created_at"], name="order_venue_created_idx"),
            # The tickets nobody has taken yet (orders.anomaly): a small index, always.
            models.Index(
                fields=["created_at"],
                condition=models.Q(status="placed"),
                name="order_placed_created_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.number} at {self.venue_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.accepted_at is None and self.status not in TAKEN_NOT:
            self.accepted_at = timezone.now()
            fields = kwargs.get("update_fields")
            if fields is not None:
                kwargs["update_fields"] = [*fields, "accepted_at"]
        super().save(*args, **kwargs)

    @property
    def item_count(self) -> int:
        return sum(item.quantity for item in self.items.all())


class OrderItem(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items")
    name = models.CharField(max_length=200)
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.name}"

    @property
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity


class OrderEventKind(models.TextChoices):
    PLACED = "order.placed", "Order placed"
    STATUS_CHANGED = "order.status_changed", "Status changed"
    CREATION_FAILED = "order.creation_failed", "Creation failed"
    UPDATE_FAILED = "order.update_failed", "Update failed"
    PAYMENT_ISSUE = "order.payment_issue", "Payment issue"


class OrderEvent(models.Model):
    """Append-only history of what happened to orders, including orders that never came to be."""

    kind = models.CharField(max_length=32, choices=OrderEventKind.choices)
    venue = models.ForeignKey(
        Venue, null=True, blank=True, on_delete=models.SET_NULL, related_name="order_events"
    )
    order = models.ForeignKey(
        Order, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # For the events told to the venue's room: their number in the room's sequence, and the
    # frame's event and data as they were sent, so a reconnecting client gets them again.
    seq = models.PositiveBigIntegerField(null=True, blank=True, editable=False)
    room_event = models.CharField(max_length=32, blank=True, editable=False)
    room_data = models.JSONField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["kind", "created_at"], name="orderevent_kind_created_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["venue", "seq"],
                condition=models.Q(seq__isnull=False),
                name="orderevent_venue_seq",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} @ {self.created_at:%Y-%m-%d %H:%M}"


# The models of the anomaly detection (orders.anomaly), re-exported for the app registry.
from orders.models.activity import VenueActivity as VenueActivity  # noqa: E402
from orders.models.hours import OpeningException as OpeningException  # noqa: E402
from orders.models.hours import OpeningHours as OpeningHours  # noqa: E402
from orders.models.hours import Weekday as Weekday  # noqa: E402

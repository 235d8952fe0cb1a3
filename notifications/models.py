from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from inkwave.logcontext import current_request_id
from notifications.slack import webhook_url_problem


class NotificationKind(models.TextChoices):
    """Every kind of event that can reach Slack; routes map each to destinations."""

    WEBSOCKET_ALERT = "websocket_alert", "WebSocket alert"
    SYSTEM_ALERT = "system_alert", "System alert"
    ORDER_PLACED = "order_placed", "New order"
    ORDER_STATUS_CHANGED = "order_status_changed", "Order status changed"
    ORDER_FAILED = "order_failed", "Failed order creation"
    PAYMENT_ISSUE = "payment_issue", "Payment issue"
    HEALTH_UPDATE = "health_update", "Health update"
    DAILY_SUMMARY = "daily_summary", "Daily summary"
    WEEKLY_REPORT = "weekly_report", "Weekly report"
    DEPLOYMENT = "deployment", "Deployment"
    VENUE_SIGNUP = "venue_signup", "New venue sign-up"
    MESSAGE = "message", "Message"
    TEST = "test", "Test message"


def validate_webhook_url(value: str) -> None:
    problem = webhook_url_problem(value, api_url=settings.SLACK_API_URL)
    if problem:
        raise ValidationError(f"{problem[0].upper()}{problem[1:]}.", code="webhook_url")


class NotificationPriority(models.IntegerChoices):
    """Per destination, urgent rows go out before the rest; each class oldest first."""

    URGENT = 0, "Urgent (alerts, incidents, deployments, health)"
    NORMAL = 1, "Normal (orders, reports, sign-ups)"


# What an operator must see within seconds, however much order chatter is queued.
URGENT_KINDS = frozenset(
    {
        NotificationKind.WEBSOCKET_ALERT,
        NotificationKind.SYSTEM_ALERT,
        NotificationKind.DEPLOYMENT,
        NotificationKind.HEALTH_UPDATE,
        NotificationKind.MESSAGE,
        NotificationKind.TEST,
    }
)


def priority_for(kind: str) -> NotificationPriority:
    return NotificationPriority.URGENT if kind in URGENT_KINDS else NotificationPriority.NORMAL


class DestinationStatus(models.TextChoices):
    OK = "ok", "OK"
    ERROR = "error", "Permanent error: needs attention"


class Destination(models.Model):
    """A named place in Slack: a channel for the bot token, or an incoming webhook."""

    name = models.SlugField(max_length=50, unique=True, help_text="e.g. operations, orders")
    slack_channel_id = models.CharField(
        max_length=32, blank=True, help_text="Channel id (C…) for the bot token."
    )
    webhook_url = models.URLField(
        max_length=500,
        blank=True,
        validators=[validate_webhook_url],
        help_text="Incoming webhook (https://hooks.slack.com/services/…); used when no bot "
        "token is set.",
    )
    enabled = models.BooleanField(default=True)
    status = models.CharField(
        max_length=8, choices=DestinationStatus.choices, default=DestinationStatus.OK
    )
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    # When a drain task is already scheduled for this destination (deduplicates wake-ups).
    wake_at = models.DateTimeField(null=True, blank=True, editable=False)
    # A drain task has been queued and has not started yet: new rows need no other task.
    drain_requested = models.BooleanField(default=False, editable=False)
    # Slack has not taken a message here since (a 5xx, timeout, 429 or no answer): set by the
    # first transient failure after a success, cleared by the next message that goes through.
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    # The last period Slack failed here (merged with the one before while that one's summary
    # is still due): read by the alert rule and by the summary sent once it is over.
    failed_from = models.DateTimeField(null=True, blank=True, editable=False)
    failed_until = models.DateTimeField(null=True, blank=True, editable=False)
    # It failed for SLACK_OUTAGE_SECONDS or more: once the backlog from then is delivered, a
    # summary goes to the channel; claimed by a conditional UPDATE, so it is sent once.
    outage_summary_due = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def rate_key(self) -> str:
        """What Slack rate-limits: the channel, or the webhook (which posts to one channel)."""
        if self.slack_channel_id:
            return f"channel:{self.slack_channel_id}"
        digest = hashlib.sha256(self.webhook_url.encode()).hexdigest()[:16]
        return f"webhook:{digest}"


class Route(models.Model):
    kind = models.CharField(max_length=32, choices=NotificationKind.choices)
    destination = models.ForeignKey(Destination, on_delete=models.CASCADE, related_name="routes")

    class Meta:
        ordering = ["kind", "destination__name"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "destination"], name="route_kind_destination")
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} → {self.destination}"


class NotificationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped (not configured or disabled)"


OPEN_STATUSES = (NotificationStatus.PENDING, NotificationStatus.SENDING)


class Notification(models.Model):
    """The outbox: a notification is a row before it is sent, and never silently dropped."""

    kind = models.CharField(max_length=32, choices=NotificationKind.choices)
    destination = models.ForeignKey(
        Destination, on_delete=models.PROTECT, related_name="notifications"
    )
    priority = models.PositiveSmallIntegerField(
        choices=NotificationPriority.choices, default=NotificationPriority.NORMAL
    )
    # Rows counted together against a rate (e.g. one venue's payment issues); past it, events
    # are counted into one pending summary row instead of a row each.
    coalesce_key = models.CharField(max_length=100, blank=True, editable=False)
    status = models.CharField(
        max_length=8, choices=NotificationStatus.choices, default=NotificationStatus.PENDING
    )
    text = models.TextField(
        help_text="Plain-text fallback, shown in notifications and by webhooks."
    )
    blocks = models.JSONField(default=list, blank=True)
    context = models.JSONField(default=dict, blank=True)
    thread_parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="replies",
        help_text="Posted as a reply in this notification's Slack thread.",
    )
    update_target = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="updates",
        help_text="Replaces that notification's Slack message in place.",
    )
    broadcast = models.BooleanField(
        default=False, help_text="A thread reply that is also shown in the channel."
    )
    attempts = models.PositiveIntegerField(default=0)
    # Bumped whenever a pending row's content is rewritten (an alert joining a group), so a
    # drain that read the old content cannot claim it and send the stale text.
    revision = models.PositiveIntegerField(default=0, editable=False)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    slack_ts = models.CharField(max_length=32, blank=True)
    slack_channel = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # Given up on after this (NOTIFICATION_MAX_AGE_SECONDS after it was queued, or after an
    # operator queued it again); empty on rows from before it existed: counted from creation.
    expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The request that caused it (its X-Request-ID), bound to its delivery's log lines: one
    # order is followed from the API call to the Slack post (inkwave/logcontext.py).
    request_id = models.CharField(
        max_length=128, blank=True, editable=False, default=current_request_id
    )

    class Meta:
        ordering = ["-pk"]
        indexes = [
            models.Index(
                fields=["destination", "priority", "id"],
                name="notification_open_idx",
                condition=models.Q(status__in=["pending", "sending"]),
            ),
            models.Index(
                fields=["coalesce_key", "destination", "created_at"],
                name="notification_coalesce_idx",
                condition=~models.Q(coalesce_key=""),
            ),
            # The pending summary of a key, found without reading the key's sent history.
            models.Index(
                fields=["coalesce_key", "destination"],
                name="notification_summary_idx",
                condition=models.Q(status="pending") & ~models.Q(coalesce_key=""),
            ),
            models.Index(fields=["status", "next_attempt_at"], name="notification_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} → {self.destination.name} ({self.status})"


class AttemptOutcome(models.TextChoices):
    IN_PROGRESS = "in_progress", "In progress"
    SENT = "sent", "Sent"
    RETRY = "retry", "Failed, will retry"
    FAILED = "failed", "Failed permanently"
    LOST = "lost", "Worker lost mid-send"


class DeliveryAttempt(models.Model):
    """One try at sending one notification; written before the request, completed after."""

    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="delivery_attempts"
    )
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    outcome = models.CharField(
        max_length=16, choices=AttemptOutcome.choices, default=AttemptOutcome.IN_PROGRESS
    )
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["notification", "number"]
        # What the retention prune reads: attempts older than its cutoff.
        indexes = [models.Index(fields=["started_at"], name="deliveryattempt_started_idx")]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.notification_id}: {self.outcome}"


class RateLimitSlot(models.Model):
    """The next moment a message may go to one Slack channel, shared by every worker."""

    key = models.CharField(max_length=100, unique=True)
    next_free_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.key


class ReportRun(models.Model):
    """A periodic message that has been claimed: one row per report and period, ever.

    Two beats, or a retried task, insert the same key; the unique index lets one win.
    """

    key = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key


class SlackLinkSource(models.TextChoices):
    ADMIN = "admin", "Set in the admin"
    EMAIL = "email", "Matched by confirmed e-mail"


class SlackUser(models.Model):
    """Who a Slack member is here: the Django user whose permissions their clicks and
    commands carry. Set in the admin, or matched once by the e-mail Slack has confirmed
    (notifications.slack_users); nobody acts from Slack without one."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="slack_user"
    )
    slack_user_id = models.CharField(
        "Slack member id",
        max_length=32,
        unique=True,
        validators=[
            RegexValidator(
                r"^[UW][A-Z0-9]{2,31}$", "A Slack member id: U or W, then capitals and digits."
            )
        ],
        help_text="In Slack: the person's profile → ⋮ → Copy member ID (e.g. U024BE7LH).",
    )
    linked_via = models.CharField(
        max_length=8,
        choices=SlackLinkSource.choices,
        default=SlackLinkSource.ADMIN,
        editable=False,
    )
    linked_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "Slack user"

    def __str__(self) -> str:
        return f"{self.user} = {self.slack_user_id}"


class SlackRequestSeen(models.Model):
    """Signatures of Slack requests already taken: a captured request sent again within its
    five minutes is refused (its signature is still valid then). Rows older than that are
    pruned as new ones arrive."""

    signature = models.CharField(max_length=80, unique=True)
    received_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.received_at:%Y-%m-%d %H:%M:%S}"

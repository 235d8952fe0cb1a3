from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from notifications.delivery import skip_reason
from notifications.models import (
    DeliveryAttempt,
    Destination,
    DestinationStatus,
    Notification,
    NotificationStatus,
    Route,
    SlackUser,
)
from notifications.outbox import requeue
from notifications.slack import mask_webhook_url
from notifications.testing import send_test_messages


class RouteInline(admin.TabularInline):
    model = Route
    extra = 1


class DestinationForm(forms.ModelForm):
    """The webhook URL is a secret: the form never sends it back to the browser.

    It shows a masked hint; left blank, the stored URL is kept; a new URL replaces it; the
    checkbox removes it.
    """

    webhook_url = forms.CharField(
        required=False,
        max_length=500,
        strip=True,
        widget=forms.TextInput(attrs={"autocomplete": "off", "size": 60}),
    )
    remove_webhook_url = forms.BooleanField(required=False, label="Remove the webhook")

    class Meta:
        model = Destination
        fields = ["name", "slack_channel_id", "webhook_url", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["webhook_url"] = ""
        current = self.instance.webhook_url
        field = self.fields["webhook_url"]
        field.help_text = str(Destination._meta.get_field("webhook_url").help_text)
        if current:
            masked = mask_webhook_url(current)
            field.widget.attrs["placeholder"] = masked
            field.help_text = (
                f"Set ({masked}). Leave blank to keep it; paste a new URL to replace it."
            )

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        typed = cleaned.get("webhook_url", "")
        if cleaned.get("remove_webhook_url"):
            if typed:
                self.add_error("remove_webhook_url", "Remove the webhook or give a new one.")
            cleaned["webhook_url"] = ""
        elif typed:
            # As the admin's URL fields do: a URL pasted without its scheme means https.
            cleaned["webhook_url"] = typed if "://" in typed else f"https://{typed}"
        else:
            cleaned["webhook_url"] = self.instance.webhook_url
        return cleaned


@admin.register(Destination)
class DestinationAdmin(admin.ModelAdmin):
    form = DestinationForm
    list_display = ["name", "slack_channel_id", "has_webhook", "enabled", "delivery", "last_error"]
    list_filter = ["enabled", "status"]
    search_fields = ["name", "slack_channel_id"]
    readonly_fields = ["delivery", "last_error", "last_error_at", "created_at"]
    inlines = [RouteInline]
    actions = ["send_test", "clear_error"]

    def get_fields(self, request: HttpRequest, obj: Destination | None = None) -> Any:
        editable = obj is None or self.has_change_permission(request, obj)
        if editable:
            webhook = ["webhook_url", "remove_webhook_url"] if obj and obj.webhook_url else []
            webhook = webhook or ["webhook_url"]
        else:
            webhook = ["webhook"]  # a view-only user reads the mask, never the URL
        return [
            "name",
            "slack_channel_id",
            *webhook,
            "enabled",
            *self.readonly_fields,
        ]

    @admin.display(description="Delivery", ordering="status")
    def delivery(self, obj: Destination) -> str:
        """What happens to a message sent here now, not only whether Slack refused one."""
        if obj.status == DestinationStatus.ERROR:
            return "Slack refused it for good: fix it, then mark it as fixed"
        reason = skip_reason(obj)
        if reason:
            return f"Messages are recorded, not sent: {reason}"
        if obj.failing_since is not None:
            since = obj.failing_since.strftime("%Y-%m-%d %H:%M:%S UTC")
            return f"Slack failing since {since}: messages are kept and sent once it answers"
        via = "bot token" if settings.SLACK_BOT_TOKEN and obj.slack_channel_id else "webhook"
        return f"OK: sent by {via}"

    @admin.display(description="Webhook URL")
    def webhook(self, obj: Destination) -> str:
        return mask_webhook_url(obj.webhook_url) or "-"

    @admin.display(boolean=True, description="Webhook")
    def has_webhook(self, obj: Destination) -> bool:
        return bool(obj.webhook_url)

    @admin.action(description="Send a test message", permissions=["change"])
    def send_test(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        for destination, result in send_test_messages(list(queryset)):
            level = messages.SUCCESS if result.ok else messages.ERROR
            self.message_user(request, f"{destination.name}: {result.detail}", level)

    @admin.action(description="Mark as fixed (clear the error)", permissions=["change"])
    def clear_error(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        count = queryset.update(status=DestinationStatus.OK, last_error="")
        self.message_user(request, f"Cleared {count} destination(s).", messages.SUCCESS)


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    list_display = ["kind", "destination"]
    list_filter = ["kind", "destination"]
    list_select_related = ["destination"]


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ("number", "started_at", "duration_ms", "outcome", "http_status", "error")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    # One line per notification: what it says, where it went, how it stands, what went wrong.
    list_display = ["created", "kind", "destination", "message", "state", "error"]
    list_filter = ["status", "kind", "destination"]
    list_select_related = ["destination"]
    search_fields = ["text", "last_error", "=request_id"]
    date_hierarchy = "created_at"
    raw_id_fields = ["thread_parent", "update_target"]
    readonly_fields = [
        "kind",
        "destination",
        "status",
        "text",
        "blocks",
        "context",
        "thread_parent",
        "update_target",
        "attempts",
        "next_attempt_at",
        "claimed_at",
        "last_error",
        "slack_ts",
        "slack_channel",
        "created_at",
        "sent_at",
        "request_id",
    ]
    inlines = [DeliveryAttemptInline]
    actions = ["retry"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Created", ordering="created_at")
    def created(self, obj: Notification) -> str:
        return f"{timezone.localtime(obj.created_at):%b %d, %H:%M:%S}"

    @admin.display(description="Message")
    def message(self, obj: Notification) -> str:
        first = obj.text.split("\n", 1)[0]
        return format_html('<span class="cut" title="{}">{}</span>', obj.text, first)

    @admin.display(description="State", ordering="status")
    def state(self, obj: Notification) -> str:
        tries = f"{obj.attempts} attempt{'' if obj.attempts == 1 else 's'}"
        if obj.status == NotificationStatus.SENT and obj.sent_at:
            return f"sent {timezone.localtime(obj.sent_at):%H:%M:%S}"
        if obj.status == NotificationStatus.FAILED:
            return f"failed after {tries}"
        if obj.status == NotificationStatus.SKIPPED:
            return "skipped"
        if obj.status == NotificationStatus.PENDING and obj.attempts:
            return f"retrying {timezone.localtime(obj.next_attempt_at):%H:%M:%S} ({tries})"
        return obj.get_status_display().lower()

    @admin.display(description="Error")
    def error(self, obj: Notification) -> str:
        if not obj.last_error:
            return ""
        return format_html('<span class="cut" title="{}">{}</span>', obj.last_error, obj.last_error)

    @admin.action(description="Send again (failed or skipped ones)", permissions=["change"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        count = requeue(queryset)
        self.message_user(request, f"Queued {count} notification(s) again.", messages.SUCCESS)


@admin.register(SlackUser)
class SlackUserAdmin(admin.ModelAdmin):
    """Who may act from Slack: a click or /inkwave command carries the linked user's
    permissions (acknowledge and resolve: change incident; silence: add silence)."""

    list_display = ["user", "slack_user_id", "linked_via", "linked_at"]
    list_filter = ["linked_via"]
    readonly_fields = ["linked_via", "linked_at"]
    list_select_related = ["user"]
    search_fields = ["user__username", "user__email", "slack_user_id"]
    raw_id_fields = ["user"]

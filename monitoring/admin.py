from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from monitoring.models import MetricTotals, WebSocketSample, Worker


class ReadOnlyAdmin(admin.ModelAdmin):
    """Recorded measurements are facts: operators read them, nobody edits them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    list_display = ["name", "role", "hostname", "pid", "started_at", "last_seen_at", "stopped_at"]
    list_filter = ["role", "hostname"]
    search_fields = ["name", "hostname"]
    raw_id_fields = ["last_sample"]


@admin.register(WebSocketSample)
class WebSocketSampleAdmin(ReadOnlyAdmin):
    list_display = [
        "recorded_at",
        "worker",
        "active_connections",
        "active_rooms",
        "connections",
        "disconnections",
        "messages_received",
        "messages_sent",
        "errors",
        "average_latency",
        "memory_percent",
    ]
    list_filter = ["worker__role", "worker__hostname"]
    list_select_related = ["worker"]
    raw_id_fields = ["worker"]
    date_hierarchy = "recorded_at"

    @admin.display(description="Avg delivery (ms)")
    def average_latency(self, obj: WebSocketSample) -> str:
        if not obj.delivery_count:
            return "-"
        return f"{obj.delivery_sum_ms / obj.delivery_count:.1f}"


@admin.register(MetricTotals)
class MetricTotalsAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at",
        "connections",
        "disconnections",
        "rejected_connections",
        "messages_received",
        "messages_sent",
        "errors",
    ]

"""The monitor's records: processes, sample rows, running totals (read-only)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone

from monitoring.models import (
    MetricTotals,
    WebSocketSample,
    Worker,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Recorded measurements are facts: operators read them, nobody edits them (retention
    prunes them)."""

    actions = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "role",
        "hostname",
        "pid",
        "started_at",
        "last_seen_at",
        "stopped_at",
        "declared_dead_at",
        "connections_lost",
    ]
    list_filter = ["role", "hostname"]
    search_fields = ["name", "hostname"]
    raw_id_fields = ["last_sample"]


@admin.register(WebSocketSample)
class WebSocketSampleAdmin(ReadOnlyAdmin):
    list_display = [
        "recorded",
        "worker_name",
        "active",
        "opened_closed",
        "frames",
        "errors_display",
        "average_latency",
        "memory",
    ]
    list_filter = ["worker__role", "worker__hostname"]
    list_select_related = ["worker"]
    raw_id_fields = ["worker"]
    date_hierarchy = "recorded_at"

    @admin.display(description="Recorded", ordering="recorded_at")
    def recorded(self, obj: WebSocketSample) -> str:
        # Samples are seconds apart: the seconds matter, the year does not.
        local = timezone.localtime(obj.recorded_at)
        return f"{local:%b %d, %H:%M:%S}"

    @admin.display(description="Worker", ordering="worker__name")
    def worker_name(self, obj: WebSocketSample) -> str:
        # The host's first label and the pid: enough to tell processes apart on a screen.
        return f"{obj.worker.hostname.split('.')[0]}:{obj.worker.pid}"

    @admin.display(description="Live (rooms)")
    def active(self, obj: WebSocketSample) -> str:
        return f"{obj.active_connections:,} ({obj.active_rooms:,})"

    @admin.display(description="Opened / closed")
    def opened_closed(self, obj: WebSocketSample) -> str:
        return f"+{obj.connections:,} / -{obj.disconnections:,}"

    @admin.display(description="Frames in / out")
    def frames(self, obj: WebSocketSample) -> str:
        return f"{obj.messages_received:,} / {obj.messages_sent:,}"

    @admin.display(description="Errors: ours / clients")
    def errors_display(self, obj: WebSocketSample) -> str:
        return f"{obj.errors:,} / {obj.client_errors:,}"

    @admin.display(description="Avg delivery")
    def average_latency(self, obj: WebSocketSample) -> str:
        if not obj.delivery_count:
            return "-"
        return f"{obj.delivery_sum_ms / obj.delivery_count:,.1f} ms"

    @admin.display(description="Memory", ordering="memory_percent")
    def memory(self, obj: WebSocketSample) -> str:
        return f"{obj.memory_rss_bytes / 2**20:,.0f} MiB ({obj.memory_percent:.1f}%)"


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

"""HTTP requests' records: per-route samples, slow statements (grouped) and slow requests."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from monitoring.admin.samples import ReadOnlyAdmin
from monitoring.models import RequestSample, SlowQuery, SlowRequest, SlowStatement


def milliseconds(value: float) -> str:
    return f"{value:.0f} ms"


@admin.register(RequestSample)
class RequestSampleAdmin(ReadOnlyAdmin):
    list_display = [
        "recorded_at",
        "route",
        "requests",
        "client_errors",
        "server_errors",
        "average_ms",
        "queries",
        "worker",
    ]
    list_filter = ["worker__role", "worker__hostname"]
    list_select_related = ["worker"]
    search_fields = ["route"]
    date_hierarchy = "recorded_at"

    @admin.display(description="average")
    def average_ms(self, sample: RequestSample) -> str:
        return milliseconds(sample.duration_sum_ms / sample.requests) if sample.requests else "-"


@admin.register(SlowQuery)
class SlowQueryAdmin(ReadOnlyAdmin):
    list_display = ["recorded_at", "duration_display", "route", "request_id", "worker"]
    list_select_related = ["statement"]
    search_fields = ["route", "request_id", "statement__statement"]
    raw_id_fields = ["statement"]
    date_hierarchy = "recorded_at"

    @admin.display(description="duration", ordering="duration_ms")
    def duration_display(self, slow: SlowQuery) -> str:
        return milliseconds(slow.duration_ms)


@admin.register(SlowStatement)
class SlowStatementAdmin(ReadOnlyAdmin):
    """One row per normalised statement: how often it was slow, how slow, where last."""

    list_display = [
        "short_statement",
        "runs",
        "average",
        "max_display",
        "last_route",
        "last_seen_at",
    ]
    ordering = ["-last_seen_at"]
    search_fields = ["statement", "last_route"]
    fields = readonly_fields = (
        "statement",
        "occurrences",
        "total_ms",
        "max_ms",
        "first_seen_at",
        "last_seen_at",
        "last_route",
    )

    @admin.display(description="statement")
    def short_statement(self, statement: SlowStatement) -> str:
        return statement.statement[:120]

    @admin.display(description="slow runs", ordering="occurrences")
    def runs(self, statement: SlowStatement) -> str:
        url = reverse("admin:monitoring_slowquery_changelist")
        return format_html(
            '<a href="{}?statement__id__exact={}">{}</a>', url, statement.pk, statement.occurrences
        )

    @admin.display(description="average", ordering="total_ms")
    def average(self, statement: SlowStatement) -> str:
        return milliseconds(statement.average_ms)

    @admin.display(description="slowest", ordering="max_ms")
    def max_display(self, statement: SlowStatement) -> str:
        return milliseconds(statement.max_ms)


@admin.register(SlowRequest)
class SlowRequestAdmin(ReadOnlyAdmin):
    list_display = [
        "recorded_at",
        "method",
        "route",
        "status",
        "duration_display",
        "queries",
        "request_id",
    ]
    list_filter = ["method", "status"]
    search_fields = ["route", "request_id"]
    date_hierarchy = "recorded_at"

    @admin.display(description="duration", ordering="duration_ms")
    def duration_display(self, slow: SlowRequest) -> str:
        return milliseconds(slow.duration_ms)

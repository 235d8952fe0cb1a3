"""Incidents: the list, the page with its timeline, acknowledge and resolve."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import timezone

from inkwave.lib.formats import duration
from monitoring.alerting import engine, rules
from monitoring.alerting.metrics import format_value
from monitoring.alerting.pictures import incident_chart
from monitoring.models import (
    Incident,
    IncidentEvent,
    IncidentStatus,
)


class IncidentEventInline(admin.TabularInline):
    model = IncidentEvent
    extra = 0
    can_delete = False
    fields = ("at", "kind", "who", "message", "delivery")
    readonly_fields = fields
    verbose_name = "timeline entry"
    verbose_name_plural = "Timeline"

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[IncidentEvent]:
        return super().get_queryset(request).select_related("actor", "notification__destination")

    @admin.display(description="Who")
    def who(self, obj: IncidentEvent) -> str:
        return obj.who

    @admin.display(description="Slack delivery")
    def delivery(self, obj: IncidentEvent) -> str:
        note = obj.notification
        if note is None:
            return "-"
        error = f": {note.last_error}" if note.last_error else ""
        return f"#{note.pk} to {note.destination.name}: {note.status}{error}"


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    change_form_template = "admin/monitoring/incident/change_form.html"
    # Fits a 1,400 px screen: one column per question an operator asks of the list.
    list_display = ["title", "severity", "state", "opened_at", "lasted", "peak"]
    list_filter = [
        "status",
        "severity",
        "flapping",
        ("acknowledged_at", admin.EmptyFieldListFilter),
    ]
    list_select_related = ["rule", "acknowledged_by"]
    search_fields = ["title", "rule__name", "postmortem"]
    date_hierarchy = "opened_at"
    actions = ["acknowledge_selected", "resolve_selected"]
    inlines = [IncidentEventInline]
    fieldsets = [
        (None, {"fields": ["title", ("rule", "where"), "condition", ("severity", "status")]}),
        (
            "When",
            {"fields": [("opened_at", "lasted"), ("last_seen_at", "occurrences"), "resolved_at"]},
        ),
        ("Values", {"fields": [("first", "peak", "last")]}),
        (
            "Who",
            {"fields": [("acknowledged_at", "acknowledged_by"), "escalated_at", "resolved_by"]},
        ),
        ("Post-mortem", {"fields": ["postmortem"]}),
        (
            "Public status page",
            {
                "fields": ["public_component", "public_title", "public_summary"],
                "description": "What visitors of /status/ read while it fires. Left empty, "
                "they read a plain sentence for its component.",
            },
        ),
    ]
    readonly_fields = [
        "title",
        "rule",
        "where",
        "condition",
        "severity",
        "status",
        "opened_at",
        "lasted",
        "last_seen_at",
        "resolved_at",
        "occurrences",
        "first",
        "peak",
        "last",
        "acknowledged_at",
        "acknowledged_by",
        "resolved_by",
        "escalated_at",
        "public_component",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the record of what happened is kept (retention is the database's job)

    @admin.display(description="Shown as")
    def public_component(self, obj: Incident) -> str:
        if not obj.rule.public_component:
            return "not shown (its rule affects no public component)"
        return str(obj.rule.get_public_component_display())

    @admin.display(description="Scope")
    def where(self, obj: Incident) -> str:
        return f"venue {obj.scope}" if obj.scope else "whole deployment"

    @admin.display(description="State", ordering="status")
    def state(self, obj: Incident) -> str:
        if obj.status == IncidentStatus.RESOLVED:
            return "resolved"
        parts = ["firing"]
        if obj.acknowledged_at:
            parts.append(f"acked by {obj.acknowledged_by or 'someone'}")
        if obj.flapping:
            parts.append("flapping")
        return ", ".join(parts)

    @admin.display(description="Lasted")
    def lasted(self, obj: Incident) -> str:
        end = obj.resolved_at or timezone.now()
        text = duration((end - obj.opened_at).total_seconds())
        return text if obj.resolved_at else f"{text} so far"

    @admin.display(description="Condition")
    def condition(self, obj: Incident) -> str:
        return rules.condition_text(obj.rule)

    @admin.display(description="First value")
    def first(self, obj: Incident) -> str:
        return format_value(obj.rule.metric, obj.first_value)

    @admin.display(description="Peak", ordering="peak_value")
    def peak(self, obj: Incident) -> str:
        return format_value(obj.rule.metric, obj.peak_value)

    @admin.display(description="Last value")
    def last(self, obj: Incident) -> str:
        return format_value(obj.rule.metric, obj.last_value)

    @admin.action(description="Acknowledge selected incidents", permissions=["change"])
    def acknowledge_selected(self, request: HttpRequest, queryset: QuerySet[Incident]) -> None:
        done = sum(engine.acknowledge(i, request.user) for i in queryset.select_related("rule"))
        self.message_user(request, f"Acknowledged {done} incident(s).", messages.SUCCESS)

    @admin.action(description="Resolve selected incidents", permissions=["change"])
    def resolve_selected(self, request: HttpRequest, queryset: QuerySet[Incident]) -> None:
        done = sum(engine.resolve_by_hand(i, request.user) for i in queryset)
        self.message_user(request, f"Resolved {done} incident(s).", messages.SUCCESS)

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> HttpResponse:
        incident = kwargs.get("obj")
        if isinstance(incident, Incident):
            context["chart"] = incident_chart(incident)
        return super().render_change_form(request, context, *args, **kwargs)

    def response_change(self, request: HttpRequest, obj: Incident) -> HttpResponse:
        if "_acknowledge" in request.POST:
            if engine.acknowledge(obj, request.user):
                self.message_user(request, "Acknowledged.", messages.SUCCESS)
            else:
                self.message_user(
                    request, "It was already acknowledged or resolved.", messages.WARNING
                )
            return HttpResponseRedirect(request.path)
        if "_resolve" in request.POST:
            if engine.resolve_by_hand(obj, request.user):
                self.message_user(request, "Resolved.", messages.SUCCESS)
            else:
                self.message_user(request, "It was already resolved.", messages.WARNING)
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

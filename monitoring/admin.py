from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from inkwave.lib.formats import duration
from monitoring.alerting import engine, rules
from monitoring.alerting.defaults import inhibit_dependents
from monitoring.alerting.metrics import REGISTRY, format_value, metric_choices
from monitoring.alerting.preview import preview
from monitoring.models import (
    AlertRule,
    Incident,
    IncidentEvent,
    IncidentStatus,
    Inhibition,
    MetricTotals,
    OnCallShift,
    Silence,
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


# --- Alerting ---------------------------------------------------------------------------


class AlertRuleForm(forms.ModelForm):
    metric = forms.ChoiceField(choices=metric_choices)
    runbook_url = forms.URLField(required=False, assume_scheme="https")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "metric" in cleaned:  # the model checks the rest of the rule
            found = rules.problems(cleaned["metric"], cleaned.get("threshold"))
            for field, problem in found.items():
                self.add_error(field, problem)
        return cleaned

    class Meta:
        model = AlertRule
        fields = [
            "name",
            "description",
            "enabled",
            "severity",
            "runbook_url",
            "metric",
            "comparison",
            "threshold",
            "window_seconds",
            "pending_seconds",
            "clear_seconds",
            "repeat_interval_seconds",
            "destinations",
            "escalation_delay_seconds",
            "escalation_destination",
            "group_by",
            "flap_threshold",
            "settle_seconds",
        ]


class HeldBackByInline(admin.TabularInline):
    model = Inhibition
    fk_name = "target"
    fields = ["source", "same_scope"]
    autocomplete_fields = ["source"]
    extra = 0
    verbose_name = "cause that holds this rule back"
    verbose_name_plural = "Held back (inhibited) while these fire"


@admin.register(Inhibition)
class InhibitionAdmin(admin.ModelAdmin):
    list_display = ["source", "target", "same_scope", "created_at"]
    list_select_related = ["source", "target"]
    list_filter = ["same_scope"]
    search_fields = ["source__name", "target__name"]
    autocomplete_fields = ["source", "target"]


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    form = AlertRuleForm
    change_form_template = "admin/monitoring/alertrule/change_form.html"
    list_display = ["name", "condition", "window_seconds", "severity", "enabled", "firing"]
    list_filter = ["enabled", "severity", "metric"]
    list_editable = ["enabled"]
    search_fields = ["name", "description"]
    filter_horizontal = ["destinations"]
    fieldsets = [
        (None, {"fields": ["name", "description", "enabled", "severity", "runbook_url"]}),
        ("Condition", {"fields": ["metric", "comparison", "threshold", "window_seconds"]}),
        ("Timing", {"fields": ["pending_seconds", "clear_seconds", "repeat_interval_seconds"]}),
        (
            "Where it goes",
            {
                "fields": [
                    "destinations",
                    "escalation_delay_seconds",
                    "escalation_destination",
                ]
            },
        ),
        ("Noise", {"fields": ["group_by", "flap_threshold", "settle_seconds"]}),
    ]
    inlines = [HeldBackByInline]

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if not change:
            # A new rule is held back while what its metric needs is down, as the shipped
            # rules are; the operator sees (and may remove) these on the rule's page.
            metric = REGISTRY.get(form.instance.metric)
            needs = metric.depends_on if metric else ()
            inhibit_dependents(AlertRule, Inhibition, form.instance, needs)

    @admin.display(description="Condition")
    def condition(self, obj: AlertRule) -> str:
        return rules.condition_text(obj)

    def get_urls(self) -> list[Any]:
        preview_view = self.admin_site.admin_view(self.preview_view)
        return [
            path("add/preview/", preview_view, name="monitoring_alertrule_preview_add"),
            path(
                "<path:object_id>/change/preview/",
                preview_view,
                name="monitoring_alertrule_preview",
            ),
            *super().get_urls(),
        ]

    def preview_view(self, request: HttpRequest, object_id: str | None = None) -> HttpResponse:
        """The change form's values, replayed over the last week of samples; nothing is saved."""
        instance = self.get_object(request, object_id) if object_id else None
        permitted = (
            self.has_change_permission(request, instance)
            if instance
            else self.has_add_permission(request)
        )
        if request.method != "POST" or not permitted:
            return HttpResponseRedirect("../")
        form = AlertRuleForm(request.POST, instance=instance)
        result = None
        if form.is_valid():
            result = preview(form.save(commit=False))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "What would this rule have done?",
            "form": form,
            "rule": form.instance,
            "condition": rules.condition_text(form.instance) if form.is_valid() else "",
            "result": result,
        }
        return TemplateResponse(request, "admin/monitoring/alertrule/preview.html", context)

    @admin.display(boolean=True, description="Firing")
    def firing(self, obj: AlertRule) -> bool:
        return obj.incidents.filter(status=IncidentStatus.FIRING).exists()


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
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the record of what happened is kept (retention is the database's job)

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


class SilenceForm(forms.ModelForm):
    class Meta:
        model = Silence
        fields = [
            "reason",
            "rule",
            "severity",
            "scope",
            "starts_at",
            "ends_at",
            "weekdays",
            "start_time",
            "end_time",
            "timezone",
        ]


@admin.register(Silence)
class SilenceAdmin(admin.ModelAdmin):
    form = SilenceForm
    change_form_template = "admin/monitoring/silence/change_form.html"
    list_display = [
        "reason",
        "rule",
        "severity",
        "scope",
        "window",
        "active",
        "created_by",
        "created_at",
    ]
    list_filter = ["severity"]
    list_select_related = ["rule", "created_by"]
    autocomplete_fields = ["rule"]
    actions = ["end_now"]

    @admin.display(boolean=True, description="On now")
    def active(self, obj: Silence) -> bool:
        return obj.active_at(timezone.now())

    @admin.action(description="End the selected silences now", permissions=["change"])
    def end_now(self, request: HttpRequest, queryset: QuerySet[Silence]) -> None:
        """Ends one-off silences that are on; the channel then hears what changed meanwhile.
        (Deleting a silence ends it without that summary.)"""
        now = timezone.now()
        ended = queryset.filter(weekdays="", starts_at__lte=now, ends_at__gt=now).update(
            ends_at=now
        )
        self.message_user(
            request, f"Ended {ended} silence(s); what changed meanwhile is posted at the next "
            "evaluation."
        )  # fmt: skip

    def get_urls(self) -> list[Any]:
        preview_view = self.admin_site.admin_view(self.preview_view)
        return [
            path("add/preview/", preview_view, name="monitoring_silence_preview_add"),
            path(
                "<path:object_id>/change/preview/",
                preview_view,
                name="monitoring_silence_preview",
            ),
            *super().get_urls(),
        ]

    def preview_view(self, request: HttpRequest, object_id: str | None = None) -> HttpResponse:
        """What the form's silence would hold back now: rules and open incidents."""
        instance = self.get_object(request, object_id) if object_id else None
        permitted = (
            self.has_change_permission(request, instance)
            if instance
            else self.has_add_permission(request)
        )
        if request.method != "POST" or not permitted:
            return HttpResponseRedirect("../")
        # The admin's own form class: its widgets (split date and time) read what was posted.
        form = self.get_form(request, instance, change=instance is not None)(
            request.POST, instance=instance
        )
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "What would this silence hold back?",
            "form": form,
        }
        if form.is_valid():
            silence = form.save(commit=False)
            now = timezone.now()
            rules = [r for r in AlertRule.objects.all() if silence.matches(r, "")]
            if silence.scope:
                rules = [r for r in AlertRule.objects.all() if silence.matches(r, silence.scope)]
            incidents = [
                i
                for i in Incident.objects.filter(status=IncidentStatus.FIRING)
                .select_related("rule")
                .order_by("-opened_at")
                if silence.matches(i.rule, i.scope)
            ]
            context.update(
                silence=silence,
                active_now=silence.active_at(now),
                rules=rules,
                incidents=incidents,
            )
        return TemplateResponse(request, "admin/monitoring/silence/preview.html", context)

    @admin.display(description="When")
    def window(self, obj: Silence) -> str:
        if obj.recurring:
            return (
                f"days {obj.weekdays}, {obj.start_time:%H:%M}-{obj.end_time:%H:%M} {obj.timezone}"
            )
        return f"{obj.starts_at:%Y-%m-%d %H:%M} → {obj.ends_at:%Y-%m-%d %H:%M}"

    def save_model(self, request: HttpRequest, obj: Silence, form: Any, change: bool) -> None:
        if not change and request.user.is_authenticated:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(OnCallShift)
class OnCallShiftAdmin(admin.ModelAdmin):
    list_display = ["person", "slack_user_id", "starts_at", "ends_at"]
    date_hierarchy = "starts_at"

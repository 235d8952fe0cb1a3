"""Alert rules, with their preview and what holds them back (inhibitions)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse

from monitoring.admin.preview import PreviewAdmin
from monitoring.alerting import rules
from monitoring.alerting.defaults import inhibit_dependents
from monitoring.alerting.metrics import REGISTRY, metric_choices
from monitoring.alerting.pictures import preview_chart
from monitoring.alerting.preview import preview
from monitoring.models import (
    AlertRule,
    IncidentStatus,
    Inhibition,
)


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
            "public_component",
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
class AlertRuleAdmin(PreviewAdmin):
    form = AlertRuleForm
    change_form_template = "admin/monitoring/alertrule/change_form.html"
    list_display = ["name", "condition", "window_seconds", "severity", "enabled", "firing"]
    list_filter = ["enabled", "severity", "public_component", "metric"]
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
        ("Public status page", {"fields": ["public_component"]}),
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

    def preview_view(self, request: HttpRequest, object_id: str | None = None) -> HttpResponse:
        """The change form's values, replayed over the last week of samples; nothing is saved."""
        instance, allowed = self.previewable(request, object_id)
        if not allowed:
            return HttpResponseRedirect("../")
        form = AlertRuleForm(request.POST, instance=instance)
        result = chart = None
        if form.is_valid():
            result = preview(form.save(commit=False))
            chart = preview_chart(form.instance, result)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "What would this rule have done?",
            "form": form,
            "rule": form.instance,
            "condition": rules.condition_text(form.instance) if form.is_valid() else "",
            "result": result,
            "chart": chart,
        }
        return TemplateResponse(request, "admin/monitoring/alertrule/preview.html", context)

    @admin.display(boolean=True, description="Firing")
    def firing(self, obj: AlertRule) -> bool:
        return obj.incidents.filter(status=IncidentStatus.FIRING).exists()

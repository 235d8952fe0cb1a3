"""Silences (with a preview of what they would hold back) and on-call shifts."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils import timezone

from monitoring.admin.preview import PreviewAdmin
from monitoring.models import (
    AlertRule,
    Incident,
    IncidentStatus,
    OnCallShift,
    Silence,
)


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
class SilenceAdmin(PreviewAdmin):
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

    def preview_view(self, request: HttpRequest, object_id: str | None = None) -> HttpResponse:
        """What the form's silence would hold back now: rules and open incidents."""
        instance, allowed = self.previewable(request, object_id)
        if not allowed:
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

"""The public status page's admin: scheduled maintenance, and the daily uptime rows."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from monitoring.models import ComponentDay, MaintenanceWindow, PublicComponent


class MaintenanceWindowForm(forms.ModelForm):
    components = forms.MultipleChoiceField(
        choices=PublicComponent.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="They show “maintenance” on the status page while it runs.",
    )

    class Meta:
        model = MaintenanceWindow
        fields = ["title", "components", "starts_at", "ends_at", "public_text"]


@admin.register(MaintenanceWindow)
class MaintenanceWindowAdmin(admin.ModelAdmin):
    form = MaintenanceWindowForm
    list_display = ["title", "affects", "starts_at", "ends_at"]
    search_fields = ["title", "public_text"]
    date_hierarchy = "starts_at"

    @admin.display(description="Affects")
    def affects(self, obj: MaintenanceWindow) -> str:
        return ", ".join(str(PublicComponent(c).label) for c in obj.components)


@admin.register(ComponentDay)
class ComponentDayAdmin(admin.ModelAdmin):
    """Read only: beat writes them from the incidents (monitoring.status.rollup)."""

    list_display = ["day", "component", "outage_seconds", "degraded_seconds", "maintenance_seconds"]
    list_filter = ["component"]
    date_hierarchy = "day"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

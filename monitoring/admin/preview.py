"""Change forms with a "Preview" button: the form's values go to `preview/`, which shows what
they would do and saves nothing (rules replay a week of samples; silences list what they
would hold back)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import path


class PreviewAdmin(admin.ModelAdmin):
    def preview_view(self, request: HttpRequest, object_id: str | None = None) -> HttpResponse:
        raise NotImplementedError

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.preview_view)
        name = f"{self.opts.app_label}_{self.opts.model_name}_preview"
        return [
            path("add/preview/", view, name=f"{name}_add"),
            path("<path:object_id>/change/preview/", view, name=name),
            *super().get_urls(),
        ]

    def previewable(self, request: HttpRequest, object_id: str | None) -> tuple[Any, bool]:
        """The object being edited (None when adding), and whether this request may preview
        it: a POST by someone who may save the form."""
        instance = self.get_object(request, object_id) if object_id else None
        permitted = (
            self.has_change_permission(request, instance)
            if instance
            else self.has_add_permission(request)
        )
        return instance, request.method == "POST" and permitted

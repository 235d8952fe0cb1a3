from __future__ import annotations

from django.urls import path

from monitoring.status import views

# The public status page: no login, nothing internal. django-stubs types path() for sync
# views only; async views are as valid at runtime.
urlpatterns = [
    path("status/", views.status_page, name="status"),  # type: ignore[arg-type]
    path("status.json", views.status_json, name="status-json"),  # type: ignore[arg-type]
    path("status/badge.svg", views.status_badge, name="status-badge"),  # type: ignore[arg-type]
    path(
        "status/<slug:component>/badge.svg",
        views.component_badge,  # type: ignore[arg-type]
        name="status-component-badge",
    ),
]

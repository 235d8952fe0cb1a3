from __future__ import annotations

from django.urls import path

from monitoring import views

app_name = "monitoring"

# django-stubs types path() for sync views only; async views are as valid at runtime.
urlpatterns = [
    path("websocket/stats", views.websocket_stats_view, name="websocket-stats"),  # type: ignore[arg-type]
    path("websocket/health", views.websocket_health_view, name="websocket-health"),  # type: ignore[arg-type]
    path("database/health", views.database_health_view, name="database-health"),  # type: ignore[arg-type]
]

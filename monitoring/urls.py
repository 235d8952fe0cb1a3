from __future__ import annotations

from django.urls import path

from monitoring import views
from monitoring.dashboard import views as dashboard_views

app_name = "monitoring"

# django-stubs types path() for sync views only; async views are as valid at runtime.
urlpatterns = [
    path("websocket/stats", views.websocket_stats_view, name="websocket-stats"),  # type: ignore[arg-type]
    path("websocket/health", views.websocket_health_view, name="websocket-health"),  # type: ignore[arg-type]
    path("dashboard/history", dashboard_views.history_view, name="dashboard-history"),  # type: ignore[arg-type]
    path("database/health", views.database_health_view, name="database-health"),  # type: ignore[arg-type]
]

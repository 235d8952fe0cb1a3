from __future__ import annotations

from django.urls import path

from monitoring import views

app_name = "monitoring"

urlpatterns = [
    path("websocket/stats", views.websocket_stats_view, name="websocket-stats"),
    path("websocket/health", views.websocket_health_view, name="websocket-health"),
    path("database/health", views.database_health_view, name="database-health"),
]

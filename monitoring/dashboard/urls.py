from __future__ import annotations

from django.urls import path

from monitoring.dashboard import views

app_name = "dashboard"

urlpatterns = [path("dashboard/", views.dashboard_page, name="page")]

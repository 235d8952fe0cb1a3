from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from inkwave import openapi
from monitoring import views as monitoring_views
from monitoring.slackapp import views as slack_views
from orders import api as orders_api

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("health", monitoring_views.health, name="health"),
    path("health/live", monitoring_views.liveness, name="health-live"),
    # Prometheus' scrape (monitoring API credentials); not under /api/: its answer is not JSON.
    # django-stubs types path() for sync views only (see monitoring/urls.py).
    path("metrics", monitoring_views.metrics, name="metrics"),  # type: ignore[arg-type]
    path("api/v1/openapi.json", openapi.openapi_json, name="openapi"),
    path("api/v1/monitoring/", include("monitoring.urls")),
    path("api/v1/orders", orders_api.orders_collection, name="orders"),
    path("api/v1/orders/<int:order_id>", orders_api.order_detail, name="order-detail"),
    path(
        "api/v1/venues/<int:venue_id>/orders",
        orders_api.venue_open_orders,
        name="venue-open-orders",
    ),
    # The public status page (/status/, /status.json, the badges).
    path("", include("monitoring.status.urls")),
    # The staff dashboard (a page for people, signed in through the admin).
    path("ops/", include("monitoring.dashboard.urls")),
    # Slack's request URLs (slack-app-manifest.yaml): signed by Slack, checked before parsing.
    path("slack/interactivity", slack_views.interactivity, name="slack-interactivity"),
    path("slack/commands", slack_views.command, name="slack-commands"),
    path("admin/", admin.site.urls),
]

# Under /api/, ApiErrorsMiddleware answers every error page (404, 500, ...) in JSON.
handler400 = "inkwave.api_errors.bad_request"

admin.site.site_header = "Inkwave Ops"
admin.site.site_title = "Inkwave Ops"
# The lists are wide tables of figures: they get the width, and the breadcrumbs lead home.
admin.site.enable_nav_sidebar = False

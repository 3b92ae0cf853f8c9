"""URL routes for the demo project."""

from __future__ import annotations

from django.urls import include, path

from channels_events.views import metrics_view

urlpatterns = [
    path("", include("demo.shop.urls")),
    # Prometheus scrapes each process here; the operations page is for staff.
    path("metrics/", metrics_view),
    path("ops/", include("channels_events.ops_urls")),
    path("accounts/", include("django.contrib.auth.urls")),
]

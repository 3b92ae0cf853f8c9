"""URL routes for the demo project."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("", include("demo.shop.urls")),
]

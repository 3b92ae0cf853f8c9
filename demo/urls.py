"""URL routes for the demo project."""

from __future__ import annotations

from django.urls import path

from demo import views

urlpatterns = [
    path("", views.index, name="index"),
]

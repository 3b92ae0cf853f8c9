"""URLs of the operations page: ``path("ops/", include("channels_events.ops_urls"))``.

Nothing is served unless a project includes them; both views answer staff only.
"""

from __future__ import annotations

from django.urls import path

from .views import ops_page, ops_watch

app_name = "channels_events_ops"

urlpatterns = [
    path("", ops_page, name="page"),
    path("watch/", ops_watch, name="watch"),
]

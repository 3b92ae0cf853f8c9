"""Views to mount where the project wants: the Prometheus metrics and the operations page.

``metrics_view`` serves the metrics of :mod:`channels_events._metrics` (and
any other metrics of the process's default registry) in Prometheus' text
format. With ``PROMETHEUS_MULTIPROC_DIR`` set it serves the metrics of every
process sharing that directory, as ``prometheus_client``'s multiprocess mode
collects them. It answers 404 while metrics are off.

``ops_page`` and ``ops_watch`` are the operations page and the request it
repeats while open; both answer staff users only: the page sends anonymous
visitors to ``LOGIN_URL``, and anyone else gets 403.
``channels_events.ops_urls`` routes them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from . import _ops
from ._conf import events_settings
from ._metrics import metrics, prometheus_client, registry

__all__ = ["metrics_view", "ops_page", "ops_watch"]


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Return the process's metrics in Prometheus' text exposition format."""
    metrics.choose()
    if not metrics.enabled or prometheus_client is None:
        raise Http404("channels-events metrics are off (the METRICS setting).")
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        collected = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(collected)  # type: ignore[no-untyped-call]
        body = prometheus_client.generate_latest(collected)
    else:
        body = prometheus_client.generate_latest(registry)
    return HttpResponse(body, content_type=prometheus_client.CONTENT_TYPE_LATEST)


def _staff_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_active and user.is_staff:
            return view(request, *args, **kwargs)
        if request.method == "GET" and (user is None or not user.is_authenticated):
            return redirect_to_login(request.get_full_path())
        raise PermissionDenied("The operations page is for staff.")

    return wrapper


@_staff_only
def ops_page(request: HttpRequest) -> HttpResponse:
    """Show the live operations page (staff only)."""
    websocket = request.GET.get("ws", "")
    if not websocket.startswith("/") or websocket.startswith("//"):
        # A path on this site only: a link must not point the page elsewhere.
        websocket = "/ws/events/"
    context = {
        "namespace": events_settings.OPS_NAMESPACE,
        "websocket": websocket,
        "watch_every": _ops.WATCH_EVERY,
    }
    return render(request, "channels_events/ops.html", context)


@require_POST
@_staff_only
def ops_watch(request: HttpRequest) -> JsonResponse:
    """Ask every process to publish its stats for the next few seconds (staff only)."""
    _ops.watch()
    return JsonResponse({"namespace": events_settings.OPS_NAMESPACE})

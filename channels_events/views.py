"""Views to mount where the project wants: the Prometheus metrics of the process.

``metrics_view`` serves the metrics of :mod:`channels_events._metrics` (and
any other metrics of the process's default registry) in Prometheus' text
format. With ``PROMETHEUS_MULTIPROC_DIR`` set it serves the metrics of every
process sharing that directory, as ``prometheus_client``'s multiprocess mode
collects them. It answers 404 while metrics are off.
"""

from __future__ import annotations

import os

from django.http import Http404, HttpRequest, HttpResponse

from ._metrics import metrics, prometheus_client, registry

__all__ = ["metrics_view"]


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Return the process's metrics in Prometheus' text exposition format."""
    metrics.choose()
    if not metrics.enabled or prometheus_client is None:
        raise Http404("channels-events metrics are off (the METRICS setting).")
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        collected = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(collected)
        body = prometheus_client.generate_latest(collected)
    else:
        body = prometheus_client.generate_latest(registry)
    return HttpResponse(body, content_type=prometheus_client.CONTENT_TYPE_LATEST)

"""The demo's URLs, and one view that dispatches an event, for the to-others tests."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from channels_events import dispatch


@csrf_exempt
def poke(request: HttpRequest) -> JsonResponse:
    """Dispatch ``shop::poked``; ToOthersMiddleware decides which connection it skips."""
    event = dispatch("shop::poked", {"note": request.GET.get("note", "")})
    return JsonResponse({"id": event.id})


urlpatterns = [
    path("e2e/poke/", poke),
    path("", include("demo.urls")),
]

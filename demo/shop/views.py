"""The dashboard page, an order's detail page, and the small JSON API their forms use.

Each change answers with ``events``, the envelopes of the events it caused.
The page sends its requests with its connection id (``events.fetch``), so
``ToOthersMiddleware`` keeps those events off its own stream: the page shows
them from the answer, marked as its own, and every other page gets them live.
"""

from __future__ import annotations

import json
import random
from decimal import Decimal, InvalidOperation
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_POST

from channels_events import latest_event_id
from demo import layer

from .listeners import recording_events
from .models import STATUSES, Order


def _row(order: Order) -> dict[str, Any]:
    return {
        "id": order.pk,
        "number": order.number,
        "customer": order.customer,
        "status": order.status,
        "total": str(order.total),
        "updated_at": order.updated_at.isoformat(),
    }


@require_GET
@ensure_csrf_cookie
def dashboard(request: HttpRequest) -> HttpResponse:
    """Render the live dashboard with the current orders and the channel layer it hears."""
    orders = [_row(order) for order in Order.objects.all()[:200]]
    if not isinstance(request.session.get("guest"), dict):
        # Who-is-watching names a visitor by this, in every tab of its browser.
        number = random.randrange(1000, 10000)
        request.session["guest"] = {
            "id": f"{number}-{random.getrandbits(32):08x}",
            "name": f"Guest {number}",
        }
    context = {"orders": orders, "statuses": STATUSES, "layer": layer.current()}
    return render(request, "shop/dashboard.html", context)


@require_GET
@ensure_csrf_cookie
def order_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Render one order as it is now, and the event id its live updates start after.

    The id is read before the order: a change that lands between the two is
    both in the page and replayed to it, which does no harm, while a change
    after the id is never missed (docs/browsers.md, "A live page").
    """
    last_event = latest_event_id("shop")
    order = get_object_or_404(Order, pk=pk)
    context = {"order": _row(order), "last_event": last_event, "statuses": STATUSES}
    return render(request, "shop/order.html", context)


@require_GET
def order_list(request: HttpRequest) -> JsonResponse:
    """Return the current orders (the page reloads them after missing events)."""
    return JsonResponse({"orders": [_row(order) for order in Order.objects.all()[:200]]})


@require_POST
def order_create(request: HttpRequest) -> JsonResponse:
    """Create an order from the form: customer and total."""
    try:
        data = json.loads(request.body or b"{}")
        customer = str(data.get("customer", "")).strip()[:100]
        total = Decimal(str(data.get("total", "")))
    except (ValueError, InvalidOperation):
        return JsonResponse({"error": "Send JSON with a customer and a total."}, status=400)
    if not customer or not total.is_finite() or total <= 0 or total >= 10**8:
        return JsonResponse({"error": "A customer and a positive total are needed."}, status=400)
    number = f"A-{random.randrange(10000, 99999)}"
    while Order.objects.filter(number=number).exists():
        number = f"A-{random.randrange(10000, 99999)}"
    with recording_events() as events:
        order = Order.objects.create(
            number=number, customer=customer, total=total.quantize(Decimal("0.01"))
        )
    return JsonResponse({**_row(order), "events": events}, status=201)


@require_POST
def order_advance(request: HttpRequest, pk: int) -> JsonResponse:
    """Move an order to its next status."""
    order = get_object_or_404(Order, pk=pk)
    following = order.next_status()
    if following is None:
        return JsonResponse({"error": "This order is already delivered."}, status=409)
    order.status = following
    with recording_events() as events:
        order.save(update_fields=["status", "updated_at"])
    return JsonResponse({**_row(order), "events": events})


@require_POST
def order_delete(request: HttpRequest, pk: int) -> JsonResponse:
    """Delete an order."""
    order = get_object_or_404(Order, pk=pk)
    with recording_events() as events:
        order.delete()
    return JsonResponse({"deleted": pk, "events": events})

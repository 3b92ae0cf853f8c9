"""Every order change becomes a ``shop::Order::<action>`` event (imported at start-up)."""

from __future__ import annotations

from channels_events import observe

from .models import Order

observe(Order, namespace="shop")

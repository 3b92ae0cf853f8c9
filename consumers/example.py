"""An async consumer built on EventConsumerMixin, served at ``/ws/orders/``.

It forwards every order event to its websocket as the plain envelope: an
example of a consumer that declares ``listens_for`` and gets method calls.
Like the event stream, it only serves the ``shop`` namespace, which the
demo's policy opens to everyone.
"""

from __future__ import annotations

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from channels_events import Event
from channels_events.consumers import EventConsumerMixin


class OrderFeed(EventConsumerMixin, AsyncJsonWebsocketConsumer):
    """Send each ``shop::Order::*`` event to the client as JSON."""

    listens_for = {r"shop::Order::(created|updated|deleted)": "order_changed"}

    async def connect(self) -> None:
        await self.accept()

    async def order_changed(self, event: Event) -> None:
        await self.send_json(event.to_dict())

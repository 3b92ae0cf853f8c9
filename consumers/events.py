"""The browser event stream, served at ``/ws/events/``."""

from __future__ import annotations

from channels_events.consumers import EventStreamConsumer


class BrowserEventStream(EventStreamConsumer):
    """The PROTOCOL.md stream as the library ships it; policies come from settings."""

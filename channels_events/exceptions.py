"""Exceptions raised by channels-events."""

from __future__ import annotations

__all__ = [
    "ChannelsEventsError",
    "EventClassError",
    "InvalidEventName",
    "InvalidPattern",
    "InvalidPayload",
    "UnknownEventKey",
]


class ChannelsEventsError(Exception):
    """Raised as the base of every error this library defines."""


class InvalidEventName(ChannelsEventsError, ValueError):
    """Raised when an event name does not follow the naming rules."""


class InvalidPattern(ChannelsEventsError, ValueError):
    """Raised when a listener pattern does not compile or is refused."""


class InvalidPayload(ChannelsEventsError, TypeError):
    """Raised when an event payload or envelope has the wrong shape."""


class EventClassError(ChannelsEventsError, TypeError):
    """Raised when an Event subclass is declared or constructed wrongly."""


class UnknownEventKey(ChannelsEventsError, AttributeError):
    """Raised when a Namespace is asked for an event key it does not declare."""

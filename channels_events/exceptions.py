"""Every error channels-events raises, under one root: ``ChannelsEventsError``.

Each class also subclasses the built-in that fits it, so code written for
``ValueError`` or ``TypeError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "ChannelsEventsError",
    "EventClassError",
    "EventTooLarge",
    "InvalidConnectionId",
    "InvalidEventName",
    "InvalidFilter",
    "InvalidPattern",
    "InvalidPayload",
    "ObserverError",
    "ProtocolError",
    "TaskListenerError",
    "UnknownEventKey",
    "UnknownSetting",
]


class ChannelsEventsError(Exception):
    """Raised as the base of every error this library defines."""


class InvalidEventName(ChannelsEventsError, ValueError):
    """Raised when an event name does not follow the naming rules."""


class InvalidConnectionId(ChannelsEventsError, ValueError):
    """Raised when a websocket connection id is malformed (see ``to_others``)."""


class InvalidPattern(ChannelsEventsError, ValueError):
    """Raised when a listener pattern does not compile or is refused."""


class InvalidFilter(ChannelsEventsError, ValueError):
    """Raised when a subscription filter (``where``, or a policy's filter) is malformed."""


class InvalidPayload(ChannelsEventsError, TypeError):
    """Raised when an event payload or envelope has the wrong shape."""


class EventTooLarge(ChannelsEventsError, ValueError):
    """Raised when an event's envelope, as JSON, is larger than ``MAX_EVENT_BYTES``."""


class EventClassError(ChannelsEventsError, TypeError):
    """Raised when an Event subclass is declared or constructed wrongly."""


class UnknownEventKey(ChannelsEventsError, AttributeError):
    """Raised when a Namespace is asked for an event key it does not declare."""


class UnknownSetting(ChannelsEventsError, AttributeError):
    """Raised when code reads a ``CHANNELS_EVENTS`` key that does not exist."""


class ObserverError(ChannelsEventsError, TypeError):
    """Raised when a model is observed in a way that cannot work."""


class TaskListenerError(ChannelsEventsError, TypeError):
    """Raised when a listener cannot run as a Django task as declared."""


class ProtocolError(ChannelsEventsError, ValueError):
    """Raised when a websocket client's message breaks the protocol.

    ``code`` is the error code the client is sent (docs/protocol.md, section 5).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

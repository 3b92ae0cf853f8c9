"""Regex-matched events, model observers and live browser streams for Django Channels."""

from __future__ import annotations

from .dispatch import Dispatcher
from .dispatch import adispatch
from .dispatch import connect
from .dispatch import disconnect
from .dispatch import dispatch
from .dispatch import get_dispatcher
from .events import Event
from .exceptions import ChannelsEventsError
from .exceptions import EventClassError
from .exceptions import InvalidEventName
from .exceptions import InvalidPattern
from .exceptions import InvalidPayload
from .exceptions import UnknownEventKey
from .listeners import Listener
from .listeners import Namespace
from .listeners import listen
from .observers import Observer
from .observers import observe
from .signals import signal_to_event

__all__ = [
    "ChannelsEventsError",
    "Dispatcher",
    "Event",
    "EventClassError",
    "InvalidEventName",
    "InvalidPattern",
    "InvalidPayload",
    "Listener",
    "Namespace",
    "Observer",
    "UnknownEventKey",
    "adispatch",
    "connect",
    "disconnect",
    "dispatch",
    "get_dispatcher",
    "listen",
    "observe",
    "signal_to_event",
]

__version__ = "0.1.0"

"""Regex-matched events, model observers and live browser streams for Django Channels.

The public API is what this module exports, plus ``channels_events.consumers``
(the websocket consumer and the consumer mixin), ``channels_events.testing``,
``channels_events.exceptions`` and ``channels_events.compat``
(django-event-system's API, for projects moving over). Modules whose names
start with ``_`` are private.
"""

from __future__ import annotations

from ._background import drain
from ._bulk import EventManager
from ._bulk import EventQuerySet
from ._bulk import emit_bulk_event
from ._dispatcher import Dispatcher
from ._dispatcher import adispatch
from ._dispatcher import connect
from ._dispatcher import disconnect
from ._dispatcher import dispatch
from ._dispatcher import get_dispatcher
from ._events import Event
from ._history import alatest_event_id
from ._history import latest_event_id
from ._hub import HubMiddleware
from ._hub import get_hub
from ._hub import start_hub
from ._listeners import Listener
from ._listeners import Namespace
from ._listeners import listen
from ._loss import events_lost
from ._model_events import ModelEvent
from ._model_events import muted_model_events
from ._observers import Observer
from ._observers import observe
from ._observers import unobserve
from ._others import ToOthersMiddleware
from ._others import to_others
from ._presence import apresence
from ._presence import presence
from ._signals import signal_to_event
from ._tasks import TaskOptions
from .exceptions import ChannelsEventsError
from .exceptions import EventClassError
from .exceptions import EventTooLarge
from .exceptions import InvalidConnectionId
from .exceptions import InvalidEventName
from .exceptions import InvalidFilter
from .exceptions import InvalidPattern
from .exceptions import InvalidPayload
from .exceptions import ObserverError
from .exceptions import ProtocolError
from .exceptions import TaskListenerError
from .exceptions import UnknownEventKey
from .exceptions import UnknownSetting

__all__ = [
    "ChannelsEventsError",
    "Dispatcher",
    "Event",
    "EventClassError",
    "EventManager",
    "EventQuerySet",
    "EventTooLarge",
    "HubMiddleware",
    "InvalidConnectionId",
    "InvalidEventName",
    "InvalidFilter",
    "InvalidPattern",
    "InvalidPayload",
    "Listener",
    "ModelEvent",
    "Namespace",
    "Observer",
    "ObserverError",
    "ProtocolError",
    "TaskListenerError",
    "TaskOptions",
    "ToOthersMiddleware",
    "UnknownEventKey",
    "UnknownSetting",
    "adispatch",
    "alatest_event_id",
    "apresence",
    "connect",
    "disconnect",
    "dispatch",
    "drain",
    "emit_bulk_event",
    "events_lost",
    "get_dispatcher",
    "get_hub",
    "latest_event_id",
    "listen",
    "muted_model_events",
    "observe",
    "presence",
    "signal_to_event",
    "start_hub",
    "to_others",
    "unobserve",
]

# The one place the version is kept: pyproject.toml reads it from here.
__version__ = "0.1.0"

"""The compat API under django-event-system's other import path, ``events.events``."""

from __future__ import annotations

from ..._compat import CompatEvent
from ..._compat import Dispatcher
from ..._compat import Event
from ..._compat import EventListener
from ..._compat import GetPathFromClass
from ..._compat import Observer
from ..._compat import RegisterSignalsFor
from ..._compat import SignalToEvent

__all__ = [
    "CompatEvent",
    "Dispatcher",
    "Event",
    "EventListener",
    "GetPathFromClass",
    "Observer",
    "RegisterSignalsFor",
    "SignalToEvent",
]

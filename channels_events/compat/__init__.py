"""django-event-system's API, running on channels-events.

Change ``from events import ...`` to ``from channels_events.compat import
...`` (and ``events.events`` / ``events.events.utils`` to
``channels_events.compat.events`` / ``channels_events.compat.events.utils``)
and the project runs on channels-events; docs/migration.md maps every call to
its channels-events counterpart for the move that follows. Events dispatched
here stay in the process unless the ``COMPAT_PUBLISH`` setting is on.
"""

from __future__ import annotations

from .._compat import CompatEvent
from .._compat import Dispatcher
from .._compat import Event
from .._compat import EventListener
from .._compat import GetPathFromClass
from .._compat import Observer
from .._compat import RegisterSignalsFor
from .._compat import SignalToEvent

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

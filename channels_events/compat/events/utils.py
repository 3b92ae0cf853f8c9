"""The helpers of django-event-system's ``events.events.utils``."""

from __future__ import annotations

from ..._compat import GetPathFromClass
from ..._compat import RegisterSignalsFor
from ..._compat import SignalToEvent

__all__ = ["GetPathFromClass", "RegisterSignalsFor", "SignalToEvent"]

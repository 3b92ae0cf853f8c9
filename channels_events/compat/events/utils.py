"""The helpers of django-event-system's ``events.events.utils``."""

from __future__ import annotations

from ..._compat import GetPathFromClass

__all__ = ["GetPathFromClass"]

"""A connection's subscriptions: its ids, patterns and filters, and which of them an event matches.

The connection adds and removes subscriptions as its client asks; its writer
reads the table to turn events into frames. Connections whose subscription
in a namespace is the same (the same id, pattern and filter, typically all
of them) share one match verdict and one frame text per event
(``_frames.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

from ._events import Event
from ._filters import Filter
from ._frames import Subscription, event_frame, filter_matches, single_frame
from ._metrics import metrics
from ._names import ClientPattern

__all__ = ["Subscriptions"]


class Subscriptions:
    """Hold one connection's subscriptions, by id and by namespace."""

    def __init__(self) -> None:
        self._patterns: dict[str, ClientPattern] = {}
        # (id, pattern, filter) per namespace, in subscription order: the
        # order of the ids an event frame lists.
        self._by_namespace: dict[str, list[Subscription]] = {}

    def __contains__(self, sid: object) -> bool:
        return sid in self._patterns

    def __len__(self) -> int:
        return len(self._patterns)

    def namespaces(self) -> Iterable[str]:
        """Return the namespaces with at least one subscription."""
        return self._by_namespace.keys()

    def ids_in(self, namespace: str) -> list[str]:
        """Return the ids of the subscriptions in ``namespace``, in subscription order."""
        return [entry[0] for entry in self._by_namespace.get(namespace, ())]

    def add(self, sid: str, pattern: ClientPattern, where: Filter | None = None) -> None:
        """Add subscription ``sid``, filtered by ``where``; the caller checked the id is free."""
        self._patterns[sid] = pattern
        self._by_namespace.setdefault(pattern.namespace, []).append((sid, pattern, where or None))
        metrics.subscriptions(1)

    def remove(self, sid: str) -> ClientPattern | None:
        """Remove subscription ``sid``; return its pattern, or None if there is none."""
        pattern = self._patterns.pop(sid, None)
        if pattern is None:
            return None
        metrics.subscriptions(-1)
        remaining = [entry for entry in self._by_namespace[pattern.namespace] if entry[0] != sid]
        if remaining:
            self._by_namespace[pattern.namespace] = remaining
        else:
            del self._by_namespace[pattern.namespace]
        return pattern

    def matching(self, event: Event) -> tuple[str, ...] | None:
        """Return the ids of the subscriptions ``event`` matches, or None if it matches none."""
        candidates = self._by_namespace.get(event.namespace)
        if not candidates:
            return None
        name = event.name
        ids = tuple(
            sid
            for sid, pattern, where in candidates
            if pattern.matches(name) and (where is None or filter_matches(where, event))
        )
        return ids or None

    def frame(self, event: Event) -> str | None:
        """Return the event frame of ``event`` for these subscriptions, or None if none matches.

        None too when the event cannot be encoded (logged once per event).
        """
        candidates = self._by_namespace.get(event.namespace)
        if not candidates:
            return None
        if len(candidates) == 1:
            # The usual case: the verdict and the frame are shared with every
            # connection that has the same subscription, one look-up each.
            return single_frame(event, candidates[0])
        ids = self.matching(event)
        return None if ids is None else event_frame(event, ids)

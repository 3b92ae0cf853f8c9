"""The process's local subscribers (websocket connections, consumers), indexed by namespace.

The hub hands each run of events of one namespace, its own and other
processes', to the subscribers of that namespace through :meth:`fan_out`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Protocol

from ._events import Event

__all__ = ["Subscriber", "SubscriberIndex"]

logger = logging.getLogger("channels_events.hub")


class Subscriber(Protocol):
    """What the hub needs of a local subscriber, such as a websocket connection."""

    def namespaces(self) -> Iterable[str]:
        """Return the namespaces whose events this subscriber wants."""

    def deliver(self, events: list[Event]) -> Awaitable[None] | None:
        """Take a batch of events of one namespace, on the hub's loop, without blocking.

        Return None, or an awaitable the hub awaits right away (a websocket
        writing its frames), before it reads or sends anything else.
        """


class SubscriberIndex:
    """Know which local subscriber wants which namespace, and hand them events.

    ``on_namespaces_changed()`` is called when a namespace gains its first
    subscriber or loses its last one.
    """

    def __init__(self, on_namespaces_changed: Callable[[], None]) -> None:
        self._on_namespaces_changed = on_namespaces_changed
        self._subscribers: dict[Subscriber, frozenset[str]] = {}
        self._by_namespace: dict[str, set[Subscriber]] = {}

    def __iter__(self) -> Iterator[Subscriber]:
        return iter(list(self._subscribers))

    def __contains__(self, namespace: object) -> bool:
        """Return whether a subscriber wants this namespace."""
        return namespace in self._by_namespace

    def __bool__(self) -> bool:
        return bool(self._by_namespace)

    @property
    def namespaces(self) -> frozenset[str]:
        """Return the namespaces some subscriber wants."""
        return frozenset(self._by_namespace)

    def add(self, subscriber: Subscriber) -> None:
        """Index ``subscriber`` under its namespaces (again, if they changed)."""
        namespaces = frozenset(subscriber.namespaces())
        old = self._subscribers.get(subscriber, frozenset())
        self._subscribers[subscriber] = namespaces
        changed = False
        for namespace in old - namespaces:
            changed |= self._unindex(namespace, subscriber)
        for namespace in namespaces - old:
            subscribers = self._by_namespace.get(namespace)
            if subscribers is None:
                subscribers = self._by_namespace[namespace] = set()
                changed = True
            subscribers.add(subscriber)
        if changed:
            self._on_namespaces_changed()

    def remove(self, subscriber: Subscriber) -> None:
        """Stop handing events to ``subscriber``."""
        changed = False
        for namespace in self._subscribers.pop(subscriber, frozenset()):
            changed |= self._unindex(namespace, subscriber)
        if changed:
            self._on_namespaces_changed()

    def _unindex(self, namespace: str, subscriber: Subscriber) -> bool:
        subscribers = self._by_namespace.get(namespace)
        if subscribers is None:
            return False
        subscribers.discard(subscriber)
        if subscribers:
            return False
        del self._by_namespace[namespace]
        return True

    async def fan_out(self, namespace: str, events: list[Event]) -> None:
        """Hand a run of events of ``namespace`` to each of its subscribers, on the hub's loop."""
        # Each subscriber queues what matches; websockets then write their
        # frames here, one after another, as a bare loop over sockets would:
        # no task switch per connection. (An ASGI send hands the frame to
        # the server's buffer; it does not wait for the client.)
        for subscriber in list(self._by_namespace.get(namespace, ())):
            try:
                pending = subscriber.deliver(events)
                if pending is not None:
                    await pending
            except Exception:
                logger.exception("Subscriber %r failed to take events.", subscriber)

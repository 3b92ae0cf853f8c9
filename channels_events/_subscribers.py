"""The process's local subscribers (websocket connections, consumers), indexed by namespace.

The hub hands each run of events of one namespace, its own and other
processes', to the subscribers of that namespace through :meth:`fan_out`.
The index remembers the last events it handed over per namespace, so that
after a loss (``_loss.py``) :meth:`catch_up` hands over what the history
holds and they did not get, in order and once, or tells them they missed
events.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ._events import Event
from ._history import TIMEOUT as HISTORY_TIMEOUT
from ._history import recorded_events

if TYPE_CHECKING:
    from ._history import History

__all__ = ["RECENT", "Subscriber", "SubscriberIndex"]

logger = logging.getLogger("channels_events.hub")

#: Event ids remembered per namespace: what was handed over is not handed
#: over again, and a catch-up starts from among them.
RECENT = 2000
# A catch-up reads the history from this many events before the newest one
# handed over: events of several publishers may be recorded in one order and
# arrive in another, and the ones handed over are left out anyway.
_REWIND = 200


class _Recent:
    """The ids of the last events handed to a namespace's subscribers, oldest first."""

    __slots__ = ("floor", "ids", "order", "told")

    def __init__(self) -> None:
        self.order: collections.deque[str] = collections.deque()
        self.ids: set[str] = set()
        # Set when the subscribers were told ``gap``: what the history holds
        # up to the first event handed over after it (``floor``) is never
        # replayed, or it would arrive behind newer events.
        self.told = False
        self.floor: str | None = None

    def fresh(self, events: list[Event]) -> list[Event]:
        """Return the events not handed over before, remembering them."""
        found = []
        ids, order = self.ids, self.order
        for event in events:
            event_id = event.id
            if event_id in ids:
                continue
            ids.add(event_id)
            order.append(event_id)
            found.append(event)
        if self.told and found:
            self.told = False
            self.floor = found[0].id
        while len(order) > RECENT:
            ids.discard(order.popleft())
        return found

    @property
    def newest(self) -> str | None:
        return self.order[-1] if self.order else None

    @property
    def start(self) -> str | None:
        """Return the id a catch-up reads the history after (None: nothing to start from)."""
        if not self.order or self.told:
            return None
        return self.order[-min(len(self.order), _REWIND)]

    def above_floor(self, envelopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Return the envelopes recorded after the floor (all when it is not among them)."""
        floor = self.floor
        if floor is None:
            return envelopes
        for index, envelope in enumerate(envelopes):
            if envelope.get("id") == floor:
                return envelopes[index + 1 :]
        return envelopes


class Subscriber(Protocol):
    """What the hub needs of a local subscriber, such as a websocket connection."""

    def namespaces(self) -> Iterable[str]:
        """Return the namespaces whose events this subscriber wants."""

    def deliver(self, events: list[Event]) -> Awaitable[None] | None:
        """Take a batch of events of one namespace, on the hub's loop, without blocking.

        Return None, or an awaitable the hub awaits right away (a websocket
        writing its frames), before it reads or sends anything else.
        """


def _missed_of(subscriber: Subscriber) -> Callable[[str, str | None], Any] | None:
    """Return the subscriber's optional ``missed(namespace, since)``: told of events it missed."""
    return getattr(subscriber, "missed", None)


class SubscriberIndex:
    """Know which local subscriber wants which namespace, and hand them events.

    ``on_namespaces_changed()`` is called when a namespace gains its first
    subscriber or loses its last one.
    """

    def __init__(self, on_namespaces_changed: Callable[[], None]) -> None:
        self._on_namespaces_changed = on_namespaces_changed
        self._subscribers: dict[Subscriber, frozenset[str]] = {}
        self._by_namespace: dict[str, set[Subscriber]] = {}
        self._recent: dict[str, _Recent] = {}

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
        self._recent.pop(namespace, None)
        return True

    async def fan_out(self, namespace: str, events: list[Event]) -> None:
        """Hand a run of events of ``namespace`` to each of its subscribers, on the hub's loop."""
        # Each subscriber queues what matches; websockets then write their
        # frames here, one after another, as a bare loop over sockets would:
        # no task switch per connection. (An ASGI send hands the frame to
        # the server's buffer; it does not wait for the client.)
        subscribers = self._by_namespace.get(namespace)
        if not subscribers:
            return
        recent = self._recent.get(namespace)
        if recent is None:
            recent = self._recent[namespace] = _Recent()
        # A copy of an event handed over already (a catch-up that came first,
        # a message sent twice) is not handed over again.
        events = recent.fresh(events)
        if not events:
            return
        for subscriber in list(subscribers):
            try:
                pending = subscriber.deliver(events)
                if pending is not None:
                    await pending
            except Exception:
                logger.exception("Subscriber %r failed to take events.", subscriber)

    async def catch_up(
        self, namespace: str, history: History | None, after: str | None = None
    ) -> bool:
        """Hand over what the history holds that ``namespace``'s subscribers did not get.

        ``after`` is the last event received from the publisher whose
        messages were lost, when known; otherwise the history is read from
        a little before the newest event handed over. Where the history
        cannot say (none is kept, it was trimmed or lost, or nothing was
        handed over yet to start from), each subscriber is told with
        ``missed()`` instead. Return whether the history covered it.
        """
        recent = self._recent.get(namespace)
        if recent is not None and recent.told:
            return False  # told ``gap`` already, and nothing was handed over since
        start = recent.start if recent is not None else None
        if after is not None and start is not None:
            start = after
        found = None
        if history is not None and start is not None:
            try:
                found = await asyncio.wait_for(history.after(namespace, start), HISTORY_TIMEOUT)
            except Exception as exc:
                logger.warning("Reading the history of %r to catch up failed: %r.", namespace, exc)
        if found is not None and recent is not None:
            found = recent.above_floor(found)
        if found is None:
            since = recent.newest if recent is not None else None
            if recent is not None:
                recent.told = True
            for subscriber in list(self._by_namespace.get(namespace, ())):
                missed = _missed_of(subscriber)
                if missed is None:
                    continue
                try:
                    pending = missed(namespace, since)
                    if pending is not None:
                        await pending
                except Exception:
                    logger.exception("Subscriber %r failed to take a gap.", subscriber)
            return False
        events = recorded_events(found)
        for event in events:
            event.is_remote = True
        await self.fan_out(namespace, events)
        return True

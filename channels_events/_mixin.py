"""Events as method calls for any async Channels consumer: ``EventConsumerMixin``.

The mixin holds one listener, the consumer's hub subscriber, which queues
matching events and runs the consumer's handlers on a task of its own.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Iterable
from typing import Any, ClassVar

from ._conf import events_settings
from ._events import Event
from ._hub import get_hub
from ._names import compile_pattern, literal_namespace
from ._registry import PatternLike, _as_list, pattern_text

__all__ = ["EventConsumerMixin"]

logger = logging.getLogger("channels_events.consumers")


class _Listener:
    """Hand a consumer the events its ``listens_for`` matches, in order, on a task of its own.

    The listener is the consumer's hub subscriber: the hub never waits for
    the consumer's handlers. Events queue until :meth:`open` (a websocket
    consumer opens once its client is accepted).
    """

    def __init__(
        self,
        consumer: EventConsumerMixin,
        routes: list[tuple[Any, str]],
        namespaces: frozenset[str],
    ) -> None:
        self._consumer = consumer
        self._routes = routes
        self._namespaces = namespaces
        self._queue: collections.deque[Event] = collections.deque()
        self._wake = asyncio.Event()
        self._opened = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run())

    def namespaces(self) -> Iterable[str]:
        """Return the namespaces the consumer's patterns may match."""
        return self._namespaces

    def deliver(self, events: list[Event]) -> None:
        """Queue the events for the consumer's task; the hub does not wait for handlers."""
        if asyncio.get_running_loop() is not self._loop:
            self._loop.call_soon_threadsafe(self.deliver, events)
            return
        queue = self._queue
        room = events_settings.BUFFER_SIZE - len(queue)
        if room < len(events):
            # A consumer that cannot keep up loses events rather than memory.
            logger.warning(
                "%s is %d event(s) behind; dropped %d.",
                type(self._consumer).__qualname__,
                len(queue),
                len(events) - max(room, 0),
            )
            events = events[: max(room, 0)]
        queue.extend(events)
        self._wake.set()

    def open(self) -> None:
        """Start running handlers (events delivered before wait for this)."""
        self._opened.set()

    def stop(self) -> None:
        """Stop running handlers; what is queued is dropped."""
        self._task.cancel()
        self._queue.clear()

    async def _run(self) -> None:
        await self._opened.wait()
        consumer = self._consumer
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                event = self._queue.popleft()
                for regex, method in self._routes:
                    if regex.fullmatch(event.name):
                        try:
                            result = getattr(consumer, method)(event)
                            if asyncio.iscoroutine(result):
                                await result
                        except Exception:
                            logger.exception(
                                "%s.%s failed on event %r.",
                                type(consumer).__qualname__,
                                method,
                                event.name,
                            )
                        break


class EventConsumerMixin:
    """Give any Channels consumer events as method calls.

    ::

        class OrderFeed(EventConsumerMixin, AsyncJsonWebsocketConsumer):
            listens_for = [r"shop::Order::.*"]          # -> on_event(event)

            async def on_event(self, event):
                await self.send_json(event.to_dict())

        class Billing(EventConsumerMixin, AsyncConsumer):
            listens_for = {r"billing::invoice::.*": "invoice_changed"}

    ``listens_for`` is a list of trusted patterns (regexes, Event classes),
    delivered to ``on_event``, or a dict mapping each pattern to the name of
    its handler method. Handlers may be sync or async. A websocket consumer
    is registered with the hub when it calls ``accept()`` and unregistered on
    disconnect; other consumers call ``start_listening()`` themselves. It
    receives every matching event published in this process (model events
    after commit) or received from other processes, in order, up to
    ``BUFFER_SIZE`` waiting (beyond that, events are dropped and logged).
    Patterns without a literal namespace need ``event_namespaces = [...]``.

    The browser policies (``SUBSCRIBE_POLICY``, ``RECEIVE_POLICY``) do not
    apply here: the patterns are the server's, so decide in ``connect()``
    who may connect, as with any consumer.
    """

    listens_for: ClassVar[Iterable[PatternLike] | dict[PatternLike, str]] = ()
    event_namespaces: ClassVar[Iterable[str]] = ()
    # Set while registered with the hub.
    _event_listener: _Listener | None = None

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        """Check ``listens_for`` (a mistake fails here), then connect as the class does."""
        self._event_routing()
        await super().websocket_connect(message)  # type: ignore[misc]

    async def accept(self, *args: Any, **kwargs: Any) -> None:
        """Accept the websocket as the consumer class does, then register with the hub.

        The consumer registers just before the handshake completes, so no
        event dispatched after a client sees the connection open is missed;
        handlers run only once it is accepted, and a refused connection
        never gets events.
        """
        listener = await self._listen()
        await super().accept(*args, **kwargs)  # type: ignore[misc]
        listener.open()

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Unregister from the hub, then disconnect as the consumer class does."""
        await self.stop_listening()
        await super().websocket_disconnect(message)  # type: ignore[misc]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Run the consumer; unregister from the hub however it ends (even cancelled)."""
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        finally:
            await self.stop_listening()

    async def start_listening(self) -> None:
        """Register with the hub (websockets do on ``accept()``; other consumers call it)."""
        (await self._listen()).open()

    async def _listen(self) -> _Listener:
        listener = self._event_listener
        if listener is None:
            routes, namespaces = self._event_routing()
            listener = self._event_listener = _Listener(self, routes, namespaces)
            hub = get_hub()
            await hub.attach()
            hub.add_subscriber(listener)
        return listener

    def _event_routing(self) -> tuple[list[tuple[Any, str]], frozenset[str]]:
        """Return the compiled routes of ``listens_for`` and their namespaces, or raise."""
        routes: list[tuple[Any, str]] = []
        spec = self.listens_for
        items = (
            spec.items() if isinstance(spec, dict) else [(p, "on_event") for p in _as_list(spec)]
        )
        namespaces = set(self.event_namespaces)
        for pattern, method in items:
            source = pattern_text(pattern)
            if not callable(getattr(self, method, None)):
                raise TypeError(f"{type(self).__qualname__} has no handler method {method!r}.")
            literal = literal_namespace(source)
            if literal is None and not self.event_namespaces:
                raise TypeError(
                    f"{type(self).__qualname__}: pattern {source!r} has no literal namespace; "
                    "list the namespaces it may match in event_namespaces."
                )
            if literal is not None:
                namespaces.add(literal)
            routes.append((compile_pattern(source), method))
        return routes, frozenset(namespaces)

    async def stop_listening(self) -> None:
        """Unregister from the hub."""
        listener = self._event_listener
        if listener is None:
            return
        self._event_listener = None
        get_hub().remove_subscriber(listener)
        listener.stop()

    def on_event(self, event: Event) -> Any:
        """Handle an event matching ``listens_for``; override it (it may be async)."""
        raise NotImplementedError(f"{type(self).__qualname__} must define on_event(event).")

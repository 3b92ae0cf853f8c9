"""``EventConsumerMixin``: any async Channels consumer gets events as method calls."""

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


class _MixinSubscriber:
    """The hub-facing side of an EventConsumerMixin consumer."""

    def __init__(self, consumer: EventConsumerMixin, loop: asyncio.AbstractEventLoop) -> None:
        self.consumer = consumer
        self.loop = loop

    def namespaces(self) -> Iterable[str]:
        return self.consumer._event_namespaces

    def deliver(self, events: list[Event]) -> None:
        # The consumer's own task runs its handlers: the hub never waits for them.
        if asyncio.get_running_loop() is not self.loop:
            self.loop.call_soon_threadsafe(self.deliver, events)
            return
        queue = self.consumer._event_queue
        room = events_settings.BUFFER_SIZE - len(queue)
        if room < len(events):
            # A consumer that cannot keep up loses events rather than memory.
            logger.warning(
                "%s is %d event(s) behind; dropped %d.",
                type(self.consumer).__qualname__,
                len(queue),
                len(events) - max(room, 0),
            )
            events = events[: max(room, 0)]
        queue.extend(events)
        self.consumer._event_wake.set()


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
        await self.start_listening(accepted=False)
        await super().accept(*args, **kwargs)  # type: ignore[misc]
        self._event_ready.set()

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

    async def start_listening(self, *, accepted: bool = True) -> None:
        """Register with the hub (websockets do on ``accept()``; other consumers call it)."""
        if getattr(self, "_event_subscriber", None) is not None:
            return
        self._event_ready = asyncio.Event()
        if accepted:
            self._event_ready.set()
        self._event_routes, self._event_namespaces = self._event_routing()
        self._event_queue: collections.deque[Event] = collections.deque()
        self._event_wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._event_subscriber: _MixinSubscriber | None = _MixinSubscriber(self, loop)
        self._event_task = loop.create_task(self._run_event_handlers())
        hub = get_hub()
        await hub.attach()
        hub.add_subscriber(self._event_subscriber)

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
        subscriber = getattr(self, "_event_subscriber", None)
        if subscriber is None:
            return
        get_hub().remove_subscriber(subscriber)
        self._event_task.cancel()
        self._event_subscriber = None

    async def _run_event_handlers(self) -> None:
        await self._event_ready.wait()
        while True:
            await self._event_wake.wait()
            self._event_wake.clear()
            while self._event_queue:
                event = self._event_queue.popleft()
                for regex, method in self._event_routes:
                    if regex.fullmatch(event.name):
                        try:
                            result = getattr(self, method)(event)
                            if asyncio.iscoroutine(result):
                                await result
                        except Exception:
                            logger.exception(
                                "%s.%s failed on event %r.",
                                type(self).__qualname__,
                                method,
                                event.name,
                            )
                        break

    def on_event(self, event: Event) -> Any:
        """Handle an event matching ``listens_for``; override it (it may be async)."""
        raise NotImplementedError(f"{type(self).__qualname__} must define on_event(event).")

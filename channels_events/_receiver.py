"""The receiving half of the hub: channel-layer groups in, local listeners out.

The hub joins ``<GROUP_PREFIX>.<namespace>`` for every namespace something in
the process listens to, reads its one channel, ignores its own echoes, hands
each run of remote events to the local subscribers (websocket connections,
indexed here by namespace) at once, and to the local listeners on a delivery
task of their own. The process's own published events reach the subscribers
through the same fan-out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from django.db import close_old_connections

from ._conf import events_settings
from ._dispatcher import Dispatcher, Registration
from ._events import Event
from ._sender import BATCH_TYPE, EVENT_TYPE, _backoff, _running_loop, group_name

__all__ = ["Inbox", "Subscriber"]

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


class Inbox:
    """Receive other processes' events from the channel layer (mixed into Hub)."""

    # Set up by Hub._reset, Hub._bind and Hub._start_sender.
    origin: str
    dispatcher: Dispatcher
    _loop: asyncio.AbstractEventLoop | None
    _channel: str | None
    _receiving_layer: Any
    _joined: set[str]
    _subscribers: dict[Subscriber, frozenset[str]]
    _by_namespace: dict[str, set[Subscriber]]
    _warned_open: bool
    _groups_dirty: asyncio.Event | None
    _receiver: asyncio.Task[None] | None
    _refresher: asyncio.Task[None] | None
    _deliverer: asyncio.Task[None] | None
    _remote: asyncio.Queue[list[Event]] | None
    _workers: ThreadPoolExecutor | None
    received: int
    dropped_remote: int

    @property
    def layer(self) -> Any:  # pragma: no cover - defined by Hub
        raise NotImplementedError

    @property
    def receiving(self) -> bool:  # pragma: no cover - defined by Hub
        raise NotImplementedError

    # -- local subscribers -------------------------------------------------

    def add_subscriber(self, subscriber: Subscriber) -> None:
        """Deliver events of ``subscriber.namespaces()`` to it, joining groups as needed.

        Call again whenever its namespaces change. The subscriber gets every
        event published in this process and every event received from
        others, in batches of one namespace, on the hub's loop.
        """
        namespaces = frozenset(subscriber.namespaces())
        old = self._subscribers.get(subscriber, frozenset())
        self._subscribers[subscriber] = namespaces
        for namespace in old - namespaces:
            self._unindex(namespace, subscriber)
        for namespace in namespaces - old:
            subscribers = self._by_namespace.get(namespace)
            if subscribers is None:
                subscribers = self._by_namespace[namespace] = set()
                # Without a channel layer, what accepts() says depends on this.
                self.dispatcher.publishers_changed()
            subscribers.add(subscriber)
        if namespaces - self._joined_namespaces():
            self.groups_changed()

    def remove_subscriber(self, subscriber: Subscriber) -> None:
        """Stop delivering to ``subscriber``."""
        for namespace in self._subscribers.pop(subscriber, frozenset()):
            self._unindex(namespace, subscriber)

    def _unindex(self, namespace: str, subscriber: Subscriber) -> None:
        subscribers = self._by_namespace.get(namespace)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._by_namespace[namespace]
                self.dispatcher.publishers_changed()

    async def _fan_out(self, namespace: str, events: list[Event]) -> None:
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

    async def joined(self, namespace: str, timeout: float) -> bool:
        """Wait until this process is in ``namespace``'s group; return whether it is.

        From then on, every event other processes publish in the namespace
        reaches it. Without a channel layer nothing comes from elsewhere, so
        there is nothing to wait for.
        """
        if self.layer is None:
            return True
        group = group_name(namespace)
        deadline = time.monotonic() + timeout
        # Polled: the caller may run on another loop than the hub's.
        while group not in self._joined:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    def _joined_namespaces(self) -> set[str]:
        prefix = f"{events_settings.GROUP_PREFIX}."
        return {group[len(prefix) :] for group in self._joined}

    def groups_changed(self, *args: Any) -> None:
        """Ask the hub to recompute which groups to be in (thread-safe)."""
        loop = self._loop
        if loop is None or self._groups_dirty is None or loop.is_closed():
            return
        if _running_loop() is loop:
            self._groups_dirty.set()
        else:
            loop.call_soon_threadsafe(self._groups_dirty.set)

    def wanted_namespaces(self) -> set[str]:
        """Return the namespaces this process needs events of."""
        found, open_pattern = self.dispatcher.namespaces()
        wanted = set(found) | set(events_settings.NAMESPACES)
        wanted.update(self._by_namespace)
        if open_pattern and not self._warned_open:
            self._warned_open = True
            open_listeners = [
                r.description for r in self.dispatcher.registrations if r.namespaces is None
            ]
            logger.warning(
                "Listener(s) %s use a pattern without a literal namespace; they receive "
                "events from other processes only in namespaces listed in "
                "CHANNELS_EVENTS['NAMESPACES'] or declared with namespaces=[...].",
                ", ".join(open_listeners),
            )
        return wanted

    def _start_receiving(self) -> None:
        if self.receiving or self.layer is None:
            return
        assert self._groups_dirty is not None
        self.dispatcher.watch(self.groups_changed)
        loop = asyncio.get_running_loop()
        self._receiver = loop.create_task(self._receive_forever())
        self._refresher = loop.create_task(self._refresh_groups())
        self._remote = asyncio.Queue(maxsize=events_settings.OUTBOX_SIZE)
        self._deliverer = loop.create_task(self._deliver_forever())

    async def _deliver_forever(self) -> None:
        # Listeners run here, apart from the receive loop: a slow listener
        # delays its own later events, never the reading of messages or the
        # websockets, which got their copy already.
        assert self._remote is not None
        while True:
            events = await self._remote.get()
            try:
                await self.deliver_to_listeners(events)
            except Exception:
                logger.exception("Delivering remote events failed.")

    async def _sync_groups(self, *, rejoin: bool = False) -> None:
        assert self._channel is not None
        layer = self._receiving_layer or self.layer
        wanted = {group_name(ns) for ns in self.wanted_namespaces()}
        joined = set() if rejoin else self._joined
        for group in sorted(wanted - joined):
            await layer.group_add(group, self._channel)
        for group in sorted(self._joined - wanted):
            await layer.group_discard(group, self._channel)
        self._joined = wanted

    async def _refresh_groups(self) -> None:
        # Group membership expires after group_expiry; re-add well before.
        assert self._groups_dirty is not None
        period = max(1.0, float(getattr(self.layer, "group_expiry", 86400)) / 3)
        deadline = time.monotonic() + period
        while True:
            # Changes in between do not postpone the periodic rejoin.
            try:
                await asyncio.wait_for(
                    self._groups_dirty.wait(), max(0.0, deadline - time.monotonic())
                )
                self._groups_dirty.clear()
                rejoin = False
            except asyncio.TimeoutError:
                rejoin = True
                deadline = time.monotonic() + period
            if self._channel is None:
                continue
            try:
                await self._sync_groups(rejoin=rejoin)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("Refreshing groups failed (%s); the receiver will rejoin.", exc)

    async def _receive_forever(self) -> None:
        layer = self._receiving_layer = self.layer
        failures = 0
        need_join = True
        while True:
            try:
                if self._channel is None:
                    # The default prefix matters: channels_redis reads all of a
                    # process's channels of one prefix in one loop; a second
                    # prefix would wait behind the consumers' loop for ever.
                    self._channel = await layer.new_channel()
                if need_join:
                    await self._sync_groups(rejoin=True)
                    need_join = False
                message = await layer.receive(self._channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                need_join = True
                if failures == 1:
                    logger.warning(
                        "Receiving from the channel layer failed (%r); retrying with backoff.", exc
                    )
                await asyncio.sleep(_backoff(failures))
                continue
            if failures:
                logger.warning("The channel layer is reachable again; groups rejoined.")
                failures = 0
            try:
                await self._handle(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Delivering remote events failed.")

    async def _handle(self, message: Any) -> None:
        if not isinstance(message, dict):
            logger.warning("Ignored a channel-layer message that is not a dict: %r", message)
            return
        if message.get("origin") == self.origin:
            return
        kind = message.get("type")
        if kind == EVENT_TYPE:
            envelopes = [message.get("event")]
        elif kind == BATCH_TYPE and isinstance(message.get("events"), list):
            envelopes = message["events"]
        else:
            logger.warning("Ignored a channel-layer message of unknown shape: %r", message)
            return
        events = []
        for envelope in envelopes:
            try:
                events.append(Event.from_dict(envelope))  # type: ignore[arg-type]
            except Exception as exc:
                logger.warning("Ignored a malformed event envelope %r: %s", envelope, exc)
        if not events:
            return
        self.received += len(events)
        if self._by_namespace:
            start = 0
            for index in range(1, len(events) + 1):
                if index == len(events) or events[index].namespace != events[start].namespace:
                    await self._fan_out(events[start].namespace, events[start:index])
                    start = index
        listeners_for = self.dispatcher.listeners_for
        if not any(listeners_for(event.name) for event in events):
            return  # nobody here listens: no hand-off to the delivery task
        if self._remote is None:
            await self.deliver_to_listeners(events)
        elif self._remote.full():
            self.dropped_remote += len(events)
            logger.error(
                "Local listeners are %d messages behind; %d remote event(s) dropped so far.",
                self._remote.qsize(),
                self.dropped_remote,
            )
        else:
            self._remote.put_nowait(events)

    async def deliver_to_listeners(self, events: list[Event]) -> None:
        """Run local listeners for events from other processes, each in publish order.

        Runs on the hub's delivery task, apart from the receive loop. Async
        listeners are awaited; sync listeners run on one worker thread of the
        hub's (so they may use the ORM, and see events in order), a whole
        message's worth per hand-off.
        """
        dispatcher = self.dispatcher
        if dispatcher._muted:
            return
        sync_calls: list[tuple[Registration, Event]] = []
        for event in events:
            for registration in dispatcher.listeners_for(event.name):
                if registration.is_async:
                    if dispatcher._admit(registration, event):
                        try:
                            await registration.callback(event)
                        except Exception:
                            logger.exception(
                                "Listener %s failed on remote event %r.",
                                registration.description,
                                event.name,
                            )
                else:
                    sync_calls.append((registration, event))
        if sync_calls:
            if self._workers is None:
                self._workers = ThreadPoolExecutor(
                    1, thread_name_prefix="channels-events-listeners"
                )
            await asyncio.get_running_loop().run_in_executor(
                self._workers, _run_sync_calls, dispatcher, sync_calls
            )


def _run_sync_calls(dispatcher: Dispatcher, calls: list[tuple[Registration, Event]]) -> None:
    for registration, event in calls:
        if dispatcher._admit(registration, event):
            try:
                registration.callback(event)
            except Exception:
                logger.exception(
                    "Listener %s failed on remote event %r.", registration.description, event.name
                )
    # This thread lives long: drop database connections past their age, as
    # Django does at the end of each request.
    close_old_connections()

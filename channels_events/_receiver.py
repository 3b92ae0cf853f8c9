"""The hub's receiver: other processes' events, from channel-layer groups to this process.

The receiver joins ``<GROUP_PREFIX>.<namespace>`` for every namespace
something in the process listens to, reads its one channel, ignores its own
process's echoes, hands each run of remote events to the local subscribers
(websockets) at once, and to the dispatcher's delivery routine on a task of
its own, where listeners run under the same rules as for local events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import close_old_connections

from ._conf import events_settings
from ._dispatcher import Calls, Dispatcher
from ._events import Event
from ._layer import BATCH_TYPE, EVENT_TYPE, SKIP_KEY, LayerLink, group_name
from ._loop import LoopRunner, wait_set
from ._loss import ConnectionWatch, Loss, Sequences, events_lost
from ._metrics import metrics
from ._sender import backoff
from ._subscribers import SubscriberIndex
from ._tracing import deliver as deliver_traced
from ._tracing import received as trace_received

__all__ = ["Receiver"]

logger = logging.getLogger("channels_events.hub")

# Seconds between looks at whether the layer made its connection again.
_WATCH_PERIOD = 0.5


class Receiver:
    """Join the groups this process needs, read its channel, and deliver remote events."""

    def __init__(
        self,
        runner: LoopRunner,
        link: LayerLink,
        dispatcher: Dispatcher,
        subscribers: SubscriberIndex,
        origin: str,
        owner: Any = None,
    ) -> None:
        self._runner = runner
        self._link = link
        self._dispatcher = dispatcher
        self._subscribers = subscribers
        self.origin = origin
        # What sends ``events_lost`` (the hub).
        self._owner = owner
        self._sequences = Sequences()
        self._watch = ConnectionWatch()
        # Held while a run is handed over, or a catch-up is made: one at a time.
        self._handing = asyncio.Lock()
        # The layer the channel was made on and groups were joined on.
        self._layer: Any = None
        self._channel: str | None = None
        self._joined: set[str] = set()
        self._dirty: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._remote: asyncio.Queue[list[Event]] | None = None
        self._workers: ThreadPoolExecutor | None = None
        self._warned_open = False
        #: Events received from other processes.
        self.received = 0
        #: Remote events dropped because local listeners fell too far behind.
        self.dropped_remote = 0
        #: Times this process found that events of a namespace may not have reached it.
        self.losses = 0
        #: Events known to be lost (a jump in a publisher's numbering).
        self.lost_events = 0

    @property
    def running(self) -> bool:
        """Return whether the receiver is reading the channel layer."""
        return bool(self._tasks) and not self._tasks[0].done()

    @property
    def joined(self) -> frozenset[str]:
        """Return the groups this process is in."""
        return frozenset(self._joined)

    def start(self) -> None:
        """Start receiving, on the hub's loop; does nothing if running or without a layer."""
        if self.running or self._link.layer is None:
            return
        self._dispatcher.watch(self.groups_changed)
        loop = asyncio.get_running_loop()
        self._dirty = asyncio.Event()
        self._remote = asyncio.Queue(maxsize=events_settings.OUTBOX_SIZE)
        self._handing = asyncio.Lock()
        self._sequences.clear()
        self._watch = ConnectionWatch()
        self._tasks = [
            loop.create_task(self._receive_forever()),
            loop.create_task(self._refresh_groups()),
            loop.create_task(self._deliver_forever()),
            loop.create_task(self._watch_connections()),
        ]

    async def stop(self) -> None:
        """Stop receiving and leave the groups, on the hub's loop."""
        self._dispatcher.unwatch(self.groups_changed)
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        self._tasks = []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        self._remote = None
        self._dirty = None
        layer = self._layer
        if self._channel is not None and layer is not None:
            for group in self._joined:
                try:
                    await layer.group_discard(group, self._channel)
                except Exception as exc:
                    logger.debug("Leaving %s failed: %r", group, exc)
        self._joined = set()
        self._channel = None
        self._layer = None
        if self._workers is not None:
            self._workers.shutdown(wait=False)
            self._workers = None

    def forget(self) -> None:
        """Drop every task and channel without touching them (a new loop, or a forked child)."""
        self._tasks = []
        self._handing = asyncio.Lock()
        self._remote = None
        self._dirty = None
        self._channel = None
        self._layer = None
        self._joined = set()

    def groups_changed(self, *args: Any) -> None:
        """Ask the receiver to recompute which groups to be in (thread-safe)."""
        self._runner.call_soon(self._mark_dirty)

    def _mark_dirty(self) -> None:
        if self._dirty is not None:
            self._dirty.set()

    def wanted_namespaces(self) -> set[str]:
        """Return the namespaces this process needs events of."""
        found, open_pattern = self._dispatcher.namespaces()
        wanted = set(found) | set(events_settings.NAMESPACES) | self._subscribers.namespaces
        if open_pattern and not self._warned_open:
            self._warned_open = True
            open_listeners = [
                r.description for r in self._dispatcher.registrations if r.namespaces is None
            ]
            logger.warning(
                "Listener(s) %s use a pattern without a literal namespace; they receive "
                "events from other processes only in namespaces listed in "
                "CHANNELS_EVENTS['NAMESPACES'] or declared with namespaces=[...].",
                ", ".join(open_listeners),
            )
        return wanted

    async def wait_joined(self, namespace: str, timeout: float) -> bool:
        """Wait until this process is in ``namespace``'s group; return whether it is."""
        group = group_name(namespace)
        deadline = time.monotonic() + timeout
        # Polled: the caller may run on another loop than the hub's.
        while group not in self._joined:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def _sync_groups(self, *, rejoin: bool = False) -> None:
        assert self._channel is not None
        wanted = {group_name(ns) for ns in self.wanted_namespaces()}
        joined = set() if rejoin else self._joined
        for group in sorted(wanted - joined):
            await self._layer.group_add(group, self._channel)
        for group in sorted(self._joined - wanted):
            await self._layer.group_discard(group, self._channel)
        self._joined = wanted

    async def _refresh_groups(self) -> None:
        # Group membership expires after group_expiry; re-add well before.
        assert self._dirty is not None
        dirty = self._dirty
        period = max(1.0, float(getattr(self._link.layer, "group_expiry", 86400)) / 3)
        deadline = time.monotonic() + period
        while True:
            # Changes in between do not postpone the periodic rejoin.
            if await wait_set(dirty, max(0.0, deadline - time.monotonic())):
                dirty.clear()
                rejoin = False
            else:
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
        layer = self._layer = self._link.layer
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
                await asyncio.sleep(backoff(failures))
                continue
            if failures:
                logger.warning("The channel layer is reachable again; groups rejoined.")
                failures = 0
                # What was published while this process could not read is
                # not in its channel: its subscribers catch up first.
                await self._lost_everywhere()
            try:
                await self.handle(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Delivering remote events failed.")

    async def _watch_connections(self) -> None:
        # channels_redis's pub/sub layer subscribes again by itself after a
        # lost connection, without a word to its caller: look for that.
        while True:
            await asyncio.sleep(_WATCH_PERIOD)
            layer = self._layer
            if layer is not None and self._watch.reconnected(layer):
                logger.warning("The channel layer's subscriber connection was made again.")
                await self._lost_everywhere()

    async def _lost_everywhere(self) -> None:
        for namespace in sorted(self.joined_namespaces()):
            await self.lost(Loss(namespace, "reconnect"))

    def joined_namespaces(self) -> set[str]:
        """Return the namespaces whose groups this process is in."""
        prefix = group_name("")
        return {group[len(prefix) :] for group in self._joined if group.startswith(prefix)}

    async def lost(self, loss: Loss) -> None:
        """Report a loss, and have the namespace's websockets catch up (or get ``gap``)."""
        self.losses += 1
        if loss.missed:
            self.lost_events += loss.missed
        logger.warning("Lost channel-layer messages: %s.", loss.describe())
        for receiver, result in events_lost.send_robust(
            self._owner,
            namespace=loss.namespace,
            reason=loss.reason,
            missed=loss.missed,
            origin=loss.origin,
        ):
            if isinstance(result, Exception):
                logger.error("An events_lost receiver %r raised %r.", receiver, result)
        if loss.namespace in self._subscribers:
            async with self._handing:
                await self._subscribers.catch_up(loss.namespace, self._link.history, loss.after)

    async def handle(self, message: Any) -> None:
        """Take one channel-layer message: to the subscribers now, to listeners next."""
        events = self._events_of(message)
        if not events:
            await self._checkpoint(message)
            return
        numbered = self._numbered(message, events)
        if numbered is None:
            return
        events, loss = numbered
        if loss is not None:
            # Before this message: what was lost comes ahead of it.
            await self.lost(loss)
        self.received += len(events)
        metrics.received(events)
        trace_received(message, events)
        if self._subscribers:
            async with self._handing:
                await self._fan_out(events)
        heard = self._dispatcher.would_receive
        if not any(heard(event.name) for event in events):
            return  # nobody here listens: no hand-off to the delivery task
        if self._remote is None:
            await self.deliver(events)
        elif self._remote.full():
            self.dropped_remote += len(events)
            metrics.dropped("remote_queue_full", len(events))
            logger.error(
                "Local listeners are %d messages behind; %d remote event(s) dropped so far.",
                self._remote.qsize(),
                self.dropped_remote,
            )
        else:
            self._remote.put_nowait(events)

    async def _fan_out(self, events: list[Event]) -> None:
        start = 0
        for index in range(1, len(events) + 1):
            if index == len(events) or events[index].namespace != events[start].namespace:
                await self._subscribers.fan_out(events[start].namespace, events[start:index])
                start = index

    async def _checkpoint(self, message: Any) -> None:
        """Take a publisher's checkpoint (a batch of no events): how many it sent so far."""
        if not isinstance(message, dict) or message.get("events") != []:
            return
        origin, seq, namespace = message.get("origin"), message.get("seq"), message.get("namespace")
        if origin == self.origin or not isinstance(origin, str) or not isinstance(namespace, str):
            return
        if type(seq) is not int:
            return
        missed, _repeated, before = self._sequences.check(origin, namespace, seq, 0)
        if missed:
            await self.lost(Loss(namespace, "sequence", missed, origin, before))

    def _numbered(
        self, message: dict[str, Any], events: list[Event]
    ) -> tuple[list[Event], Loss | None] | None:
        """Check the message's ``seq``; return its events not seen before and any loss, or None."""
        seq = message.get("seq")
        origin = message.get("origin")
        if type(seq) is not int or not isinstance(origin, str):
            return events, None  # a publisher that does not number its messages
        count = len(message["events"]) if message["type"] == BATCH_TYPE else 1
        namespace = events[0].namespace
        missed, repeated, before = self._sequences.check(
            origin, namespace, seq, count, events[-1].id
        )
        if repeated:
            # Sent again by a publisher that could not tell it went through.
            events = events[repeated:]
            if not events:
                return None
        loss = Loss(namespace, "sequence", missed, origin, before) if missed else None
        return events, loss

    def _events_of(self, message: Any) -> list[Event]:
        if not isinstance(message, dict):
            logger.warning("Ignored a channel-layer message that is not a dict: %r", message)
            return []
        if message.get("origin") == self.origin:
            return []
        kind = message.get("type")
        envelopes: list[Any]
        if kind == EVENT_TYPE:
            envelopes = [message.get("event")]
        elif kind == BATCH_TYPE and isinstance(message.get("events"), list):
            envelopes = message["events"]
        else:
            logger.warning("Ignored a channel-layer message of unknown shape: %r", message)
            return []
        skips = message.get(SKIP_KEY)
        if not isinstance(skips, dict):
            skips = {}
        events = []
        for envelope in envelopes:
            try:
                event = Event.from_dict(envelope)
            except Exception as exc:
                logger.warning("Ignored a malformed event envelope %r: %s", envelope, exc)
                continue
            event.is_remote = True
            skipped = skips.get(event.id)
            if isinstance(skipped, list):
                event.skip_connections = frozenset(c for c in skipped if isinstance(c, str))
            events.append(event)
        return events

    async def _deliver_forever(self) -> None:
        # Listeners run here, apart from the receive loop: a slow listener
        # delays its own later events, never the reading of messages or the
        # websockets, which got their copy already.
        assert self._remote is not None
        remote = self._remote
        while True:
            events = await remote.get()
            try:
                await self.deliver(events)
            except Exception:
                logger.exception("Delivering remote events failed.")

    async def deliver(self, events: list[Event]) -> None:
        """Run local listeners for events from other processes, in publish order.

        The dispatcher's delivery routine applies the same rules as for local
        events; sync listeners run on one worker thread of the receiver's (so
        they may use the ORM and see events in order).
        """
        await deliver_traced(events, self._dispatcher.deliver, self._run_on_worker)

    async def _run_on_worker(self, func: Callable[[Calls], None], calls: Calls) -> None:
        if self._workers is None:
            self._workers = ThreadPoolExecutor(1, thread_name_prefix="channels-events-listeners")
        await asyncio.get_running_loop().run_in_executor(self._workers, _run_and_tidy, func, calls)


def _run_and_tidy(func: Callable[[Calls], None], calls: Calls) -> None:
    try:
        func(calls)
    finally:
        # This thread lives long: drop database connections past their age,
        # as Django does at the end of each request.
        close_old_connections()

"""The hub's sender: events leaving the process, queued from any thread, sent from the hub's loop.

Consecutive events of one namespace go out as one message (PROTOCOL.md
section 3), in dispatch order, each run recorded in the history first and
handed to this process's subscribers, and retried with backoff while the
layer is unreachable. A run the layer cannot encode is not retried: it is
split until the event at fault is found, which is logged and dropped.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

from ._conf import events_settings
from ._events import Event
from ._history import TIMEOUT as HISTORY_TIMEOUT
from ._layer import BATCH_TYPE, EVENT_TYPE, SKIP_KEY, LayerLink, group_name
from ._loop import LoopRunner, running_loop, wait_set
from ._metrics import metrics
from ._presence import is_presence_event
from ._subscribers import SubscriberIndex
from ._tracing import tag_message

__all__ = ["Sender", "backoff"]

logger = logging.getLogger("channels_events.hub")

_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0
# Seconds a caller that outruns the hub waits for room in a full outbox.
_BACKPRESSURE_WAIT = 1.0
#: Seconds of quiet after which each checkpoint follows the one before
#: (the first one second after the last message, the last about a minute
#: after it, within the core layer's default message expiry).
CHECKPOINTS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)


def backoff(failures: int) -> float:
    """Return the seconds to wait after the n-th failure in a row: 0.1, 0.2, ... up to 5."""
    return float(min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (failures - 1)))


def _encoding_error(layer: Any, message: dict[str, Any], error: Exception) -> Exception | None:
    """Return why ``layer`` cannot encode ``message``, or None if ``error`` is the layer's state.

    The channels_redis layers say how they encode (``serialize``): asking
    them tells a message they refuse from a Redis that does not answer. For
    other layers, the kind of error decides.
    """
    serialize = getattr(layer, "serialize", None)
    if serialize is None:
        encoding = (TypeError, ValueError, ArithmeticError, RecursionError)
        return error if isinstance(error, encoding) else None
    try:
        serialize(message)
    except Exception as exc:
        return exc
    return None


def _envelopes(events: list[Event]) -> tuple[list[Event], list[dict[str, Any]]]:
    """Return the events whose envelope could be built, and their envelopes."""
    good, envelopes = [], []
    for event in events:
        try:
            envelopes.append(event.envelope)
        except Exception:
            # One bad payload costs its own event, not the others in its run.
            logger.exception("Event %r cannot be published: its payload is unusable.", event.name)
        else:
            good.append(event)
    return good, envelopes


class Sender:
    """Queue events from any thread; send them, coalesced per namespace, from the hub's loop.

    ``start_loop()`` is called when an event is published and the hub has
    no loop yet (it starts one on a thread of its own).
    """

    def __init__(
        self,
        runner: LoopRunner,
        link: LayerLink,
        subscribers: SubscriberIndex,
        origin: str,
        start_loop: Callable[[], None],
    ) -> None:
        self._runner = runner
        self._link = link
        self._subscribers = subscribers
        self.origin = origin
        self._start_loop = start_loop
        self._outbox: collections.deque[tuple[str, Event]] = collections.deque()
        # A run taken from the outbox, recorded and fanned out, not yet sent:
        # its namespace and its envelopes, as one message or, once the layer
        # could not encode it, as the parts it was split into.
        self._pending: tuple[str, collections.deque[list[dict[str, Any]]]] | None = None
        # Event id -> the connections it skips (to_others), for the pending run.
        self._skips: dict[str, list[str]] = {}
        # The pending run's envelopes while the history has not taken them:
        # recorded again before each new attempt to send, so that events held
        # through an outage are in the history when Redis is back.
        self._unrecorded: list[dict[str, Any]] | None = None
        # Per namespace, the number of events this process sent to its group:
        # the next message's ``seq`` (see _loss.py).
        self._seq: dict[str, int] = {}
        # Namespaces sent to since their last checkpoint cycle ended.
        self._unconfirmed: set[str] = set()
        self._wake: asyncio.Event | None = None
        # Set while a wake-up is on its way or the sender is draining: other
        # publishers then skip the cross-thread wake-up.
        self._wake_pending = False
        self._idle = threading.Event()
        self._idle.set()
        self._room = threading.Event()
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        self._local: set[asyncio.Task[None]] = set()
        #: Events dropped because the outbox was full.
        self.dropped = 0
        #: Events sent without being recorded in the history.
        self.unrecorded = 0
        #: Attempts to record a run in the history that failed.
        self.record_failures = 0
        #: Events dropped because the channel layer could not encode them.
        self.unencodable = 0

    @property
    def queued(self) -> int:
        """Return how many events wait to be sent: queued, or in a run being sent."""
        pending = sum(len(part) for part in self._pending[1]) if self._pending else 0
        return len(self._outbox) + pending

    def start(self) -> None:
        """Start sending on the running loop (the hub's, newly bound)."""
        self._wake = asyncio.Event()
        self._wake_pending = False
        if self._outbox:
            self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._send_forever())

    async def stop(self) -> None:
        """Stop sending; queued events stay for :meth:`flush` or the next start."""
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def accepts(self, event: Event) -> bool:
        """Return whether :meth:`publish` would do anything with ``event``."""
        if self._link.known_off and not self._subscribers:
            return False  # publication is off and no local subscriber listens
        namespace = event.namespace
        if namespace in events_settings.LOCAL_NAMESPACES:
            return False
        return self._link.layer is not None or namespace in self._subscribers

    def publish(self, event: Event) -> None:
        """Queue ``event`` for the channel layer from any thread; never wait for the network."""
        namespace = event.namespace
        if namespace in events_settings.LOCAL_NAMESPACES:
            return
        if self._link.layer is None:
            # Nothing leaves the process, but its own subscribers get the event.
            if namespace in self._subscribers:
                self._fan_out_soon(namespace, event)
            return
        if not self._runner.alive:
            self._start_loop()
        outbox = self._outbox
        size = events_settings.OUTBOX_SIZE
        if len(outbox) >= size and not self._failing and not self._runner.is_current():
            # Backpressure, not loss: while the layer answers, a caller that
            # outruns the hub (a tight loop of dispatches) waits for room.
            self._room.clear()
            self._wake_pending = True
            self._runner.call_soon(self._wakeup)
            self._room.wait(_BACKPRESSURE_WAIT)
        if len(outbox) >= size:
            outbox.popleft()
            self.dropped += 1
            metrics.dropped("outbox_full")
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.error(
                    "The publication queue is full (OUTBOX_SIZE=%d): %d event(s) dropped so far.",
                    size,
                    self.dropped,
                )
        # The envelope is built on the hub's loop, off the caller's thread; the
        # event's id and time are already fixed, its payload must not change.
        outbox.append((namespace, event))
        self._idle.clear()
        if not self._wake_pending:
            self._wake_pending = True
            self._runner.call_soon(self._wakeup)

    def _fan_out_soon(self, namespace: str, event: Event) -> None:
        if self._runner.is_current():
            task = asyncio.get_running_loop().create_task(
                self._subscribers.fan_out(namespace, [event])
            )
            self._local.add(task)
            task.add_done_callback(self._local.discard)
        else:
            self._runner.submit(self._subscribers.fan_out(namespace, [event]))

    def _wakeup(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _send_forever(self) -> None:
        assert self._wake is not None
        failures = 0
        quiet = 0  # checkpoints sent since the last message
        while True:
            if self._unconfirmed and quiet < len(CHECKPOINTS):
                if not await wait_set(self._wake, CHECKPOINTS[quiet]):
                    quiet += 1
                    await self._checkpoint(last=quiet == len(CHECKPOINTS))
                    continue
            else:
                await self._wake.wait()
            quiet = 0
            self._wake.clear()
            while True:
                while self._outbox or self._pending:
                    try:
                        await self._send_some()
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        failures += 1
                        self._failing = True
                        self._room.set()
                        if failures == 1:
                            logger.warning(
                                "Publishing to the channel layer failed (%s); retrying.", exc
                            )
                        await asyncio.sleep(backoff(failures))
                        continue
                    if len(self._outbox) * 2 <= events_settings.OUTBOX_SIZE:
                        self._room.set()
                    if failures:
                        logger.warning("Publishing to the channel layer works again.")
                        failures = 0
                        self._failing = False
                # Clear the flag, then look again: a publisher appends before
                # it reads the flag, so one of us sees the other's event.
                self._wake_pending = False
                self._idle.set()
                if not self._outbox:
                    break
                self._idle.clear()
                self._wake_pending = True

    async def _send_some(self) -> None:
        """Send the oldest run of same-namespace events as one message."""
        if self._pending is None:
            # Pop (never iterate: other threads append meanwhile) one run of
            # consecutive events of one namespace.
            outbox = self._outbox
            namespace = outbox[0][0]
            limit = events_settings.BATCH_SIZE
            events: list[Event] = []
            while outbox and len(events) < limit and outbox[0][0] == namespace:
                events.append(outbox.popleft()[1])
            events, envelopes = _envelopes(events)
            self._pending = (namespace, collections.deque([envelopes]))
            self._skips = {
                event.id: sorted(event.skip_connections)
                for event in events
                if event.skip_connections
            }
            # Presence events are not kept: browsers never see them, and a
            # crowd arriving must not push real events out of the history.
            recorded = [e for e in envelopes if not is_presence_event(e["name"])]
            if recorded:
                # Recorded before anyone can receive them: a websocket that
                # subscribes with ``since`` reads the history after it starts
                # taking live events, so it misses nothing in between.
                self._unrecorded = recorded
                await self._record(namespace)
            # This process's subscribers get the events now; the channel
            # layer's echo of them is ignored.
            if namespace in self._subscribers:
                await self._subscribers.fan_out(namespace, events)
        else:
            namespace = self._pending[0]
            if self._unrecorded is not None:
                # A retry after an outage: the history is asked again first.
                await self._record(namespace)
        namespace, parts = self._pending
        layer = self._link.layer
        while parts:
            run = parts[0]
            if not run:
                parts.popleft()
                continue
            seq = self._seq.get(namespace, 0)
            message: dict[str, Any]
            if len(run) == 1:
                message = {"type": EVENT_TYPE, "event": run[0], "origin": self.origin, "seq": seq}
            else:
                message = {"type": BATCH_TYPE, "events": run, "origin": self.origin, "seq": seq}
            tag_message(message, run)
            if self._skips:
                # Beside the envelopes, never in them: no client sees these ids.
                skips = {e["id"]: self._skips[e["id"]] for e in run if e["id"] in self._skips}
                if skips:
                    message[SKIP_KEY] = skips
            try:
                await layer.group_send(group_name(namespace), message)
            except Exception as exc:
                error = _encoding_error(layer, message, exc)
                if error is None:
                    raise  # the layer is unreachable: the run stays pending, ahead of the queue
                parts.popleft()
                self._split(parts, run, error)
                continue
            # Numbered as sent: an event that could not be encoded takes no
            # number, so receivers see no gap for it.
            self._seq[namespace] = seq + len(run)
            self._unconfirmed.add(namespace)
            parts.popleft()
            metrics.published(run, namespace)
        self._pending = None
        metrics.outbox(len(self._outbox))
        self._skips = {}
        if self._unrecorded is not None:
            # Sent, but the history never took them: only catching up on them fails.
            self.unrecorded += len(self._unrecorded)
            self._unrecorded = None

    async def _checkpoint(self, *, last: bool) -> None:
        """Tell receivers how many events went to each namespace sent to lately.

        A receiver that lost this process's last messages (its channel was
        full, its subscription was cut off) has no later message to show
        it; this one does. It is a batch of no events, which receivers that
        do not read ``seq`` pass over. Sent a few times, further apart each
        time: a receiver that is stopped, or whose channel is full, gets a
        later one.
        """
        layer = self._link.layer
        for namespace in sorted(self._unconfirmed):
            message = {
                "type": BATCH_TYPE,
                "events": [],
                "origin": self.origin,
                "seq": self._seq.get(namespace, 0),
                "namespace": namespace,
            }
            try:
                await layer.group_send(group_name(namespace), message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("Sending a checkpoint to %r failed: %r", namespace, exc)
        if last:
            self._unconfirmed.clear()

    def _split(
        self,
        parts: collections.deque[list[dict[str, Any]]],
        run: list[dict[str, Any]],
        error: Exception,
    ) -> None:
        """Put the halves of a run the layer cannot encode back in front; drop a lone event."""
        if len(run) > 1:
            half = len(run) // 2
            parts.extendleft([run[half:], run[:half]])
            return
        # One event that cannot be encoded costs only itself, never the events
        # behind it: retrying it would hold them all back for ever.
        self.unencodable += 1
        envelope = run[0]
        logger.error(
            "Event %r (id %s) was dropped: the channel layer cannot encode it (%r).",
            envelope.get("name"),
            envelope.get("id"),
            error,
        )

    async def _record(self, namespace: str) -> None:
        """Record the pending run in the history; on failure it stays to be recorded again."""
        history = self._link.history
        envelopes = self._unrecorded
        if history is None or envelopes is None:
            self._unrecorded = None
            return
        try:
            # A slow history never holds up publication for long.
            await asyncio.wait_for(history.append(namespace, envelopes), HISTORY_TIMEOUT)
        except Exception as exc:
            # The events still go out; the history is asked again if sending
            # them fails too (an outage), and given up on once they are sent.
            self.record_failures += 1
            if self.record_failures == 1 or self.record_failures % 100 == 0:
                logger.warning(
                    "Recording events in the history failed (%r); %d attempt(s) failed so far.",
                    exc,
                    self.record_failures,
                )
            return
        self._unrecorded = None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued event was handed to the channel layer; return success.

        Safe from any thread but the hub's own loop. Used at process exit.
        """
        if timeout is None:
            timeout = float(events_settings.FLUSH_TIMEOUT)
        if not self.queued:
            return True
        loop = self._runner.loop
        if loop is not None and loop.is_running() and running_loop() is not loop:
            self._runner.call_soon(self._wakeup)
            return self._idle.wait(timeout)
        # The hub's loop is gone (the ASGI server stopped it): send from a new one.
        try:
            asyncio.run(asyncio.wait_for(self._drain_now(), timeout))
        except Exception as exc:
            logger.error("%d event(s) could not be published at exit: %s", self.queued, exc)
            return False
        return True

    async def _drain_now(self) -> None:
        try:
            while self._outbox or self._pending:
                await self._send_some()
        finally:
            history = self._link.history
            if history is not None:
                await history.close()  # its connections belong to this short-lived loop

"""The publishing half of the hub: an outbox drained onto the channel layer.

Events that leave the process are queued from any thread and sent from the
hub's loop, consecutive events of one namespace coalesced into one message
(PROTOCOL.md section 3), in dispatch order, retried with backoff while the
layer is unreachable.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from typing import Any

from ._conf import events_settings
from ._events import Event
from ._history import TIMEOUT as HISTORY_TIMEOUT
from ._history import History

__all__ = ["BATCH_TYPE", "EVENT_TYPE", "Outbox", "group_name"]

logger = logging.getLogger("channels_events.hub")

EVENT_TYPE = "channels_events.event"
BATCH_TYPE = "channels_events.events"
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0
_BACKPRESSURE_WAIT = 1.0
_LINGER_POLLS = 3
_LINGER_INTERVAL = 0.001


def group_name(namespace: str) -> str:
    """Return the channel-layer group of a namespace."""
    return f"{events_settings.GROUP_PREFIX}.{namespace}"


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


def _backoff(failures: int) -> float:
    """Return the seconds to wait after the n-th failure in a row: 0.1, 0.2, ... up to 5."""
    return float(min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (failures - 1)))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Outbox:
    """Queue events from any thread; send them from the hub's loop (mixed into Hub)."""

    # Set up by Hub.__init__ and Hub._bind.
    origin: str
    _loop: asyncio.AbstractEventLoop | None
    _outbox: collections.deque[tuple[str, Event]]
    _pending: tuple[str, list[dict[str, Any]]] | None
    _wake: asyncio.Event | None
    _wake_pending: bool
    _idle: threading.Event
    _room: threading.Event
    _failing: bool
    _by_namespace: dict[str, Any]
    _layer: Any
    _layer_version: int
    dropped: int
    unrecorded: int

    @property
    def layer(self) -> Any:  # pragma: no cover - defined by Hub
        raise NotImplementedError

    @property
    def history(self) -> History | None:  # pragma: no cover - defined by Hub
        raise NotImplementedError

    def start_thread(self, *, receive: bool = True) -> None:  # pragma: no cover - Hub's
        raise NotImplementedError

    async def _fan_out(self, namespace: str, events: list[Event]) -> None:  # pragma: no cover
        raise NotImplementedError

    def _track(self, task: asyncio.Task[None]) -> None:  # pragma: no cover - Hub's
        raise NotImplementedError

    def accepts(self, event: Event) -> bool:
        """Return whether :meth:`publish` would do anything with ``event``."""
        if (
            self._layer is None
            and not self._by_namespace
            and self._layer_version == events_settings.version
        ):
            return False  # publication is off and no local websocket listens
        namespace = event.namespace
        if namespace in events_settings.LOCAL_NAMESPACES:
            return False
        return self.layer is not None or namespace in self._by_namespace

    def publish(self, event: Event) -> None:
        """Queue ``event`` for the channel layer; never waits for the network.

        Called by the dispatcher for every event that leaves the process.
        """
        namespace = event.namespace
        if namespace in events_settings.LOCAL_NAMESPACES:
            return
        if self.layer is None:
            # No channel layer: nothing leaves the process, but this process's
            # own subscribers (websockets) still get the event.
            loop = self._loop
            if namespace in self._by_namespace and loop is not None and not loop.is_closed():
                coroutine = self._fan_out(namespace, [event])
                if _running_loop() is loop:
                    self._track(loop.create_task(coroutine))
                else:
                    asyncio.run_coroutine_threadsafe(coroutine, loop)
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            self.start_thread(receive=False)
            loop = self._loop
            assert loop is not None
        outbox = self._outbox
        size = events_settings.OUTBOX_SIZE
        if len(outbox) >= size and not self._failing and _running_loop() is not loop:
            # Backpressure, not loss: while the layer answers, a caller that
            # outruns the hub (a tight loop of dispatches) waits for room.
            self._room.clear()
            self._wake_pending = True
            loop.call_soon_threadsafe(self._wakeup)
            self._room.wait(_BACKPRESSURE_WAIT)
        if len(outbox) >= size:
            outbox.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.error(
                    "The publication queue is full (OUTBOX_SIZE=%d): %d event(s) dropped so far.",
                    events_settings.OUTBOX_SIZE,
                    self.dropped,
                )
        # The envelope is built on the hub's loop, off the caller's thread; the
        # event's id and time are already fixed, its payload must not change.
        outbox.append((namespace, event))
        self._idle.clear()
        if not self._wake_pending:
            self._wake_pending = True
            if _running_loop() is loop:
                self._wakeup()
            else:
                loop.call_soon_threadsafe(self._wakeup)

    def _wakeup(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _send_forever(self) -> None:
        assert self._wake is not None
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                while self._outbox or self._pending:
                    try:
                        await self._send_some()
                        if len(self._outbox) * 2 <= events_settings.OUTBOX_SIZE:
                            self._room.set()
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
                        await asyncio.sleep(_backoff(failures))
                        continue
                    if failures:
                        logger.warning("Publishing to the channel layer works again.")
                        failures = 0
                        self._failing = False
                self._idle.set()
                if self._outbox:
                    # Queued between the last check and set(): not idle after all.
                    self._idle.clear()
                    continue
                # Linger before sleeping: while events keep coming, publishers
                # find _wake_pending set and skip the cross-thread wake-up,
                # whose socket write would hand the GIL to this thread in the
                # middle of their dispatch().
                for _ in range(_LINGER_POLLS):
                    await asyncio.sleep(_LINGER_INTERVAL)
                    if self._outbox:
                        break
                if self._outbox or self._pending:
                    continue
                # Clear the flag first, then look again: a publisher appends
                # before it reads the flag, so one of us sees the other.
                self._wake_pending = False
                if not self._outbox:
                    break

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
            self._pending = (namespace, envelopes)
            if envelopes:
                # Recorded before anyone can receive them: a websocket that
                # subscribes with ``since`` reads the history after it starts
                # taking live events, so it misses nothing in between.
                await self._record(namespace, envelopes)
            # Local subscribers (this process's websockets) get the events
            # now; the channel layer's echo of them is ignored.
            if namespace in self._by_namespace:
                await self._fan_out(namespace, events)
        namespace, run = self._pending
        if not run:
            self._pending = None
            return
        message: dict[str, Any]
        if len(run) == 1:
            message = {"type": EVENT_TYPE, "event": run[0], "origin": self.origin}
        else:
            message = {"type": BATCH_TYPE, "events": run, "origin": self.origin}
        await self.layer.group_send(group_name(namespace), message)
        # Only now: a failed send keeps the run pending, ahead of the queue.
        self._pending = None

    async def _record(self, namespace: str, envelopes: list[dict[str, Any]]) -> None:
        history = self.history
        if history is None:
            return
        try:
            # A slow history never holds up publication for long.
            await asyncio.wait_for(history.append(namespace, envelopes), HISTORY_TIMEOUT)
        except Exception as exc:
            # The events still go out; only catching up on them may fail.
            self.unrecorded += len(envelopes)
            if self.unrecorded == len(envelopes) or self.unrecorded % 1000 < len(envelopes):
                logger.warning(
                    "Recording events in the history failed (%r); %d event(s) not recorded so far.",
                    exc,
                    self.unrecorded,
                )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued event was handed to the channel layer; return success.

        Safe from any thread but the hub's own loop. Used at process exit.
        """
        if timeout is None:
            timeout = float(events_settings.FLUSH_TIMEOUT)
        if not self._outbox and not self._pending:
            return True
        loop = self._loop
        if loop is not None and loop.is_running() and _running_loop() is not loop:
            if self._wake is not None:
                loop.call_soon_threadsafe(self._wakeup)
            return self._idle.wait(timeout)
        # The hub's loop is gone (the ASGI server stopped it): send from a new one.
        try:
            asyncio.run(asyncio.wait_for(self._drain_now(), timeout))
        except Exception as exc:
            logger.error("%d event(s) could not be published at exit: %s", len(self._outbox), exc)
            return False
        return True

    async def _drain_now(self) -> None:
        try:
            while self._outbox or self._pending:
                await self._send_some()
        finally:
            history = self.history
            if history is not None:
                await history.close()  # its connections belong to this short-lived loop

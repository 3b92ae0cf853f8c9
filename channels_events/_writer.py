"""The outgoing half of EventStreamConsumer: events from the hub to the socket.

Each connection keeps a bounded queue of frames. In the usual case (one event,
nothing queued) the frame goes straight to the server; otherwise frames wait
in order, a ``lagged`` marker stands where events were dropped, and a
subscription that catches up with ``since`` holds live events back behind
the replay from the history (PROTOCOL.md section 6).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._events import Event
from ._frames import event_frame, single_frame
from ._history import TIMEOUT as HISTORY_TIMEOUT
from ._names import ClientPattern
from ._policy import Policy

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["FrameDelivery"]

logger = logging.getLogger("channels_events.consumers")

# Seconds a catching-up subscription ignores live copies of replayed events.
REPLAY_OVERLAP = 60.0
# Seconds to wait for the hub to join a namespace's group before a subscribe
# with ``since`` is answered with ``gap`` (history reads: history.TIMEOUT).
JOIN_TIMEOUT = 5.0


class _Lagged:
    """A place in a connection's outbox where events were dropped, and how many."""

    __slots__ = ("dropped",)

    def __init__(self) -> None:
        self.dropped = 0


class FrameDelivery:
    """Queue and write a connection's event frames (mixed into EventStreamConsumer)."""

    # Set up by EventStreamConsumer.connect.
    scope: dict[str, Any]
    _by_namespace: dict[str, list[tuple[str, ClientPattern]]]
    _outbox: collections.deque[tuple[Event, tuple[str, ...]] | _Lagged]
    _buffer_size: int
    _writing: bool
    _held: int
    _replayed: dict[str, frozenset[str]]
    _lagged: _Lagged | None
    _wake: asyncio.Event
    _policy: Policy
    _loop: asyncio.AbstractEventLoop
    _hub: Hub
    # The ASGI send, set by Channels when the connection starts.
    base_send: Callable[[dict[str, Any]], Awaitable[None]]

    async def _send_frame(self, frame: dict[str, Any]) -> None:  # pragma: no cover - consumer's
        raise NotImplementedError

    def namespaces(self) -> Iterable[str]:
        """Return the namespaces this connection has subscriptions in."""
        return self._by_namespace.keys()

    def deliver(self, events: list[Event]) -> Awaitable[None] | None:
        """Queue the events that match a subscription; return the write for the hub to await.

        Called by the hub on its loop. When the hub runs on another loop, or
        the receive policy is async (it may be slow), this connection's own
        writer task sends instead, so nobody else waits for it.
        """
        if asyncio.get_running_loop() is not self._loop:
            self._loop.call_soon_threadsafe(self._queue_and_wake, events)
            return None
        if (
            len(events) == 1
            and not self._outbox
            and not self._writing
            and not self._held
            and not self._replayed
            and self._policy.receive is None
        ):
            # The usual case (one event, nothing waiting): no queue, no
            # coroutine of ours, the frame goes straight to the server.
            event = events[0]
            candidates = self._by_namespace.get(event.namespace)
            if not candidates:
                return None
            if len(candidates) == 1:
                # Connections with the same subscription share the verdict
                # and the frame: one dict look-up per connection.
                text = single_frame(event, candidates[0])
            else:
                ids = self._matching(event)
                text = None if ids is None else self._frame_or_none(event, ids)
            if text is None:
                return None
            return self.base_send({"type": "websocket.send", "text": text})
        if not self._queue(events):
            return None
        if self._writing or self._held or self._policy.receive_is_async:
            self._wake.set()
            return None
        return self._flush()

    def _queue_and_wake(self, events: list[Event]) -> None:
        if self._queue(events):
            self._wake.set()

    def _matching(self, event: Event) -> tuple[str, ...] | None:
        """Return the ids of this connection's subscriptions that ``event`` matches, if any."""
        candidates = self._by_namespace.get(event.namespace)
        if not candidates:
            return None
        name = event.name
        if len(candidates) == 1:
            sid, pattern = candidates[0]
            return (sid,) if pattern.matches(name) else None
        ids = tuple(sid for sid, pattern in candidates if pattern.matches(name))
        return ids or None

    def _queue(self, events: list[Event]) -> bool:
        outbox = self._outbox
        limit = self._buffer_size
        queued = False
        for event in events:
            ids = self._matching(event)
            if ids is not None and self._replayed:
                sent = self._replayed.get(event.id)
                if sent:
                    ids = tuple(i for i in ids if i not in sent) or None
            if ids is None:
                continue
            if len(outbox) >= limit:
                # A marker at the point of loss: the client hears ``lagged``
                # after the events queued before it, not ahead of them.
                if self._lagged is None:
                    self._lagged = _Lagged()
                    outbox.append(self._lagged)
                self._lagged.dropped += 1
                continue
            outbox.append((event, ids))
            queued = True
        return queued

    def _frame_or_none(self, event: Event, ids: tuple[str, ...]) -> str | None:
        try:
            return event_frame(event, ids)
        except Exception:
            # A payload that cannot be encoded costs only its own event.
            logger.exception("Event %r not sent to connection %s.", event.name, self)
            return None

    async def _flush(self) -> None:
        """Send every queued frame, in order."""
        self._writing = True
        policy = self._policy
        outbox = self._outbox
        try:
            while outbox and not self._held:
                item = outbox.popleft()
                if isinstance(item, _Lagged):
                    if item is self._lagged:
                        self._lagged = None
                    await self._send_frame({"type": "lagged", "dropped": item.dropped})
                    continue
                event, ids = item
                try:
                    if policy.receive is not None:
                        verdict = policy.may_receive_now(self.scope, event)
                        if not isinstance(verdict, bool):
                            verdict = await verdict
                        if not verdict:
                            continue
                    text = event_frame(event, ids)
                except Exception:
                    # One event's trouble (a policy that raises, a payload
                    # that cannot be encoded) never stops this connection.
                    logger.exception("Event %r not sent to connection %s.", event.name, self)
                    continue
                # Straight to the server: what send(text_data=...) would do,
                # without its two extra awaits per frame.
                await self.base_send({"type": "websocket.send", "text": text})
        finally:
            self._writing = False

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._writing and not self._held:
                try:
                    await self._flush()
                except Exception:
                    logger.exception("Writing to connection %s failed.", self)

    async def _catch_up(self, sid: str, compiled: ClientPattern, since: str, mark: int) -> None:
        found = await self._read_history(compiled.namespace, since)
        if found is None:
            # Nothing kept after ``since``, or no history at all: it is gone.
            await self._send_frame({"type": "gap", "subscription": sid, "since": since})
            return
        replay: list[tuple[Event, tuple[str, ...]]] = []
        position: dict[str, int] = {}
        for envelope in found:
            try:
                event = Event.from_dict(envelope)
            except Exception as exc:
                logger.warning("Skipped a malformed event in the history: %s", exc)
                continue
            if compiled.matches(event.name):
                position[event.id] = len(replay)
                replay.append((event, (sid,)))
        outbox = self._outbox
        # What arrived live meanwhile follows the replay. An event in both is
        # sent once, in the replay, listing every subscription it matched.
        live = [outbox.pop() for _ in range(len(outbox) - mark)][::-1]
        for item in live:
            if not isinstance(item, _Lagged) and item[0].id in position:
                index = position[item[0].id]
                event, ids = replay[index]
                replay[index] = (event, ids + tuple(i for i in item[1] if i not in ids))
                continue
        outbox.extend(replay)
        outbox.extend(
            item for item in live if isinstance(item, _Lagged) or item[0].id not in position
        )
        # A copy of a replayed event (or of ``since``) may still be on its way
        # here from another process: remember who got it, a while.
        sent = {event.id: frozenset(ids) for event, ids in replay}
        sent[since] = frozenset({sid})
        self._replayed.update(sent)
        self._loop.call_later(REPLAY_OVERLAP, self._forget_replayed, sent)

    async def _read_history(self, namespace: str, since: str) -> list[dict[str, Any]] | None:
        history = self._hub.history
        if history is None:
            return None
        try:
            # Only once this process hears the namespace's live events can
            # what the history holds and what arrives next meet without a hole.
            if not await self._hub.joined(namespace, JOIN_TIMEOUT):
                logger.warning("Not in the group of %r yet: answering since with gap.", namespace)
                return None
            return await asyncio.wait_for(history.after(namespace, since), HISTORY_TIMEOUT)
        except asyncio.TimeoutError:
            logger.warning("Reading the history of %r timed out: answering gap.", namespace)
        except Exception:
            logger.exception("Reading the history of %r failed: answering gap.", namespace)
        return None

    def _forget_replayed(self, sent: dict[str, frozenset[str]]) -> None:
        for event_id in sent:
            self._replayed.pop(event_id, None)

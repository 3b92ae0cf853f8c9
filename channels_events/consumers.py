"""Websocket and Channels consumers that receive events through the hub.

``EventStreamConsumer`` speaks the browser protocol of PROTOCOL.md sections
4-5. ``EventConsumerMixin`` lets any Channels consumer declare
``listens_for`` and receive events as method calls. Both register with the
process's hub instead of joining channel-layer groups one connection at a
time, so a daphne process holds the same Redis connections for one browser
or ten thousand, and each event is encoded to JSON once per process.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Iterable
from typing import Any, ClassVar

from channels.generic.websocket import AsyncWebsocketConsumer

from .conf import events_settings
from .dispatch import get_dispatcher
from .events import Event
from .exceptions import ChannelsEventsError
from .history import TIMEOUT as HISTORY_TIMEOUT
from .hub import get_hub
from .mixins import EventConsumerMixin
from .names import ClientPattern, compile_client_pattern
from .outbox import envelope_of
from .policy import get_policy

__all__ = ["EventConsumerMixin", "EventStreamConsumer", "encoded_envelope"]

logger = logging.getLogger("channels_events.consumers")

PROTOCOL_VERSION = 1
CLOSE_POLICY = 4008
CLOSE_TOO_BIG = 1009
# Seconds a catching-up subscription ignores live copies of replayed events.
REPLAY_OVERLAP = 60.0
# Seconds to wait for the hub to join a namespace's group before a subscribe
# with ``since`` is answered with ``gap`` (history reads: history.TIMEOUT).
JOIN_TIMEOUT = 5.0
# A frame this many times over the size limit closes the connection.
_FAR_TOO_LARGE = 4
_MAX_ID_LENGTH = 64
# ASCII-only output is valid UTF-8 whatever the strings hold (even lone
# surrogates a client sent as escapes); NaN and infinities are not JSON.
_JSON = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)


def _peek_id(text: str | None) -> str | None:
    """Return the ``id`` of a frame, if it is a small JSON object that has a string one."""
    if text is None or len(text) > events_settings.MAX_FRAME_BYTES:
        return None
    try:
        message = _parse(text)
    except (ValueError, RecursionError):
        return None
    sid = message.get("id") if isinstance(message, dict) else None
    return sid if isinstance(sid, str) else None


class _Lagged:
    """A place in a connection's outbox where events were dropped, and how many."""

    __slots__ = ("dropped",)

    def __init__(self) -> None:
        self.dropped = 0


def _event_frame(event: Event, ids: tuple[str, ...]) -> str:
    # Connections whose matching subscription ids are the same (typically
    # all of them) share one frame per event.
    frames: dict[tuple[str, ...], str] | None = event.__dict__.get("_frames")
    if frames is None:
        frames = event.__dict__["_frames"] = {}
    text = frames.get(ids)
    if text is None:
        text = frames[ids] = (
            '{"type":"event","subscriptions":'
            + _JSON.encode(list(ids))
            + ',"event":'
            + encoded_envelope(event)
            + "}"
        )
    return text


def _single_frame(event: Event, candidate: tuple[str, ClientPattern]) -> str | None:
    """Return the frame for a connection with one subscription in the event's namespace.

    None when the subscription does not match, or the event cannot be
    encoded (logged once per event).
    """
    verdicts: dict[tuple[str, ClientPattern], str | None] | None = event.__dict__.get("_single")
    if verdicts is None:
        verdicts = event.__dict__["_single"] = {}
    try:
        return verdicts[candidate]
    except KeyError:
        pass
    sid, pattern = candidate
    text = None
    if pattern.matches(event.name):
        try:
            text = _event_frame(event, (sid,))
        except Exception:
            logger.exception("Event %r could not be encoded; not sent.", event.name)
    verdicts[candidate] = text
    return text


def encoded_envelope(event: Event) -> str:
    """Return the event's envelope as JSON, encoded once per event per process."""
    encoded: str | None = event.__dict__.get("_encoded")
    if encoded is None:
        encoded = event.__dict__["_encoded"] = _JSON.encode(envelope_of(event))
    return encoded


class ProtocolError(ChannelsEventsError):
    """Raised inside the consumer to answer a client message with an error frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class EventStreamConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """Stream events to a browser over a websocket (PROTOCOL.md sections 4-5).

    Route it at ``/ws/events/`` behind ``AllowedHostsOriginValidator`` and
    ``AuthMiddlewareStack``. What a connection may do is decided by the
    policies in settings (see ``channels_events.policy``); with none
    configured nothing is open. Limits come from settings: ``MAX_FRAME_BYTES``,
    ``MAX_SUBSCRIPTIONS``, ``MAX_PATTERN_LENGTH``, ``RATE_LIMIT`` and
    ``RATE_BURST`` (messages per second and bucket size), ``BUFFER_SIZE``
    (frames waiting to be written before the client is told it ``lagged``).
    """

    # Events arrive through the hub, so a connection needs no channel-layer
    # channel of its own: none means no per-connection receive on Redis.
    # Subclasses that also want group messages can set an alias back.
    channel_layer_alias: str | None = None

    async def connect(self) -> None:
        """Accept, greet with ``welcome``, and register with the hub."""
        self.connection_id = uuid.uuid4().hex
        self.subscriptions: dict[str, ClientPattern] = {}
        self._by_namespace: dict[str, list[tuple[str, ClientPattern]]] = {}
        self._outbox: collections.deque[tuple[Event, tuple[str, ...]] | _Lagged] = (
            collections.deque()
        )
        self._buffer_size = events_settings.BUFFER_SIZE
        self._writing = False
        # Frames are held back while a subscription catches up with ``since``.
        self._held = 0
        # Event id -> the subscriptions a replay from the history already sent
        # it to: a live copy is not sent to them again (for REPLAY_OVERLAP s).
        self._replayed: dict[str, frozenset[str]] = {}
        self._lagged: _Lagged | None = None
        self._wake = asyncio.Event()
        self._tokens = float(events_settings.RATE_BURST)
        self._refilled = time.monotonic()
        self._strikes = 0
        self._policy = get_policy()
        self._loop = asyncio.get_running_loop()
        self._hub = get_hub()
        await self._hub.attach()
        await self.accept()
        await self._send_frame(
            {"type": "welcome", "protocol": PROTOCOL_VERSION, "connection": self.connection_id}
        )
        self._writer = self._loop.create_task(self._write_forever())

    async def disconnect(self, code: int) -> None:
        """Unregister from the hub and stop writing."""
        self._stop()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Run the consumer; unregister from the hub however it ends.

        A server that gives up on a connection cancels it without a
        ``websocket.disconnect``: the hub must not keep feeding it.
        """
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stop()

    def _stop(self) -> None:
        hub = getattr(self, "_hub", None)
        if hub is not None:
            hub.remove_subscriber(self)
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.cancel()

    # -- the hub's side ----------------------------------------------------

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
                text = _single_frame(event, candidates[0])
            else:
                ids = self._matching(event)
                text = None if ids is None else self._frame_or_none(event, ids)
            if text is None:
                return None
            return self.base_send({"type": "websocket.send", "text": text})  # type: ignore[no-any-return]
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
            return _event_frame(event, ids)
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
                    text = _event_frame(event, ids)
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

    # -- the client's side -------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Handle one client frame; a bad one gets an ``error`` and changes nothing."""
        if not self._take_token():
            self._strikes += 1
            if self._strikes > events_settings.RATE_BURST:
                await self.close(code=CLOSE_POLICY)
                return
            await self._error("rate_limited", "Too many messages; slow down.", _peek_id(text_data))
            return
        self._strikes = 0
        if text_data is None:
            await self._error("bad_request", "Binary frames are not part of the protocol.")
            return
        limit = events_settings.MAX_FRAME_BYTES
        size = len(text_data.encode()) if len(text_data) * 4 > limit else len(text_data)
        if size > limit:
            if size > limit * _FAR_TOO_LARGE:
                await self.close(code=CLOSE_TOO_BIG)
                return
            await self._error("too_large", f"Frames are limited to {limit} bytes; got {size}.")
            return
        try:
            message = _parse(text_data)
        except (ValueError, RecursionError):
            await self._error("bad_json", "The frame is not valid JSON.")
            return
        reply_id = message.get("id") if isinstance(message, dict) else None
        if not isinstance(reply_id, str):
            reply_id = None
        try:
            if not isinstance(message, dict):
                raise ProtocolError("bad_request", "A frame must be a JSON object.")
            kind = message.get("type")
            handler = self._handlers.get(kind) if isinstance(kind, str) else None
            if handler is None:
                raise ProtocolError(
                    "bad_request",
                    f"Unknown or missing type {kind!r}; expected one of "
                    f"{', '.join(sorted(self._handlers))}.",
                )
            await handler(self, message)
        except ProtocolError as error:
            await self._error(error.code, error.message, reply_id)

    def _take_token(self) -> bool:
        now = time.monotonic()
        rate = float(events_settings.RATE_LIMIT)
        burst = float(events_settings.RATE_BURST)
        self._tokens = min(burst, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def _subscribe(self, message: dict[str, Any]) -> None:
        sid = _field(message, "id", str)
        if not 1 <= len(sid) <= _MAX_ID_LENGTH:
            raise ProtocolError("bad_request", "id must be 1-64 characters.")
        pattern = _field(message, "pattern", str)
        since = message.get("since")
        if since is not None and not isinstance(since, str):
            raise ProtocolError("bad_request", "since must be an event id (a string).")
        if sid in self.subscriptions:
            raise ProtocolError("duplicate_id", f"Subscription id {sid!r} is already in use.")
        if len(self.subscriptions) >= events_settings.MAX_SUBSCRIPTIONS:
            raise ProtocolError(
                "too_many_subscriptions",
                f"At most {events_settings.MAX_SUBSCRIPTIONS} subscriptions per connection.",
            )
        try:
            compiled = compile_client_pattern(pattern, events_settings.MAX_PATTERN_LENGTH)
        except ChannelsEventsError as exc:
            raise ProtocolError("invalid_pattern", str(exc)) from None
        allowed = await self._ask(self._policy.may_subscribe, compiled.namespace, pattern)
        if not allowed:
            raise ProtocolError(
                "forbidden", f"Subscribing to namespace {compiled.namespace!r} is not allowed."
            )
        if sid in self.subscriptions:  # taken while the policy was consulted
            raise ProtocolError("duplicate_id", f"Subscription id {sid!r} is already in use.")
        self.subscriptions[sid] = compiled
        self._by_namespace.setdefault(compiled.namespace, []).append((sid, compiled))
        subscribed = {"type": "subscribed", "id": sid, "namespace": compiled.namespace}
        if since is None:
            self._hub.add_subscriber(self)
            await self._send_frame(subscribed)
            return
        # Catching up: live events queue from now on, held back until the
        # history after ``since`` is in front of them (PROTOCOL.md section 6).
        mark = len(self._outbox)
        # Events lost from now on are reported after the replay, not counted
        # into a ``lagged`` marker queued ahead of it.
        self._lagged = None
        self._held += 1
        try:
            self._hub.add_subscriber(self)
            await self._send_frame(subscribed)
            await self._catch_up(sid, compiled, since, mark)
        finally:
            self._held -= 1
            if self._outbox:
                self._wake.set()

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

    async def _unsubscribe(self, message: dict[str, Any]) -> None:
        sid = _field(message, "id", str)
        compiled = self.subscriptions.pop(sid, None)
        if compiled is None:
            raise ProtocolError("unknown_subscription", f"No subscription with id {sid!r}.")
        if self._replayed:
            # A later subscription may reuse the id: it has seen nothing yet.
            self._replayed = {
                event_id: sids - {sid} for event_id, sids in self._replayed.items() if sids != {sid}
            }
        remaining = [entry for entry in self._by_namespace[compiled.namespace] if entry[0] != sid]
        if remaining:
            self._by_namespace[compiled.namespace] = remaining
        else:
            del self._by_namespace[compiled.namespace]
        self._hub.add_subscriber(self)
        await self._send_frame({"type": "unsubscribed", "id": sid})

    async def _ping(self, message: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"type": "pong"}
        if "id" in message:
            reply["id"] = message["id"]
        await self._send_frame(reply)

    async def _emit(self, message: dict[str, Any]) -> None:
        name = _field(message, "name", str)
        payload = _field(message, "payload", dict)
        try:
            event = Event(name, payload)
        except ChannelsEventsError as exc:
            raise ProtocolError("bad_request", str(exc)) from None
        if not await self._ask(self._policy.may_emit, name, payload):
            raise ProtocolError("forbidden", f"Emitting {name!r} is not allowed.")
        await get_dispatcher().adispatch(event)
        reply: dict[str, Any] = {"type": "emitted", "id": event.id}
        await self._send_frame(reply)

    _handlers: ClassVar[dict[str, Any]] = {
        "subscribe": _subscribe,
        "unsubscribe": _unsubscribe,
        "ping": _ping,
        "emit": _emit,
    }

    async def _ask(self, question: Any, *args: Any) -> bool:
        try:
            return bool(await question(self.scope, *args))
        except Exception:
            logger.exception("A channels-events policy raised; treating it as a refusal.")
            return False

    async def _error(self, code: str, message: str, reply_id: str | None = None) -> None:
        frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if reply_id is not None:
            frame["id"] = reply_id
        await self._send_frame(frame)

    async def _send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=_JSON.encode(frame))


def _field(message: dict[str, Any], key: str, kind: type) -> Any:
    value = message.get(key)
    if not isinstance(value, kind):
        raise ProtocolError(
            "bad_request", f"{message.get('type')} needs {key!r} as a {kind.__name__}."
        )
    return value

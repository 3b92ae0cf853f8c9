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
import logging
import time
import uuid
from typing import Any, ClassVar

from channels.generic.websocket import AsyncWebsocketConsumer

from ._conf import events_settings
from ._dispatcher import get_dispatcher
from ._events import Event
from ._frames import peek_id
from ._hub import get_hub
from ._json import encode, parse
from ._mixin import EventConsumerMixin
from ._names import ClientPattern, compile_client_pattern
from ._policy import get_policy
from ._writer import FrameDelivery, _Lagged
from .exceptions import ChannelsEventsError, ProtocolError

__all__ = ["EventConsumerMixin", "EventStreamConsumer"]

logger = logging.getLogger("channels_events.consumers")

PROTOCOL_VERSION = 1
CLOSE_POLICY = 4008
CLOSE_TOO_BIG = 1009
# A frame this many times over the size limit closes the connection.
_FAR_TOO_LARGE = 4
_MAX_ID_LENGTH = 64


class EventStreamConsumer(FrameDelivery, AsyncWebsocketConsumer):  # type: ignore[misc]
    """Stream events to a browser over a websocket (PROTOCOL.md sections 4-5).

    Route it at ``/ws/events/`` behind ``AllowedHostsOriginValidator`` and
    ``AuthMiddlewareStack``. What a connection may do is decided by the
    policies in settings (see ``channels_events._policy``); with none
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
        # it to: a live copy is not sent to them again (for delivery.REPLAY_OVERLAP s).
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

    # -- the client's side -------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Handle one client frame; a bad one gets an ``error`` and changes nothing."""
        if not self._take_token():
            self._strikes += 1
            if self._strikes > events_settings.RATE_BURST:
                await self.close(code=CLOSE_POLICY)
                return
            await self._error("rate_limited", "Too many messages; slow down.", peek_id(text_data))
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
            message = parse(text_data)
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
        await self.send(text_data=encode(frame))


def _field(message: dict[str, Any], key: str, kind: type) -> Any:
    value = message.get(key)
    if not isinstance(value, kind):
        raise ProtocolError(
            "bad_request", f"{message.get('type')} needs {key!r} as a {kind.__name__}."
        )
    return value

"""The last events of each namespace, so that a browser can catch up (PROTOCOL.md section 6).

The hub records every event it publishes before anyone can receive it; a
websocket subscribing with ``since`` reads what came after that event id.
With a ``channels_redis`` layer the history is a Redis stream per namespace,
shared by every process; with ``InMemoryChannelLayer`` it lives in the
process; with any other layer, or ``HISTORY_SIZE`` 0, none is kept and every
``since`` is answered with ``gap``. Either way a namespace keeps at most
``HISTORY_SIZE`` events and ``HISTORY_BYTES`` bytes of them: the oldest go
first.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import logging
from typing import Any

from ._conf import DEFAULTS
from ._events import Event
from ._json import encode
from ._redis import LoopClients

__all__ = [
    "TIMEOUT",
    "History",
    "MemoryHistory",
    "RedisHistory",
    "alatest_event_id",
    "history_for",
    "latest_event_id",
    "recorded_events",
]

logger = logging.getLogger("channels_events.history")

Envelope = dict[str, Any]
# Entries read from Redis per round trip when looking for ``since``.
_CHUNK = 200
#: Seconds a history write or read may take: past it, events go out without
#: being recorded, and a subscriber catching up gets ``gap``.
TIMEOUT = 2.0


class History(abc.ABC):
    """Where published events are kept, oldest first: the last ``size`` per namespace.

    Fewer when they would take more than ``max_bytes``: the oldest go first.
    """

    def __init__(self, size: int, max_bytes: int = DEFAULTS["HISTORY_BYTES"]) -> None:
        self.size = size
        # Reads of the newest id under way, by loop and namespace (see newest()).
        self._reading: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Future[str | None]] = {}
        self.max_bytes = max_bytes

    @abc.abstractmethod
    async def append(self, namespace: str, envelopes: list[Envelope]) -> None:
        """Record a run of published events of one namespace, in publish order."""

    @abc.abstractmethod
    async def after(self, namespace: str, since: str) -> list[Envelope] | None:
        """Return the events recorded after the one with id ``since``, oldest first.

        None means ``since`` is not among the last ``size`` events recorded:
        what came after it is unknown.
        """

    @abc.abstractmethod
    async def latest(self, namespace: str) -> str | None:
        """Return the id of the newest event recorded in ``namespace``, or None if there is none."""

    async def newest(self, namespace: str) -> str | None:
        """Return :meth:`latest`, sharing one read among the callers that ask while it runs.

        A burst of subscriptions (a server restart brings every client back
        at once) costs one read and one Redis connection, not one each. A
        read that began before a caller asked is as good as its own: an
        older id only means that a client resuming from it is sent a few
        events again from before its subscription, never that it misses one.
        """
        key = (asyncio.get_running_loop(), namespace)
        reading = self._reading.get(key)
        if reading is None:
            reading = self._reading[key] = asyncio.ensure_future(self.latest(namespace))
            reading.add_done_callback(lambda _: self._reading.pop(key, None))
        # Shielded: a caller that gives up does not cancel the others' read.
        return await asyncio.shield(reading)

    async def close(self) -> None:  # noqa: B027 - most histories hold no connection
        """Let go of this event loop's connections, if any."""


def _unique(envelopes: list[Envelope], since: str) -> list[Envelope]:
    # A run the hub had to record again may be there twice: keep the first.
    seen = {since}
    found = []
    for envelope in envelopes:
        if envelope["id"] not in seen:
            seen.add(envelope["id"])
            found.append(envelope)
    return found


class MemoryHistory(History):
    """History kept in this process (for ``InMemoryChannelLayer``: one process anyway).

    An event's size is its envelope as JSON.
    """

    def __init__(self, size: int, max_bytes: int = DEFAULTS["HISTORY_BYTES"]) -> None:
        super().__init__(size, max_bytes)
        # Namespace -> its events and their sizes, oldest first; and their total.
        self._kept: dict[str, collections.deque[tuple[Envelope, int]]] = {}
        self._bytes: dict[str, int] = {}

    async def append(self, namespace: str, envelopes: list[Envelope]) -> None:
        kept = self._kept.get(namespace)
        if kept is None:
            kept = self._kept[namespace] = collections.deque()
        total = self._bytes.get(namespace, 0)
        for envelope in envelopes:
            size = len(encode(envelope))
            kept.append((envelope, size))
            total += size
        while kept and (len(kept) > self.size or total > self.max_bytes):
            total -= kept.popleft()[1]
        self._bytes[namespace] = total

    async def latest(self, namespace: str) -> str | None:
        kept = self._kept.get(namespace)
        return str(kept[-1][0]["id"]) if kept else None

    async def after(self, namespace: str, since: str) -> list[Envelope] | None:
        kept = [envelope for envelope, _size in self._kept.get(namespace, ())]
        for index in range(len(kept) - 1, -1, -1):
            if kept[index]["id"] == since:
                return _unique(kept[index + 1 :], since)
        return None


# Record a run of events in a namespace's stream, one entry per event, and
# trim the oldest while there are more than ARGV[1] entries or more than
# ARGV[2] bytes of events (their total is kept in KEYS[2]). Atomic, so
# processes recording at once keep one count.
_APPEND = """
local stream, total_key = KEYS[1], KEYS[2]
local size, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local total = tonumber(redis.call('GET', total_key) or '0')
for i = 3, #ARGV, 2 do
  redis.call('XADD', stream, '*', 'id', ARGV[i], 'event', ARGV[i + 1])
  total = total + #ARGV[i + 1]
end
local count = redis.call('XLEN', stream)
while count > 0 and (count > size or total > limit) do
  -- Read about as many old entries as must go, not more: a full stream
  -- drops one old entry per new one, and reading 100 for it was most of
  -- what an append cost. Over the bytes, guess from the average size.
  local over = count - size
  if total > limit then
    over = math.max(over, math.ceil((total - limit) * count / total))
  end
  local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', math.min(100, math.max(1, over)))
  if #oldest == 0 then break end
  for _, entry in ipairs(oldest) do
    if count <= size and total <= limit then break end
    local fields = entry[2]
    for j = 1, #fields, 2 do
      if fields[j] == 'event' then total = total - #fields[j + 1] end
    end
    redis.call('XDEL', stream, entry[1])
    count = count - 1
  end
end
if count == 0 then total = 0 end
redis.call('SET', total_key, total)
return count
"""


class RedisHistory(History):
    """History in a Redis stream per namespace, ``<prefix>:history:<namespace>``.

    One stream entry per event: its ``id`` and its envelope as msgpack
    (``event``). A script appends a run and trims the oldest entries while
    the stream holds more than ``size`` events or more than ``max_bytes``
    bytes of them (kept in ``<stream key>:bytes``). Entries of the older
    layout (a run per entry, ``ids`` and ``events``) are still read. Each
    event loop gets its own client.
    """

    def __init__(
        self,
        host: dict[str, Any],
        prefix: str,
        size: int,
        max_bytes: int = DEFAULTS["HISTORY_BYTES"],
    ) -> None:
        super().__init__(size, max_bytes)
        self.host = host
        self.prefix = prefix
        self._redis = LoopClients(host, {"append": _APPEND})

    def key(self, namespace: str) -> str:
        """Return the stream key of ``namespace``."""
        return f"{self.prefix}:history:{namespace}"

    async def close(self) -> None:
        await self._redis.close()

    async def append(self, namespace: str, envelopes: list[Envelope]) -> None:
        # msgpack (which channels_redis uses too): several times faster than JSON.
        import msgpack  # type: ignore[import-untyped]

        args: list[Any] = [self.size, self.max_bytes]
        for envelope in envelopes:
            args.append(envelope["id"])
            args.append(msgpack.packb(envelope))
        key = self.key(namespace)
        await self._redis.script("append")(keys=[key, key + ":bytes"], args=args)

    async def latest(self, namespace: str) -> str | None:
        import msgpack

        newest = await self._redis.client().xrevrange(
            self.key(namespace), max="+", min="-", count=1
        )
        if not newest:
            return None
        events = _entry_events(newest[0][1], msgpack)
        return events[0][0] if events else None

    async def after(self, namespace: str, since: str) -> list[Envelope] | None:
        import msgpack

        client = self._redis.client()
        key = self.key(namespace)
        newer: list[Any] = []  # newest first: msgpack bytes, or envelopes of old entries
        top = "+"
        while len(newer) < self.size:
            chunk = await client.xrevrange(key, max=top, min="-", count=_CHUNK)
            for _stream_id, fields in chunk:
                for event_id, event in _entry_events(fields, msgpack):
                    if event_id == since:
                        found = [
                            msgpack.unpackb(e) if isinstance(e, bytes) else e
                            for e in reversed(newer)
                        ]
                        return _unique(found, since)
                    newer.append(event)
                    # Only the newest ``size`` events count, as in memory.
                    if len(newer) >= self.size:
                        return None
            if len(chunk) < _CHUNK:
                return None
            top = "(" + chunk[-1][0].decode()
        return None


def _entry_events(fields: dict[bytes, bytes], msgpack: Any) -> list[tuple[str, Any]]:
    """Return the (id, event) pairs of one stream entry, newest first."""
    event_id = fields.get(b"id")
    if event_id is not None:
        return [(event_id.decode(), fields[b"event"])]
    # The older layout: a run of events in one entry.
    ids = msgpack.unpackb(fields[b"ids"])
    events = msgpack.unpackb(fields[b"events"])
    return list(zip(reversed(ids), reversed(events), strict=False))


def recorded_events(envelopes: list[Envelope]) -> list[Event]:
    """Return the events of envelopes read from a history, leaving out malformed ones.

    A history may hold what another version wrote, or what was damaged: one
    bad entry costs only itself, with a warning.
    """
    events = []
    for envelope in envelopes:
        try:
            events.append(Event.from_dict(envelope))
        except Exception as exc:
            logger.warning("Skipped a malformed event in the history: %s", exc)
    return events


def history_for(
    alias: str | None, size: int, max_bytes: int = DEFAULTS["HISTORY_BYTES"]
) -> History | None:
    """Return the history that goes with the channel layer ``alias``, or None."""
    from django.conf import settings

    if not alias or size <= 0:
        return None
    config = getattr(settings, "CHANNEL_LAYERS", {}).get(alias)
    if not config:
        return None
    backend = str(config.get("BACKEND", ""))
    if backend == "channels.layers.InMemoryChannelLayer":
        return MemoryHistory(size, max_bytes)
    if backend.startswith("channels_redis."):
        from channels_redis.utils import decode_hosts

        layer_config = config.get("CONFIG", {})
        # With several hosts (sharding), the first one keeps the history.
        host = decode_hosts(layer_config.get("hosts"))[0]
        return RedisHistory(host, layer_config.get("prefix", "asgi"), size, max_bytes)
    return None


async def alatest_event_id(namespace: str) -> str | None:
    """Return the id of the newest recorded event of ``namespace``, or None.

    Render it into a page beside the state the page shows (a snapshot read
    from the database), and have the page subscribe with ``since`` set to
    it: every event recorded after it reaches the page, none is lost
    between the render and the subscription (PROTOCOL.md section 6b).
    None when no history is kept (``HISTORY_SIZE`` 0, or a layer without
    one) or nothing was recorded yet; a page then subscribes without
    ``since``. Events dispatched before this call but still on their way
    to the history (a published event is recorded on the hub's loop, soon
    after its transaction commits) are not counted yet: they come after.
    """
    from ._hub import get_hub

    hub = get_hub()
    history = hub.history
    if history is None:
        return None
    if not hub.runner.alive:
        # A process whose hub has not started: nothing of its own was
        # recorded, so read the (shared) history once from here.
        return await _read_latest_once(history, namespace)
    return await hub.runner.run(lambda: history.newest(namespace), TIMEOUT)


async def _read_latest_once(history: History, namespace: str) -> str | None:
    """Read the latest id on a loop the hub does not run on; close what the read opened."""
    try:
        return await asyncio.wait_for(history.latest(namespace), TIMEOUT)
    finally:
        await history.close()


def latest_event_id(namespace: str) -> str | None:
    """Return the id of the newest recorded event of ``namespace``, or None (sync twin).

    See :func:`alatest_event_id`. For sync code (a Django view); on an event
    loop's thread await :func:`alatest_event_id` instead.
    """
    from ._hub import get_hub
    from ._loop import running_loop

    if running_loop() is not None:
        raise RuntimeError(
            "latest_event_id() blocks, so it cannot run on an event loop's thread; "
            "await alatest_event_id() there."
        )
    hub = get_hub()
    history = hub.history
    if history is None:
        return None
    future = hub.runner.submit(history.latest(namespace))
    if future is not None:
        return future.result(TIMEOUT)
    return asyncio.run(_read_latest_once(history, namespace))

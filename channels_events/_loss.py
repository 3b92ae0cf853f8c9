"""Lost channel-layer messages: noticing them, and telling the process.

Every message a publisher sends to a namespace's group carries ``seq``, the
number of events that publisher (its ``origin``) sent to that namespace
before: a message of three events with ``seq`` 7 holds events 7, 8 and 9.
:class:`Sequences` remembers, per origin and namespace, which number comes
next; a message further on means messages in between were lost, one behind
means a copy already seen. A layer connection that was lost and made again
(:class:`ConnectionWatch`) may have lost messages without any later message
showing it. Either way the receiver reports a :class:`Loss`: the
``events_lost`` signal, the hub's counters, and a catch-up of the process's
websockets from the history.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from typing import Any

from django.dispatch import Signal

__all__ = ["ConnectionWatch", "Loss", "Sequences", "events_lost"]

#: Sent, on the hub's loop, when a process found that events of a namespace
#: may not have reached it. ``sender`` is the hub; the keyword arguments are
#: ``namespace``, ``reason`` (``"sequence"``: a publisher's numbering jumped;
#: ``"reconnect"``: the layer connection was lost and made again), ``missed``
#: (the number of events known to be lost, or None when unknown) and
#: ``origin`` (the publishing process, or None). Receivers must not block.
events_lost = Signal()

#: (origin, namespace) pairs remembered; the least recently heard is forgotten
#: first. Processes come and go: a restarted one has a new origin and starts
#: at 0, so a forgotten pair only costs the check of its next message.
TRACKED = 4096


@dataclasses.dataclass(frozen=True)
class Loss:
    """Events of one namespace that may not have reached this process."""

    namespace: str
    #: ``"sequence"`` or ``"reconnect"``.
    reason: str
    #: Events known to be lost, or None when the count is unknown.
    missed: int | None = None
    #: The publishing process whose messages were lost, when known.
    origin: str | None = None
    #: The last event received from ``origin`` before the loss, when known.
    after: str | None = None

    def describe(self) -> str:
        """Return one line saying what was lost, for logs and ``events listen``."""
        if self.reason == "sequence":
            return (
                f"{self.missed} event(s) of namespace {self.namespace!r} from {self.origin} "
                "did not arrive (a gap in its numbering)"
            )
        return (
            f"events of namespace {self.namespace!r} may have been lost while the "
            "channel-layer connection was down"
        )


class Sequences:
    """Remember, per origin and namespace, the next ``seq`` expected and the last event id seen.

    At most ``size`` pairs are kept.
    """

    def __init__(self, size: int = TRACKED) -> None:
        self.size = size
        self._next: collections.OrderedDict[tuple[str, str], tuple[int, str | None]] = (
            collections.OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._next)

    def check(
        self, origin: str, namespace: str, seq: int, count: int, last_id: str | None = None
    ) -> tuple[int, int, str | None]:
        """Take a message of ``count`` events numbered from ``seq``, the last one ``last_id``.

        Return (missed, repeated, before): ``missed``, the events numbered
        between the last message and this one; ``repeated``, how many of this
        message's first events came before (a publisher that sent a message
        again after a failure it could not read); ``before``, the id of the
        last event seen from this origin before this message, from where a
        catch-up finds what was missed. The first message of an origin is
        taken as it comes. A checkpoint is a message of no events.
        """
        key = (origin, namespace)
        known = self._next.pop(key, None)
        expected, before = known if known is not None else (None, None)
        following = seq + count if expected is None else max(expected, seq + count)
        self._next[key] = (following, last_id if last_id is not None else before)
        if len(self._next) > self.size:
            self._next.popitem(last=False)
        if expected is None or seq == expected:
            return 0, 0, before
        if seq > expected:
            return seq - expected, 0, before
        return 0, min(count, expected - seq), before

    def clear(self) -> None:
        """Forget every origin."""
        self._next.clear()


class ConnectionWatch:
    """Notice that a ``RedisPubSubChannelLayer`` made its subscriber connection again.

    channels_redis (through redis-py) reconnects and subscribes again by
    itself, and its ``receive()`` never says so; the connection's stream
    reader is replaced each time it connects. This looks at that reader, so
    it relies on channels_redis and redis-py internals: with another layer,
    or if they change, it notices nothing (and the numbering still shows
    loss once the next message arrives).
    """

    def __init__(self) -> None:
        # The last reader seen per shard, kept (not its id) so that a new
        # reader cannot take the address of a freed one.
        self._readers: dict[int, Any] = {}

    def reconnected(self, layer: Any) -> bool:
        """Return whether a subscriber connection of ``layer`` was made again since last asked."""
        found = False
        for index, reader in enumerate(_pubsub_readers(layer)):
            if reader is None:
                continue
            previous = self._readers.get(index)
            if previous is not None and previous is not reader:
                found = True
            self._readers[index] = reader
        return found


def _pubsub_readers(layer: Any) -> list[Any]:
    """Return the stream reader of each shard's pub/sub connection (None where there is none)."""
    layers = getattr(layer, "_layers", None)
    if not isinstance(layers, dict):
        return []
    try:
        loop_layer = layers.get(asyncio.get_running_loop())
    except RuntimeError:
        return []
    readers = []
    for shard in getattr(loop_layer, "_shards", None) or ():
        connection = getattr(getattr(shard, "_pubsub", None), "connection", None)
        readers.append(getattr(connection, "_reader", None))
    return readers

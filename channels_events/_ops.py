"""The operations page's stats stream: each process publishes its figures while someone watches.

With ``OPS_NAMESPACE`` set, each process's hub holds one :class:`StatsWatcher`
subscriber in that namespace, so every process is in its group (no message
flows there while nobody watches). The page's view dispatches
``<OPS_NAMESPACE>::watch`` every few seconds while it is open; every watcher
that hears it switches the tallies of :mod:`._metrics` on and publishes
``<OPS_NAMESPACE>::stats`` every ``OPS_INTERVAL`` seconds, until no
``watch`` came for three periods. The page subscribes to the stats events
with the JS client.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Iterable
from typing import Any

from ._conf import events_settings
from ._events import Event
from ._metrics import metrics

__all__ = ["StatsWatcher", "install", "stats_payload", "watch"]

# A process stops publishing stats after this many periods without ``watch``.
_PERIODS_WITHOUT_WATCH = 3
#: Seconds between two ``watch`` events of an open page.
WATCH_EVERY = 2.0


def process_name() -> str:
    """Return the name the page shows for this process: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def stats_payload(taken: dict[str, Any], namespace: str, seconds: float) -> dict[str, Any]:
    """Return the payload of a stats event: the tallies of one period, without the stats' own."""

    def others(counts: dict[str, int]) -> dict[str, int]:
        return {ns: n for ns, n in counts.items() if ns != namespace}

    return {
        "process": process_name(),
        "seconds": round(seconds, 3),
        "dispatched": others(taken["dispatched"]),
        "published": others(taken["published"]),
        "received": others(taken["received"]),
        "delivered": others(taken["delivered"]),
        "dropped": taken["dropped"],
        "failures": taken["failures"],
        "refusals": taken["refusals"],
        "errors": taken["errors"],
        "connections": taken["connections"],
        "subscriptions": taken["subscriptions"],
        "outbox": taken["outbox"],
        "max_age": taken["max_age"],
        "recent": [
            {"name": name, "id": event_id, "timestamp": timestamp}
            for name, event_id, timestamp in taken["recent"]
            if not name.startswith(namespace + "::")
        ],
    }


class StatsWatcher:
    """A hub subscriber of the ops namespace: hears ``watch``, publishes ``stats`` meanwhile."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._watch_name = f"{namespace}::watch"
        self._until = 0.0
        self._task: asyncio.Task[None] | None = None

    def namespaces(self) -> Iterable[str]:
        """Return the ops namespace: the hub joins its group for the ``watch`` events."""
        return (self.namespace,)

    def deliver(self, events: list[Event]) -> Awaitable[None] | None:
        """Start or prolong publishing stats when a ``watch`` event arrives (on the hub's loop)."""
        if any(event.name == self._watch_name for event in events):
            period = float(events_settings.OPS_INTERVAL)
            self._until = time.monotonic() + period * _PERIODS_WITHOUT_WATCH
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._publish(period))
        return None

    async def _publish(self, period: float) -> None:
        from ._dispatcher import get_dispatcher

        metrics.tally.take()  # the first period starts now
        metrics.watch(1)
        try:
            started = time.monotonic()
            while time.monotonic() < self._until:
                await asyncio.sleep(period)
                now = time.monotonic()
                payload = stats_payload(metrics.tally.take(), self.namespace, now - started)
                started = now
                get_dispatcher().dispatch(f"{self.namespace}::stats", payload)
        finally:
            metrics.watch(-1)


def install(hub: Any) -> None:
    """Give ``hub`` a stats watcher when ``OPS_NAMESPACE`` is set."""
    namespace = events_settings.OPS_NAMESPACE
    if namespace is not None:
        hub.add_subscriber(StatsWatcher(namespace))


def watch() -> None:
    """Ask every process to publish stats for the next periods (the page calls it)."""
    from ._dispatcher import get_dispatcher

    namespace = events_settings.OPS_NAMESPACE
    if namespace is not None:
        get_dispatcher().dispatch(f"{namespace}::watch", {})

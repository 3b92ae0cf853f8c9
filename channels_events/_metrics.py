"""Metrics: what flows through the process, counted for Prometheus and for the operations page.

Call sites make one call on :data:`metrics` (``metrics.dispatched(event)``).
What that call does is chosen once, and again whenever settings change
(``_conf.on_change``): with ``METRICS`` off and nobody watching the
operations page, every method is the same empty function; with ``METRICS``
on, the Prometheus metrics of :data:`CATALOGUE` are updated; while the
operations page watches (``_ops.py``), plain per-process tallies are kept for
its stats events. Labels are bounded: the namespace at most, never an event
name or id.
"""

from __future__ import annotations

import atexit
import collections
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from ._conf import events_settings, on_change
from ._events import Event

__all__ = [
    "CATALOGUE",
    "Metrics",
    "Tally",
    "metrics",
    "prometheus_available",
    "prometheus_client",
    "registry",
]

prometheus_client: Any
try:
    import prometheus_client
except ImportError:  # the "metrics" extra is not installed
    prometheus_client = None


def prometheus_available() -> bool:
    """Return whether ``prometheus_client`` can be imported."""
    return prometheus_client is not None


# Seconds: from a millisecond on a quiet process to a minute behind.
_DELAY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0
)  # fmt: skip

#: Every metric: (kind, name, labels, meaning). The docs' catalogue follows it.
CATALOGUE: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("counter", "channels_events_dispatched", ("namespace",),
     "Events dispatched in this process (`dispatch()`, `adispatch()`, browser `emit`)."),
    ("counter", "channels_events_published", ("namespace",),
     "Events this process handed to the channel layer."),
    ("counter", "channels_events_received", ("namespace",),
     "Events received from other processes."),
    ("counter", "channels_events_delivered", ("namespace",),
     "Event frames written to websockets."),
    ("counter", "channels_events_dropped", ("cause",),
     "Events dropped, by cause: `outbox_full` (the publication queue), `remote_queue_full` "
     "(local listeners too far behind), `lagged` (a websocket too slow), "
     "`background_queue_full` (a background listener call refused)."),
    ("counter", "channels_events_policy_refusals", ("policy",),
     "Requests a policy refused: `subscribe`, `emit`."),
    ("counter", "channels_events_protocol_errors", ("code",),
     "`error` frames sent to clients, by protocol error code."),
    ("counter", "channels_events_listener_failures", ("namespace",),
     "Listener and filter exceptions (logged, or raised in strict mode); background "
     "listeners' too, and each failed try of a task listener, in the worker."),
    ("counter", "channels_events_task_retries", ("namespace",),
     "Task listener calls that failed and were enqueued again (counted in the worker)."),
    ("counter", "channels_events_task_failures", ("namespace",),
     "Task listener calls that failed their last try (counted in the worker)."),
    ("gauge", "channels_events_connections", (),
     "Websocket connections open on this process."),
    ("gauge", "channels_events_subscriptions", (),
     "Subscriptions held by this process's websocket connections."),
    ("gauge", "channels_events_outbox_depth", (),
     "Events waiting to be published, after the sender's last run."),
    ("gauge", "channels_events_presence_members", ("namespace",),
     "Presence members known to this process, per namespace (set through "
     "`metrics.presence_members()`)."),
    ("histogram", "channels_events_publish_delay_seconds", ("namespace",),
     "From `dispatch()` to the channel layer accepting the message, observed once per "
     "message for its oldest event."),
    ("histogram", "channels_events_delivery_age_seconds", ("namespace",),
     "Event age when its first frame in this process is written: write time minus the "
     "event's timestamp (clocks of other hosts included)."),
)  # fmt: skip

_PROTOCOL_CODES = frozenset(
    {
        "bad_json",
        "bad_request",
        "duplicate_id",
        "forbidden",
        "invalid_pattern",
        "rate_limited",
        "too_large",
        "too_many_subscriptions",
        "unknown_subscription",
    }
)

#: The registry the metrics are made in: prometheus_client's default one, so
#: that a project's own metrics share the exposition.
registry: Any = prometheus_client.REGISTRY if prometheus_client is not None else None

#: Seconds between two copies of the counts into prometheus_client's own
#: metrics, in its multiprocess mode (PROMETHEUS_MULTIPROC_DIR).
MULTIPROCESS_SYNC = 1.0


def _event_time(event: Event) -> float:
    """Return the epoch seconds of the event's timestamp (parsed once for a remote event)."""
    when: float | None = event.__dict__.get("_time")
    if when is None:
        when = datetime.fromisoformat(event.timestamp).timestamp()
        event.__dict__["_time"] = when
    return when


def _noop(*args: Any) -> None:
    return None


class _Counts:
    """Counts by label value, kept per thread without a lock and summed when read.

    A counter of prometheus_client takes a lock per increment, which costs
    several times what the rest of the call does; a thread's own dict needs
    none. Totals never go down: a finished thread's dict stays.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._dicts: list[dict[str, int]] = []
        self._lock = threading.Lock()

    def _own(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._lock:
            self._dicts.append(counts)
        self._local.counts = counts
        return counts

    def add(self, key: str, count: int = 1) -> None:
        try:
            counts: dict[str, int] = self._local.counts
        except AttributeError:
            counts = self._own()
        counts[key] = counts.get(key, 0) + count

    def totals(self) -> dict[str, int]:
        """Return the sum over every thread, by label value."""
        with self._lock:
            dicts = list(self._dicts)
        totals: dict[str, int] = {}
        for counts in dicts:
            for key, count in counts.copy().items():
                totals[key] = totals.get(key, 0) + count
        return totals


class _Prometheus:
    """Count for Prometheus: plain counts exposed by a collector, histograms of prometheus_client.

    In prometheus_client's multiprocess mode a collector of one process is
    not seen by the others, so the counts are copied into its own counters
    and gauges every :data:`MULTIPROCESS_SYNC` seconds instead.
    """

    def __init__(self) -> None:
        assert prometheus_client is not None
        #: Name -> counts by label value, for counters and gauges.
        self.counts: dict[str, _Counts] = {}
        self.histograms: dict[str, Any] = {}
        self.outbox_depth = 0
        self.presence: dict[str, int] = {}
        for kind, name, labels, meaning in CATALOGUE:
            if kind == "histogram":
                self.histograms[name] = prometheus_client.Histogram(
                    name, meaning, labels, buckets=_DELAY_BUCKETS, registry=registry
                )
            else:
                self.counts[name] = _Counts()
        self._dispatched = self.counts["channels_events_dispatched"].add
        self._published = self.counts["channels_events_published"].add
        self._received = self.counts["channels_events_received"].add
        self._delivered = self.counts["channels_events_delivered"].add
        self._dropped = self.counts["channels_events_dropped"].add
        self._refusals = self.counts["channels_events_policy_refusals"].add
        self._errors = self.counts["channels_events_protocol_errors"].add
        self._failures = self.counts["channels_events_listener_failures"].add
        self._retries = self.counts["channels_events_task_retries"].add
        self._task_failures = self.counts["channels_events_task_failures"].add
        self._connections = self.counts["channels_events_connections"].add
        self._subscriptions = self.counts["channels_events_subscriptions"].add
        self._publish_delay = self.histograms["channels_events_publish_delay_seconds"]
        self._age = self.histograms["channels_events_delivery_age_seconds"]
        self._children: dict[tuple[int, str], Any] = {}
        self.multiprocess: _MultiprocessSync | None = None
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            self.multiprocess = _MultiprocessSync(self)
            self.multiprocess.start()
        else:
            registry.register(_Collector(self))

    def _observe(self, histogram: Any, namespace: str, value: float) -> None:
        if self.multiprocess is not None:
            # prometheus_client writes a file per process in this mode: only
            # the sync copies into it (see _MultiprocessSync).
            self.multiprocess.observations.append((histogram, namespace, value))
            return
        key = (id(histogram), namespace)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = histogram.labels(namespace)
        child.observe(value)

    def samples(self) -> list[tuple[str, str, tuple[str, ...], str, dict[str, float]]]:
        """Return (kind, name, labels, meaning, values by label value) of counters and gauges."""
        found = []
        for kind, name, labels, meaning in CATALOGUE:
            values: dict[str, float]
            if name == "channels_events_outbox_depth":
                values = {"": self.outbox_depth}
            elif name == "channels_events_presence_members":
                values = dict(self.presence)
            elif kind == "histogram":
                continue
            else:
                values = dict(self.counts[name].totals())
                if not labels:
                    values = {"": values.get("", 0)}
            found.append((kind, name, labels, meaning, values))
        return found

    def dispatched(self, event: Event) -> None:
        self._dispatched(event.namespace)

    def published(self, envelopes: list[dict[str, Any]], namespace: str) -> None:
        self._published(namespace, len(envelopes))
        # One observation per message, of its oldest event: the delay a
        # message's events saw at most, at the cost of one parse per message.
        oldest = envelopes[0].get("timestamp") if envelopes else None
        if isinstance(oldest, str):
            delay = time.time() - datetime.fromisoformat(oldest).timestamp()
            self._observe(self._publish_delay, namespace, max(0.0, delay))

    def received(self, events: list[Event]) -> None:
        add = self._received
        for event in events:
            add(event.namespace)

    def delivered(self, event: Event) -> None:
        self._delivered(event.namespace)
        if "_aged" not in event.__dict__:
            event.__dict__["_aged"] = True
            self._observe(self._age, event.namespace, max(0.0, time.time() - _event_time(event)))

    def dropped(self, cause: str, count: int = 1) -> None:
        self._dropped(cause, count)

    def refused(self, policy: str) -> None:
        self._refusals(policy)

    def protocol_error(self, code: str) -> None:
        self._errors(code if code in _PROTOCOL_CODES else "other")

    def listener_failed(self, event: Event) -> None:
        self._failures(event.namespace)

    def task_retried(self, event: Event) -> None:
        self._retries(event.namespace)

    def task_failed(self, event: Event) -> None:
        self._task_failures(event.namespace)

    def connections(self, change: int) -> None:
        self._connections("", change)

    def subscriptions(self, change: int) -> None:
        self._subscriptions("", change)

    def outbox(self, depth: int) -> None:
        self.outbox_depth = depth

    def presence_members(self, namespace: str, count: int) -> None:
        self.presence[namespace] = count


_made: _Prometheus | None = None
_made_lock = threading.Lock()


def _prometheus() -> _Prometheus:
    """Return the process's one :class:`_Prometheus` (a metric name registers once)."""
    global _made
    with _made_lock:
        if _made is None:
            _made = _Prometheus()
        return _made


class _Collector:
    """Expose the counts of :class:`_Prometheus` to prometheus_client when it is scraped."""

    def __init__(self, source: _Prometheus) -> None:
        self._source = source

    def collect(self) -> Iterator[Any]:
        assert prometheus_client is not None
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for kind, name, labels, meaning, values in self._source.samples():
            family_class = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = family_class(name, meaning, labels=list(labels))
            for key, value in sorted(values.items()):
                family.add_metric([key] if labels else [], value)
            yield family


class _MultiprocessSync:
    """Copy the counts into prometheus_client's own metrics, for its multiprocess mode."""

    def __init__(self, source: _Prometheus) -> None:
        assert prometheus_client is not None
        self._source = source
        self._metrics: dict[str, Any] = {}
        self._copied: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._stopped = False
        #: Histogram observations waiting for the next copy (the oldest go first
        #: if a copy is late).
        self.observations: collections.deque[tuple[Any, str, float]] = collections.deque(
            maxlen=100_000
        )
        for kind, name, labels, meaning in CATALOGUE:
            if kind == "counter":
                self._metrics[name] = prometheus_client.Counter(name, meaning, labels)
            elif kind == "gauge":
                # Summed over the live processes.
                self._metrics[name] = prometheus_client.Gauge(
                    name, meaning, labels, multiprocess_mode="livesum"
                )

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name="channels-events-metrics", daemon=True)
        thread.start()
        # The last copy is made at exit, on the main thread: a file that
        # prometheus_client was creating when the process ended would be left
        # empty, and every later scrape of the directory would fail on it.
        atexit.register(self.stop)

    def _run(self) -> None:
        while not self._stopped:
            time.sleep(MULTIPROCESS_SYNC)
            self.sync()

    def stop(self) -> None:
        """Make the last copy; no copy is made after it."""
        self.sync()
        self._stopped = True

    def sync(self) -> None:
        """Copy what changed since the last copy."""
        with self._lock:
            if not self._stopped:
                self._copy()

    def _copy(self) -> None:
        observations = self.observations
        while observations:
            histogram, namespace, value = observations.popleft()
            histogram.labels(namespace).observe(value)
        for kind, name, labels, _meaning, values in self._source.samples():
            metric = self._metrics[name]
            for key, value in values.items():
                child = metric.labels(key) if labels else metric
                if kind == "gauge":
                    child.set(value)
                    continue
                copied = self._copied.get((name, key), 0)
                if value > copied:
                    child.inc(value - copied)
                    self._copied[name, key] = value


class Tally:
    """Plain per-process counts for the operations page's stats events (``_ops.py``).

    Kept only while someone watches; the stats sender reads and resets the
    per-namespace counts each period.
    """

    #: How many recent events (name, id, timestamp) are kept for the page.
    RECENT = 20

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dispatched: dict[str, int] = {}
        self.published: dict[str, int] = {}
        self.received: dict[str, int] = {}
        self.delivered: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.failures = 0
        self.refusals = 0
        self.errors = 0
        self.connections = 0
        self.subscriptions = 0
        self.outbox_depth = 0
        self.max_age = 0.0
        self.recent: list[tuple[str, str, str]] = []

    def take(self) -> dict[str, Any]:
        """Return the counts since the last call and reset them (gauges stay)."""
        with self.lock:
            taken = {
                "dispatched": self.dispatched,
                "published": self.published,
                "received": self.received,
                "delivered": self.delivered,
                "dropped": self.dropped,
                "failures": self.failures,
                "refusals": self.refusals,
                "errors": self.errors,
                "connections": self.connections,
                "subscriptions": self.subscriptions,
                "outbox": self.outbox_depth,
                "max_age": round(self.max_age, 4),
                "recent": self.recent,
            }
            self.dispatched, self.published, self.received = {}, {}, {}
            self.delivered, self.dropped = {}, {}
            self.failures = self.refusals = self.errors = 0
            self.max_age = 0.0
            self.recent = []
        return taken

    @staticmethod
    def _add(counts: dict[str, int], key: str, count: int = 1) -> None:
        counts[key] = counts.get(key, 0) + count

    def dispatched_(self, event: Event) -> None:
        with self.lock:
            self._add(self.dispatched, event.namespace)
            recent = self.recent
            recent.append((event.name, event.id, event.timestamp))
            if len(recent) > self.RECENT:
                del recent[0]

    def published_(self, envelopes: list[dict[str, Any]], namespace: str) -> None:
        with self.lock:
            self._add(self.published, namespace, len(envelopes))

    def received_(self, events: list[Event]) -> None:
        with self.lock:
            for event in events:
                self._add(self.received, event.namespace)

    def delivered_(self, event: Event) -> None:
        with self.lock:
            self._add(self.delivered, event.namespace)
        if "_aged_tally" not in event.__dict__:
            event.__dict__["_aged_tally"] = True
            self.max_age = max(self.max_age, time.time() - _event_time(event))

    def dropped_(self, cause: str, count: int = 1) -> None:
        with self.lock:
            self._add(self.dropped, cause, count)

    def refused_(self, policy: str) -> None:
        self.refusals += 1

    def protocol_error_(self, code: str) -> None:
        self.errors += 1

    def listener_failed_(self, event: Event) -> None:
        self.failures += 1

    # Task listeners run in workers, which publish no stats: their failures
    # reach the page through listener_failed_.
    def task_retried_(self, event: Event) -> None:
        return None

    def task_failed_(self, event: Event) -> None:
        return None

    def connections_(self, change: int) -> None:
        self.connections += change

    def subscriptions_(self, change: int) -> None:
        self.subscriptions += change

    def outbox_(self, depth: int) -> None:
        self.outbox_depth = depth

    def presence_members_(self, namespace: str, count: int) -> None:
        return None


_METHODS = (
    "dispatched",
    "published",
    "received",
    "delivered",
    "dropped",
    "refused",
    "protocol_error",
    "listener_failed",
    "task_retried",
    "task_failed",
    "connections",
    "subscriptions",
    "outbox",
    "presence_members",
)

# Gauges the tally keeps whether or not anyone watches, so that the page
# shows true figures from its first stats event.
_ALWAYS_TALLIED = ("connections", "subscriptions", "outbox")


def _both(first: Callable[..., None], second: Callable[..., None]) -> Callable[..., None]:
    def both(*args: Any) -> None:
        first(*args)
        second(*args)

    return both


class Metrics:
    """The one object call sites use; its methods are chosen by :meth:`choose`.

    Methods (each takes what its call site has at hand):

    - ``dispatched(event)``, ``received(events)``, ``delivered(event)`` (one
      event frame written), ``published(envelopes, namespace)`` (a message
      the channel layer accepted);
    - ``dropped(cause, count=1)`` with ``outbox_full``,
      ``remote_queue_full``, ``lagged`` or ``background_queue_full``;
      ``refused(policy)``;
      ``protocol_error(code)``; ``listener_failed(event)``;
      ``task_retried(event)``, ``task_failed(event)`` (a task listener's
      failed try enqueued again, or its last);
    - ``connections(change)``, ``subscriptions(change)``, ``outbox(depth)``;
    - ``presence_members(namespace, count)``: for presence to report the
      members it knows per namespace.
    """

    dispatched: Callable[[Event], None]
    published: Callable[[list[dict[str, Any]], str], None]
    received: Callable[[list[Event]], None]
    delivered: Callable[[Event], None]
    dropped: Callable[..., None]
    refused: Callable[[str], None]
    protocol_error: Callable[[str], None]
    listener_failed: Callable[[Event], None]
    task_retried: Callable[[Event], None]
    task_failed: Callable[[Event], None]
    connections: Callable[[int], None]
    subscriptions: Callable[[int], None]
    outbox: Callable[[int], None]
    presence_members: Callable[[str, int], None]

    def __init__(self) -> None:
        self.tally = Tally()
        self._watchers = 0
        self._lock = threading.Lock()
        self.prometheus: _Prometheus | None = None
        # Settings may not be configured yet at import time: the first call
        # of any method chooses.
        for name in _METHODS:
            setattr(self, name, self._first_call(name))
        on_change(self.choose)

    def _first_call(self, name: str) -> Callable[..., None]:
        def first_call(*args: Any) -> None:
            self.choose()
            getattr(self, name)(*args)

        return first_call

    @property
    def enabled(self) -> bool:
        """Return whether the Prometheus metrics are being updated."""
        return self.prometheus is not None

    def watch(self, change: int) -> None:
        """Count one more (``1``) or one fewer (``-1``) watcher of the operations page."""
        with self._lock:
            self._watchers = max(0, self._watchers + change)
        self.choose()

    def choose(self) -> None:
        """Pick the implementation of every method from the settings and the watchers."""
        with self._lock:
            setting = events_settings.METRICS
            on = prometheus_client is not None if setting is None else bool(setting)
            if on and prometheus_client is None:
                on = False  # the checks report it (channels_events.W010)
            self.prometheus = _prometheus() if on else None
            watching = self._watchers > 0
            for name in _METHODS:
                chosen: Callable[..., None] = _noop
                if self.prometheus is not None:
                    chosen = getattr(self.prometheus, name)
                if watching or name in _ALWAYS_TALLIED:
                    tallied = getattr(self.tally, name + "_")
                    chosen = tallied if chosen is _noop else _both(chosen, tallied)
                setattr(self, name, chosen)


#: The process's metrics: one object, whose methods call sites use.
metrics = Metrics()

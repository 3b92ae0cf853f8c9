"""Trace context carried with events between processes (OpenTelemetry, optional).

When a span is active at ``dispatch()`` and the event leaves the process, a
short ``channels_events publish`` span is recorded under it and its W3C
``traceparent`` travels beside the event's envelope, in the channel-layer
message's ``trace`` field (event id -> traceparent), never inside the
envelope: browsers, the history and replays see envelopes only. The
receiving process continues the trace: remote listeners run inside a
``channels_events deliver`` span, and the first frame written for the event
is recorded as a ``channels_events write`` span, both children of the
publish span.

Listeners that run later go on in the trace that was current when their
call was handed off: a background listener (local or remote event) runs
inside a ``channels_events background`` span made from the context the
pool captured (:func:`current`); a task listener's ``traceparent`` travels
in the task's arguments, beside the envelope (:func:`traceparent`), and
the worker runs it inside a ``channels_events task`` span.

Without ``opentelemetry-api`` installed every function here returns at once.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ._events import Event

__all__ = [
    "available",
    "capture",
    "current",
    "deliver",
    "received",
    "run_in",
    "tag_message",
    "traceparent",
    "written",
]

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the "tracing" extra is not installed
    trace = None  # type: ignore[assignment]
    otel_context = None  # type: ignore[assignment]

_NAME = "channels_events"
_propagator: Any = TraceContextTextMapPropagator() if trace is not None else None
# Event id -> traceparent, for events dispatched here and not yet sent. Bounded:
# an event dropped before it is sent must not keep its entry for ever.
_outgoing: dict[str, str] = {}
_OUTGOING_LIMIT = 10000


def available() -> bool:
    """Return whether OpenTelemetry's API can be imported."""
    return trace is not None


def _tracer() -> Any:
    return trace.get_tracer(_NAME)


def capture(event: Event) -> None:
    """Remember the active span's context for ``event``, which leaves the process."""
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return
    with _tracer().start_as_current_span(
        f"{_NAME} publish",
        kind=trace.SpanKind.PRODUCER,
        attributes={"channels_events.event": event.name, "channels_events.id": event.id},
    ):
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
    traceparent = carrier.get("traceparent")
    if traceparent is None:
        return
    if len(_outgoing) >= _OUTGOING_LIMIT:
        del _outgoing[next(iter(_outgoing))]
    _outgoing[event.id] = traceparent


def tag_message(message: dict[str, Any], envelopes: Sequence[dict[str, Any]]) -> None:
    """Add the ``trace`` field to a channel-layer message whose events carry a context."""
    if not _outgoing:
        return
    traces = {}
    for envelope in envelopes:
        traceparent = _outgoing.pop(envelope.get("id"), None)  # type: ignore[arg-type]
        if traceparent is not None:
            traces[envelope["id"]] = traceparent
    if traces:
        message["trace"] = traces


def received(message: Any, events: Sequence[Event]) -> None:
    """Attach the contexts of a received message's ``trace`` field to its events."""
    if trace is None or not isinstance(message, dict):
        return
    traces = message.get("trace")
    if not isinstance(traces, dict):
        return
    now = time.time_ns()
    for event in events:
        traceparent = traces.get(event.id)
        if isinstance(traceparent, str):
            event.__dict__["_trace"] = (traceparent, now)


def _context(traceparent: str) -> Any:
    return _propagator.extract({"traceparent": traceparent})


def written(event: Event) -> None:
    """Record the first frame written for a traced remote event in this process."""
    traced = event.__dict__.get("_trace")
    if traced is None or trace is None or "_written" in event.__dict__:
        return
    event.__dict__["_written"] = True
    traceparent, since = traced
    span = _tracer().start_span(
        f"{_NAME} write",
        context=_context(traceparent),
        kind=trace.SpanKind.CONSUMER,
        start_time=since,
        attributes={"channels_events.event": event.name, "channels_events.id": event.id},
    )
    span.end()


Deliver = Callable[[Sequence[Event], Any], Awaitable[None]]


async def deliver(events: Sequence[Event], deliver: Deliver, run_sync: Any) -> None:
    """Call ``deliver(events, run_sync)``, inside a span per run of events of one trace."""
    if trace is None or not any("_trace" in event.__dict__ for event in events):
        await deliver(events, run_sync)
        return
    start = 0
    for index in range(1, len(events) + 1):
        traced = events[start].__dict__.get("_trace")
        if index < len(events) and events[index].__dict__.get("_trace") == traced:
            continue
        run = events[start:index]
        start = index
        if traced is None:
            await deliver(run, run_sync)
            continue
        with _tracer().start_as_current_span(
            f"{_NAME} deliver",
            context=_context(traced[0]),
            kind=trace.SpanKind.CONSUMER,
            attributes={"channels_events.events": len(run)},
        ):
            await deliver(run, _in_context(run_sync))


def _in_context(run_sync: Any) -> Any:
    """Wrap a sync runner so that sync listeners run in the current (traced) context."""

    def traced(func: Callable[[Any], None], calls: Any) -> Awaitable[None]:
        context = contextvars.copy_context()
        return run_sync(lambda c: context.run(func, c), calls)  # type: ignore[no-any-return]

    return traced


def current() -> Any:
    """Return the active context, to run a later call in, or None when no span is active."""
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    return otel_context.get_current()


def traceparent() -> str | None:
    """Return the active span's W3C ``traceparent``, or None when no span is active."""
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def run_in(
    context: Any, kind: str, listener: str, event: Event, call: Callable[[], None], **extra: Any
) -> None:
    """Call ``call()`` inside a ``channels_events <kind>`` span, a child of ``context``.

    ``context`` is what :func:`current` returned, or a ``traceparent``
    string from another process; with None (or without OpenTelemetry) the
    call is made as it is. An exception that ``call`` raises is recorded on
    the span and raised again.
    """
    if context is None or trace is None:
        call()
        return
    if isinstance(context, str):
        context = _context(context)
    # Attached, not only passed as the parent: what else the context carries
    # (baggage) reaches the listener as well.
    token = otel_context.attach(context)
    try:
        with _tracer().start_as_current_span(
            f"{_NAME} {kind}",
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "channels_events.listener": listener,
                "channels_events.event": event.name,
                "channels_events.id": event.id,
                **{f"channels_events.{key}": value for key, value in extra.items()},
            },
        ):
            call()
    finally:
        otel_context.detach(token)

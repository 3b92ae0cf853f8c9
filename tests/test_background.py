"""Tests for background listeners: the process's pool, its order, errors, bound, drain and exit."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings

from channels_events import Dispatcher, Event, Listener, Observer, drain, listen, testing, unobserve
from channels_events._background import get_pool
from tests import tracefile
from tests.testapp.models import Plain

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def d() -> Dispatcher:
    return Dispatcher()


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_background_listener_runs_off_the_callers_thread(d, background_listeners):
    threads = []

    @listen("tbg::thread", dispatcher=d, background=True)
    def on_event(event):
        threads.append(threading.current_thread())

    event = d.dispatch("tbg::thread")
    assert isinstance(event, Event)
    assert background_listeners() is True
    assert len(threads) == 1
    assert threads[0] is not threading.current_thread()
    assert threads[0].name.startswith("channels-events-background")


def test_each_listener_sees_events_in_dispatch_order(d):
    first, second = [], []

    @listen("tbg::order::.*", dispatcher=d, background=True)
    def slow(event):
        time.sleep(0.0005)
        first.append(event.payload["n"])

    @listen("tbg::order::.*", dispatcher=d, background=True)
    def fast(event):
        second.append(event.payload["n"])

    for n in range(200):
        d.dispatch(f"tbg::order::e{n % 7}", {"n": n})
    assert drain(30)
    assert first == list(range(200))
    assert second == list(range(200))


def test_listener_errors_are_logged_and_later_events_still_run(d, caplog):
    seen = []

    @listen("tbg::fails", dispatcher=d, background=True)
    def fails(event):
        if event.payload["n"] == 0:
            raise RuntimeError("background boom")
        seen.append(event.payload["n"])

    with caplog.at_level(logging.ERROR, logger="channels_events"):
        failing = d.dispatch("tbg::fails", {"n": 0})
        d.dispatch("tbg::fails", {"n": 1})
        assert drain(10)
    assert seen == [1]
    messages = [r for r in caplog.records if "background boom" in str(r.exc_info)]
    assert len(messages) == 1
    text = messages[0].getMessage()
    assert "fails" in text and "'tbg::fails'" in text and failing.id in text


def test_strict_mode_does_not_reach_background_listeners(d, caplog):
    @listen("tbg::strict", dispatcher=d, background=True)
    def fails(event):
        raise RuntimeError("not raised at the caller")

    d.strict = True
    with caplog.at_level(logging.ERROR, logger="channels_events"):
        d.dispatch("tbg::strict")  # does not raise: the listener runs later, elsewhere
        assert drain(10)
    assert any("not raised at the caller" in str(r.exc_info) for r in caplog.records)


def test_drain_times_out_while_a_listener_is_busy(d):
    release = threading.Event()
    done = []

    @listen("tbg::busy", dispatcher=d, background=True)
    def busy(event):
        release.wait(10)
        done.append(event.name)

    d.dispatch("tbg::busy")
    assert drain(0.05) is False
    assert get_pool().pending == 1
    release.set()
    assert testing.drain(10) is True
    assert done == ["tbg::busy"]


def test_drain_from_a_background_listener_is_refused(d):
    errors = []

    @listen("tbg::drain_inside", dispatcher=d, background=True)
    def drains(event):
        try:
            drain(1)
        except RuntimeError as exc:
            errors.append(str(exc))

    d.dispatch("tbg::drain_inside")
    assert drain(10)
    assert errors and "wait for itself" in errors[0]


def test_full_queue_refuses_new_calls_and_logs_them(d, caplog):
    release = threading.Event()
    seen = []

    @listen("tbg::full", dispatcher=d, background=True)
    def blocked(event):
        release.wait(10)
        seen.append(event.payload["n"])

    refused_before = get_pool().refused
    with (
        override_settings(CHANNELS_EVENTS={"BACKGROUND_QUEUE_SIZE": 3}),
        caplog.at_level(logging.ERROR, logger="channels_events"),
    ):
        events = [d.dispatch("tbg::full", {"n": n}) for n in range(5)]
        # The caller was never blocked: all five dispatches returned.
        assert get_pool().pending == 3
        release.set()
        assert drain(10)
    assert seen == [0, 1, 2]
    assert get_pool().refused - refused_before == 2
    refusals = [r.getMessage() for r in caplog.records if "BACKGROUND_QUEUE_SIZE" in r.getMessage()]
    assert len(refusals) == 2
    assert events[3].id in refusals[0] and events[4].id in refusals[1]


def test_async_listener_runs_on_the_pool(d):
    seen = []

    @listen("tbg::async", dispatcher=d, background=True)
    async def on_event(event):
        seen.append((event.name, threading.current_thread().name))

    d.dispatch("tbg::async")
    assert drain(10)
    assert seen and seen[0][0] == "tbg::async"
    # async_to_sync runs the coroutine on a loop of its own, off the caller's thread.
    assert seen[0][1] != threading.current_thread().name


async def test_adispatch_hands_background_listeners_to_the_pool(d):
    release = threading.Event()
    seen = []

    @listen("tbg::adispatch", dispatcher=d, background=True)
    def on_event(event):
        release.wait(10)
        seen.append(event.name)

    @listen("tbg::adispatch", dispatcher=d)
    def inline(event):
        seen.append("inline")

    await d.adispatch("tbg::adispatch")
    # adispatch returned while the background listener still waits.
    assert seen == ["inline"]
    release.set()
    assert drain(10)
    assert seen == ["inline", "tbg::adispatch"]


def test_listener_class_and_filter_and_once(d):
    seen = []

    class OnBackground(Listener):
        listens_for = ["tbg::class::.*"]
        background = True
        once = True
        dispatcher = d

        def handle(self, event):
            seen.append((event.name, threading.current_thread().name))

    d.dispatch("tbg::class::a")
    d.dispatch("tbg::class::b")
    assert drain(10)
    assert [name for name, _ in seen] == ["tbg::class::a"]
    assert seen[0][1].startswith("channels-events-background")


@pytest.mark.django_db
def test_observer_methods_run_in_the_background():
    seen = []

    class PlainBackground(Observer):
        model = Plain
        background = True

        def created(self, event):
            seen.append((event.payload["fields"]["number"], threading.current_thread().name))

    try:
        Plain.objects.create(number="bg-1", total="1.00")
        assert drain(10)
        assert len(seen) == 1
        assert seen[0][0] == "bg-1"
        assert seen[0][1].startswith("channels-events-background")
    finally:
        PlainBackground.observation.target.disconnect(
            dispatch_uid=f"{__name__}.{PlainBackground.__qualname__}.created"
        )
        unobserve(Plain)


def test_background_and_task_together_are_refused(d):
    from channels_events import TaskListenerError

    def on_event(event):
        pass

    with pytest.raises(TaskListenerError, match="choose one"):
        listen("tbg::both", dispatcher=d, background=True, task=True)(on_event)
    assert d.registrations == ()


def test_background_must_be_a_bool(d):
    with pytest.raises(TypeError, match="'yes'"):
        listen("tbg::bool", dispatcher=d, background="yes")(lambda event: None)


def test_events_list_shows_where_listeners_run(capsys):
    from channels_events import get_dispatcher

    def inline_listener(event):
        pass

    def background_listener(event):
        pass

    dispatcher = get_dispatcher()
    dispatcher.connect(inline_listener, "tbglist::inline")
    dispatcher.connect(background_listener, "tbglist::background", background=True)
    try:
        call_command("events", "list")
    finally:
        dispatcher.disconnect(inline_listener)
        dispatcher.disconnect(background_listener)
    out = capsys.readouterr().out
    assert "tbglist::inline  ->  tests.test_background" in out
    assert "inline_listener  [runs=inline]" in out
    assert "background_listener  [runs=background]" in out


# -- traces -------------------------------------------------------------------------


def _listener_spans(exporter, name):
    return [span for span in exporter.get_finished_spans() if span.name == name]


def test_background_listener_runs_in_the_trace_of_its_dispatch(d):
    """A span active at dispatch() is an ancestor of the background listener's own span."""
    from opentelemetry import trace

    exporter = tracefile.in_memory()
    assert drain(10)
    exporter.clear()
    tracer = trace.get_tracer("tests")

    @listen("tbg::traced", dispatcher=d, background=True)
    def traced(event):
        with tracer.start_as_current_span("tbg listener") as span:
            span.set_attribute("n", event.payload["n"])

    with tracer.start_as_current_span("save order") as root:
        traced_event = d.dispatch("tbg::traced", {"n": 1})
    # No span active at dispatch(): the listener's span starts a trace of its own.
    d.dispatch("tbg::traced", {"n": 2})
    assert drain(10)
    spans = exporter.get_finished_spans()
    by_n = {span.attributes["n"]: span for span in _listener_spans(exporter, "tbg listener")}
    assert set(by_n) == {1, 2}
    assert tracefile.ancestors(spans, by_n[1]) == ["channels_events background", "save order"]
    assert by_n[1].context.trace_id == root.get_span_context().trace_id
    (background,) = _listener_spans(exporter, "channels_events background")
    assert background.attributes["channels_events.id"] == traced_event.id
    assert background.attributes["channels_events.listener"].endswith("traced")
    assert by_n[2].parent is None
    assert by_n[2].context.trace_id != root.get_span_context().trace_id


def test_background_listener_failure_is_recorded_on_its_span(d):
    from opentelemetry import trace
    from opentelemetry.trace import StatusCode

    exporter = tracefile.in_memory()
    assert drain(10)
    exporter.clear()

    @listen("tbg::traced_fails", dispatcher=d, background=True)
    def fails(event):
        raise RuntimeError("traced boom")

    with trace.get_tracer("tests").start_as_current_span("save order"):
        d.dispatch("tbg::traced_fails")
    assert drain(10)
    (span,) = _listener_spans(exporter, "channels_events background")
    assert span.status.status_code is StatusCode.ERROR
    assert any("traced boom" in str(e.attributes) for e in span.events)


async def test_background_listener_of_a_remote_event_continues_its_trace(d):
    """A remote event's background listener runs under the receiving process's deliver span."""
    from opentelemetry import trace

    from channels_events._layer import EVENT_TYPE
    from channels_events._receiver import Receiver
    from channels_events._subscribers import SubscriberIndex
    from channels_events._tracing import capture, tag_message

    exporter = tracefile.in_memory()
    assert drain(10)
    exporter.clear()
    tracer = trace.get_tracer("tests")
    heard = []

    @listen("tbg::remote", dispatcher=d, background=True)
    def remote_listener(event):
        heard.append(event.is_remote)
        with tracer.start_as_current_span("tbg remote listener"):
            pass

    # The publishing side, as the sender does it: the context beside the envelope.
    with tracer.start_as_current_span("save elsewhere") as root:
        sent = Event("tbg::remote", {"n": 1})
        capture(sent)
    message = {"type": EVENT_TYPE, "event": sent.envelope, "origin": "elsewhere"}
    tag_message(message, [message["event"]])
    assert "trace" in message and "trace" not in message["event"]

    receiver = Receiver(None, None, d, SubscriberIndex(lambda: None), "here")  # type: ignore[arg-type]
    try:
        await receiver.handle(message)
        assert await asyncio.to_thread(drain, 10)
    finally:
        await receiver.stop()
    assert heard == [True]
    spans = exporter.get_finished_spans()
    (listener_span,) = _listener_spans(exporter, "tbg remote listener")
    assert tracefile.ancestors(spans, listener_span) == [
        "channels_events background",
        "channels_events deliver",
        "channels_events publish",
        "save elsewhere",
    ]
    assert listener_span.context.trace_id == root.get_span_context().trace_id


EXIT_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import django
    django.setup()
    from django.test.utils import override_settings
    from channels_events import dispatch, listen

    if sys.argv[3] != "None":
        override_settings(CHANNELS_EVENTS={"BACKGROUND_EXIT_TIMEOUT": float(sys.argv[3])}).enable()

    @listen("tbgexit::.*", background=True)
    def slow(event):
        time.sleep(0.05)
        with open(sys.argv[1], "a") as out:
            out.write(event.payload["n"] + "\\n")

    for n in range(int(sys.argv[2])):
        dispatch("tbgexit::e", {"n": str(n)})
    print("dispatched", flush=True)
    # A normal exit: the pool finishes what is queued before the process ends.
    """
)


def run_exit_script(tmp_path: Path, count: int, exit_timeout: float | None = None) -> list[str]:
    out = tmp_path / f"out-{count}-{exit_timeout}.txt"
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, str(out), str(count), str(exit_timeout)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "dispatched" in result.stdout
    return out.read_text().split() if out.exists() else []


def test_a_normal_exit_finishes_pending_work(tmp_path):
    assert run_exit_script(tmp_path, 10) == [str(n) for n in range(10)]


def test_exit_timeout_bounds_the_wait(tmp_path):
    # Positive control above; here the exit waits 0 s, so some calls never run.
    done = run_exit_script(tmp_path, 10, exit_timeout=0)
    assert len(done) < 10

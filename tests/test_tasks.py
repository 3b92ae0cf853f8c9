"""Tests for task listeners: Django tasks run by real workers in other processes.

The dispatching side runs in a process of its own (``tests/tasksproc.py``),
and so do the workers (``manage.py db_worker`` of ``django-tasks-db``), on a
database they share: a SQLite file, or the PostgreSQL test database when the
suite runs on PostgreSQL (``CHANNELS_EVENTS_TEST_DB=postgres``). The task
listeners are in ``tests/tasks_app/listeners.py``; they append what they saw
to a log file the test reads.

The declaration checks at the end run in this process, where the Tasks
framework uses its default ImmediateBackend.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from channels_events import (
    Dispatcher,
    Event,
    Listener,
    TaskListenerError,
    TaskOptions,
    get_dispatcher,
    listen,
)
from tests import tracefile

ROOT = Path(__file__).resolve().parent.parent
WORKER_TIMEOUT = 120


class Tasks:
    """One test's processes: the dispatcher (one action per call) and its workers."""

    def __init__(self, tmp_path: Path) -> None:
        self.log_path = tmp_path / "listeners.log"
        self.release = tmp_path / "release"
        if connection.vendor == "postgresql":
            # The test database this test runs on (transaction=True: committed, shared).
            database = f"postgres:{connection.settings_dict['NAME']}"
        else:
            database = f"sqlite:{tmp_path / 'tasks.sqlite3'}"
        self.env = dict(
            os.environ,
            DJANGO_SETTINGS_MODULE="tests.tasks_settings",
            PYTHONPATH=str(ROOT),
            CE_TASKS_DB=database,
            CE_TASKS_LOG=str(self.log_path),
            CE_TASKS_RELEASE=str(self.release),
        )
        self.workers: list[subprocess.Popen[str]] = []
        self.outputs: dict[int, Path] = {}
        if connection.vendor != "postgresql":
            self.run("migrate")

    def run(self, *args: str) -> dict[str, Any]:
        """Run one action of tests/tasksproc.py; return what it printed."""
        result = subprocess.run(
            [sys.executable, "-m", "tests.tasksproc", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    def worker_command(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "django",
            "db_worker",
            "--no-reload",
            "--no-startup-delay",
            "--queue-name",
            "*",
            *extra,
        ]

    def batch(self) -> subprocess.CompletedProcess[str]:
        """Run a worker that runs every ready task, then exits."""
        result = subprocess.run(
            self.worker_command("--batch", "--interval", "0"),
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def start_worker(self) -> subprocess.Popen[str]:
        """Start a worker that keeps polling for tasks (every 0.1 s) until stopped."""
        # Output to a file: a pipe nobody reads while the test polls could fill up.
        output = self.log_path.with_name(f"worker-{len(self.workers)}.out")
        with output.open("w") as out:
            worker = subprocess.Popen(
                self.worker_command("--interval", "0.1"),
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.workers.append(worker)
        self.outputs[worker.pid] = output
        return worker

    def stop(self, worker: subprocess.Popen[str]) -> str:
        """Stop a worker as an operator would (SIGTERM); return what it wrote."""
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=WORKER_TIMEOUT)
        return self.outputs[worker.pid].read_text()

    def log(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def wait_for(self, condition: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        """Poll the log until ``condition(log)`` holds; fail after a deadline."""
        deadline = time.monotonic() + WORKER_TIMEOUT
        while time.monotonic() < deadline:
            log = self.log()
            if condition(log):
                return log
            time.sleep(0.05)
        raise AssertionError(f"condition not met; log: {self.log()!r}")

    def tasks(self) -> list[dict[str, Any]]:
        return self.run("tasks")["tasks"]

    def close(self) -> None:
        self.release.touch()
        for worker in self.workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait(timeout=WORKER_TIMEOUT)


@pytest.fixture
def tasks(tmp_path: Path) -> Any:
    processes = Tasks(tmp_path)
    try:
        yield processes
    finally:
        processes.close()


def lines(log: list[dict[str, Any]], listener: str) -> list[dict[str, Any]]:
    return [line for line in log if line["listener"] == listener]


# -- workers in other processes ----------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_task_listener_runs_once_per_event_with_the_typed_event(tasks):
    ids = tasks.run("typed", "3")["ids"]
    assert [t["status"] for t in tasks.tasks()] == ["READY"] * 3
    first = tasks.batch()
    log = tasks.log()
    ran = lines(log, "on_order")
    assert sorted(line["id"] for line in ran) == sorted(ids)
    # The worker rebuilt the event as the class that declares its name.
    assert {line["class"] for line in ran} == {"OrderPlaced"}
    assert sorted(line["order"] for line in ran) == [0, 1, 2]
    assert {t["status"] for t in tasks.tasks()} == {"SUCCESSFUL"}
    assert "SUCCESSFUL" in first.stdout
    # Once: a second worker finds nothing left to run.
    tasks.batch()
    assert len(lines(tasks.log(), "on_order")) == 3


@pytest.mark.django_db(transaction=True)
def test_rolled_back_transaction_enqueues_nothing(tasks):
    counts = tasks.run("rollback")
    # The database backend writes the task row inside the transaction (the
    # observer's and the listener's): it vanishes with a rollback ...
    assert counts["inside_rollback"] == counts["before"] + 2
    assert counts["after_rollback"] == counts["before"]
    # ... and commits with the data (the positive control).
    assert counts["inside_commit"] == counts["before"] + 2
    assert counts["after_commit"] == counts["before"] + 2
    tasks.batch()
    log = tasks.log()
    assert [line["order"] for line in lines(log, "on_order")] == [1]
    assert lines(log, "on_order")[0]["id"] == counts["committed_event"]
    assert counts["rolled_back_event"] not in {line["id"] for line in log}
    created = lines(log, "plain_created")
    assert [line["number"] for line in created] == ["committed"]
    assert created[0]["class"] == "ModelEvent"


@pytest.mark.django_db(transaction=True)
def test_failing_listener_is_retried_with_backoff_then_reaches_failed(tasks):
    event_id = tasks.run("flaky")["id"]
    worker = tasks.start_worker()
    log = tasks.wait_for(lambda log: bool(lines(log, "gave_up")))
    output = tasks.stop(worker)
    tries = lines(log, "always_fails")
    assert [line["id"] for line in tries] == [event_id] * 3  # retries=2: three tries
    gave_up = lines(log, "gave_up")
    assert len(gave_up) == 1
    assert gave_up[0]["id"] == event_id
    assert gave_up[0]["error"] == "cannot handle 1"
    rows = tasks.tasks()
    # Each try is a task of its own, recorded as failed; the retries were deferred.
    assert [row["args"][2] for row in rows] == [1, 2, 3]
    assert {row["status"] for row in rows} == {"FAILED"}
    assert [row["deferred"] for row in rows] == [False, True, True]
    assert {row["exception"] for row in rows} == {"builtins.RuntimeError"}
    assert f"failed on event 'tasktest::flaky::one' (id {event_id}) after 3 attempt(s)" in output
    assert "attempt 1 of 3; trying again in 0.2s" in output
    assert "attempt 2 of 3; trying again in 0.4s" in output


@pytest.mark.django_db(transaction=True)
def test_listener_that_recovers_on_a_retry_never_reaches_failed(tasks):
    event_id = tasks.run("fails_once")["id"]
    tasks.batch()
    log = tasks.log()
    assert [line["attempt"] for line in lines(log, "fails_once")] == [1, 2]
    assert {line["id"] for line in log} == {event_id}
    assert lines(log, "fails_once_failed") == []
    assert [row["status"] for row in tasks.tasks()] == ["FAILED", "SUCCESSFUL"]


@pytest.mark.django_db(transaction=True)
def test_worker_killed_in_the_middle_of_a_listener(tasks):
    """Record what the database backend does when a worker dies mid-listener.

    The task was claimed (status RUNNING) when the worker was killed, and it
    stays RUNNING: no worker takes it again, it is not retried, and
    ``failed`` never runs. Nothing in django-tasks-db notices a dead
    worker; the call is lost unless an operator re-queues it.
    """
    event_id = tasks.run("slow")["id"]
    worker = tasks.start_worker()
    tasks.wait_for(lambda log: bool(lines(log, "slow_started")))
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=WORKER_TIMEOUT)
    assert worker.returncode == -signal.SIGKILL
    rows = tasks.tasks()
    assert [row["status"] for row in rows] == ["RUNNING"]
    # A new worker, with the listener free to finish at once (the release
    # file exists), runs nothing: the task is not ready any more.
    tasks.release.touch()
    tasks.batch()
    log = tasks.log()
    assert [line["listener"] for line in log] == ["slow_started"]
    assert log[0]["id"] == event_id
    assert [row["status"] for row in tasks.tasks()] == ["RUNNING"]
    # Positive control: the same worker command runs a new event of that listener.
    tasks.run("slow")
    tasks.batch()
    assert [line["listener"] for line in tasks.log()] == [
        "slow_started",
        "slow_started",
        "slow_finished",
    ]


@pytest.mark.django_db(transaction=True)
def test_task_listener_continues_the_dispatching_trace(tasks, tmp_path):
    """The worker's span for each try is a child of the span active at dispatch()."""
    spans_file = tmp_path / "spans.jsonl"
    tasks.env["CE_TASKS_TRACE_FILE"] = str(spans_file)
    traced = tasks.run("traced")
    # No span active at dispatch(): the task carries no trace context.
    untraced = tasks.run("typed", "1")["ids"][0]
    rows = tasks.tasks()
    assert [sorted(row["kwargs"]) for row in rows] == [["traceparent"], ["traceparent"], []]
    for row in rows[:2]:
        version, trace_id, parent_id, _flags = row["kwargs"]["traceparent"].split("-")
        assert (version, trace_id, parent_id) == ("00", traced["trace_id"], traced["span_id"])
    # The envelope is the event's own: no trace context in it.
    assert not any("trace" in json.dumps(row["args"]) for row in rows)
    tasks.batch()
    log = tasks.log()
    assert sorted(line["id"] for line in lines(log, "on_order")) == sorted(
        [traced["ids"][0], untraced]
    )
    assert [line["attempt"] for line in lines(log, "fails_once")] == [1, 2]
    worker_spans = [
        span for span in tracefile.read(spans_file) if span["name"] == "channels_events task"
    ]
    # One span per try of a traced call (on_order; fails_once and its retry),
    # none for the untraced one.
    assert len(worker_spans) == 3, worker_spans
    for span in worker_spans:
        assert span["trace_id"] == traced["trace_id"]
        assert span["parent_id"] == traced["span_id"]


# -- declaring task listeners (this process; the ImmediateBackend) ----------------------


class Shipped(Event):
    name = "ttasks::order::shipped"
    order: int


immediate = Dispatcher()
immediate_seen: list[tuple[Event, int]] = []
immediate_failed: list[tuple[str, str]] = []


@listen(Shipped, dispatcher=immediate, task=True)
def on_shipped(event: Shipped) -> None:
    immediate_seen.append((event, event.order))


def note_failure(event: Event, exc: BaseException) -> None:
    immediate_failed.append((event.id, str(exc)))


@listen("ttasks::broken", dispatcher=immediate, task=TaskOptions(retries=1, failed=note_failure))
def broken(event: Event) -> None:
    immediate_seen.append((event, -1))
    raise ValueError("broken listener")


def test_task_listener_gets_a_rebuilt_event_with_the_same_id():
    immediate_seen.clear()
    sent = Shipped(order=4).dispatch(immediate)
    assert len(immediate_seen) == 1
    got, order = immediate_seen[0]
    assert got is not sent  # rebuilt from the envelope
    assert type(got) is Shipped
    assert got.id == sent.id and order == 4


def test_failed_hook_option_runs_after_the_last_retry(caplog):
    immediate_seen.clear()
    immediate_failed.clear()
    sent = immediate.dispatch("ttasks::broken")
    assert [order for _, order in immediate_seen] == [-1, -1]
    assert immediate_failed == [(sent.id, "broken listener")]
    assert f"failed on event 'ttasks::broken' (id {sent.id}) after 2 attempt(s)" in caplog.text


def test_task_listeners_hear_only_this_process_events():
    registrations = [r for r in immediate.registrations if r.callback is on_shipped]
    assert [r.runs for r in registrations] == ["task"]
    assert registrations[0].remote is False


def test_lambda_and_nested_functions_are_refused():
    d = Dispatcher()
    with pytest.raises(TaskListenerError, match="lambda or is defined inside a function"):
        listen("ttasks::x", dispatcher=d, task=True)(lambda event: None)

    def nested(event: Event) -> None:
        pass

    with pytest.raises(TaskListenerError, match=re.escape("<locals>.nested")):
        listen("ttasks::x", dispatcher=d, task=True)(nested)
    with pytest.raises(TaskListenerError, match="defined in __main__"):
        d.connect(note_failure, "ttasks::x", task=True, task_path="__main__:note_failure")
    with pytest.raises(TaskListenerError, match="bound method"):
        d.connect(Dispatcher().dispatch, "ttasks::x", task=True)
    assert d.registrations == ()


def test_listener_class_inside_a_function_is_refused():
    with pytest.raises(TaskListenerError, match="module level"):

        class Nested(Listener):
            listens_for = ["ttasks::nested"]
            task = True
            dispatcher = Dispatcher()

            def handle(self, event: Event) -> None:
                pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, "retries must be an int, 0 or more, got -1"),
        ({"retries": True}, "retries must be an int, 0 or more, got True"),
        ({"backoff": "5s"}, "backoff must be a number of seconds, 0 or more, got '5s'"),
        ({"priority": 1.5}, "priority must be an int or None, got 1.5"),
        ({"queue": 3}, "queue must be a str or None, got 3"),
        ({"failed": "notify"}, "failed must be callable"),
    ],
)
def test_bad_task_options_are_refused(options, message):
    with pytest.raises(TaskListenerError, match=re.escape(message)):
        TaskOptions(**options)


def test_a_queue_the_backend_does_not_have_is_refused_at_declaration():
    d = Dispatcher()
    with pytest.raises(TaskListenerError, match="'nowhere'"):
        d.connect(note_failure, "ttasks::x", task=TaskOptions(queue="nowhere"))
    assert d.registrations == ()


def test_task_must_be_true_or_options():
    with pytest.raises(TaskListenerError, match="got 'yes'"):
        Dispatcher().connect(note_failure, "ttasks::x", task="yes")  # type: ignore[arg-type]


def test_events_list_shows_task_listeners(capsys):
    dispatcher = get_dispatcher()
    dispatcher.connect(note_failure, "ttasklist::x", task=TaskOptions(retries=2))
    try:
        call_command("events", "list")
    finally:
        dispatcher.disconnect(note_failure)
    out = capsys.readouterr().out
    assert "note_failure  [runs=task(queue=default, backend=default, retries=2)]" in out


@listen("ttasks::async", dispatcher=immediate, task=True)
async def on_async(event: Event) -> None:
    await asyncio.sleep(0)
    immediate_seen.append((event, 7))


class BrokenClass(Listener):
    listens_for = ["ttasks::broken_class"]
    task = TaskOptions(retries=2, backoff=0)
    dispatcher = immediate

    def handle(self, event: Event) -> None:
        immediate_seen.append((event, -2))
        raise KeyError("class listener")

    def failed(self, event: Event, exc: BaseException) -> None:
        immediate_failed.append((event.id, repr(exc)))


def test_async_task_listener_is_awaited_in_the_worker():
    immediate_seen.clear()
    sent = immediate.dispatch("ttasks::async")
    assert [(e.id, n) for e, n in immediate_seen] == [(sent.id, 7)]


def test_failed_method_of_a_listener_class_runs_after_the_last_retry():
    immediate_seen.clear()
    immediate_failed.clear()
    sent = immediate.dispatch("ttasks::broken_class")
    assert [n for _, n in immediate_seen] == [-2, -2, -2]
    assert immediate_failed == [(sent.id, "KeyError('class listener')")]

"""Task listeners for ``tests/test_tasks.py``, imported by the dispatcher and the workers alike.

Each appends what it saw to the file ``CE_TASKS_LOG`` names, one JSON object
a line: which listener, the event's class, id and payload.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from channels_events import Event, Listener, Observer, TaskOptions, listen
from tests.testapp.models import Plain


class OrderPlaced(Event):
    name = "tasktest::order::placed"
    order: int


def record(listener: str, event: Event, **extra: Any) -> None:
    """Append one line to the log: the listener, and the event as it arrived."""
    line = {
        "listener": listener,
        "class": type(event).__qualname__,
        "id": event.id,
        "name": event.name,
        "payload": event.payload,
        "pid": os.getpid(),
        **extra,
    }
    with open(os.environ["CE_TASKS_LOG"], "a") as log:
        log.write(json.dumps(line) + "\n")


@listen(OrderPlaced, task=True)
def on_order(event: OrderPlaced) -> None:
    record("on_order", event, order=event.order)


def gave_up(event: Event, exc: BaseException) -> None:
    record("gave_up", event, error=str(exc))


@listen("tasktest::flaky::.*", task=TaskOptions(retries=2, backoff=0.2, failed=gave_up))
def always_fails(event: Event) -> None:
    record("always_fails", event)
    raise RuntimeError(f"cannot handle {event.payload['n']}")


class FailsOnce(Listener):
    """Fails its first try, then succeeds: a retry that recovers never reaches failed()."""

    listens_for = ["tasktest::fails_once"]
    task = TaskOptions(retries=3, backoff=0)

    def handle(self, event: Event) -> None:
        tries = Path(os.environ["CE_TASKS_LOG"] + ".tries")
        count = int(tries.read_text()) if tries.exists() else 0
        tries.write_text(str(count + 1))
        record("fails_once", event, attempt=count + 1)
        if count == 0:
            raise RuntimeError("first try fails")

    def failed(self, event: Event, exc: BaseException) -> None:
        record("fails_once_failed", event)


class Slow(Listener):
    """Starts, then waits for the release file (at most a minute): a worker to kill."""

    listens_for = ["tasktest::slow"]
    task = TaskOptions(queue="slow")

    def handle(self, event: Event) -> None:
        record("slow_started", event)
        release = Path(os.environ["CE_TASKS_RELEASE"])
        deadline = time.monotonic() + 60
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        record("slow_finished", event)

    def failed(self, event: Event, exc: BaseException) -> None:
        record("slow_failed", event)


class PlainObserver(Observer):
    model = Plain
    task = True

    def created(self, event: Event) -> None:
        record("plain_created", event, number=event.payload["fields"]["number"])

"""The dispatching side of ``tests/test_tasks.py``, run as ``python -m tests.tasksproc ACTION``.

Settings: ``tests.tasks_settings`` (the database and log come from the
environment). Each action prints one JSON object on stdout:

- ``migrate``: create the tables (a fresh SQLite file);
- ``typed N``: dispatch ``OrderPlaced`` N times; ``{"ids": [...]}``;
- ``rollback``: save a ``Plain`` row and dispatch an ``OrderPlaced`` in a
  transaction that rolls back, then the same in one that commits; the task
  rows counted before, inside and after each;
- ``flaky``, ``fails_once``, ``slow``: dispatch one event for that listener;
- ``traced``: inside a span, dispatch one ``OrderPlaced`` and one event for
  ``fails_once``; their ids and the span's trace and span ids (hex);
- ``tasks``: the task rows, oldest first.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.tasks_settings")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django_tasks_db.models import DBTaskResult  # noqa: E402

from channels_events import dispatch  # noqa: E402
from tests.tasks_app.listeners import OrderPlaced  # noqa: E402
from tests.testapp.models import Plain  # noqa: E402


class RolledBack(Exception):
    pass


def rollback() -> dict[str, Any]:
    counts: dict[str, Any] = {"before": DBTaskResult.objects.count()}
    try:
        with transaction.atomic():
            Plain.objects.create(number="rolled-back", total="1.00")
            counts["rolled_back_event"] = OrderPlaced(order=-1).dispatch().id
            counts["inside_rollback"] = DBTaskResult.objects.count()
            raise RolledBack
    except RolledBack:
        pass
    counts["after_rollback"] = DBTaskResult.objects.count()
    with transaction.atomic():
        Plain.objects.create(number="committed", total="1.00")
        counts["committed_event"] = OrderPlaced(order=1).dispatch().id
        counts["inside_commit"] = DBTaskResult.objects.count()
    counts["after_commit"] = DBTaskResult.objects.count()
    return counts


def traced() -> dict[str, Any]:
    from opentelemetry import trace

    with trace.get_tracer("tasksproc").start_as_current_span("save order") as span:
        ids = [OrderPlaced(order=7).dispatch().id, dispatch("tasktest::fails_once").id]
    context = span.get_span_context()
    return {
        "ids": ids,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
    }


def tasks() -> dict[str, Any]:
    rows = []
    for row in DBTaskResult.objects.order_by("enqueued_at"):
        rows.append(
            {
                "status": row.status,
                "task_path": row.task_path,
                "queue": row.queue_name,
                "args": row.args_kwargs["args"],
                "kwargs": row.args_kwargs["kwargs"],
                "deferred": row.run_after.year < 9999 if row.run_after else False,
                "exception": row.exception_class_path,
            }
        )
    return {"tasks": rows}


def main(action: str, *args: str) -> dict[str, Any]:
    if action == "migrate":
        call_command("migrate", verbosity=0)
        return {"migrated": True}
    if action == "typed":
        return {"ids": [OrderPlaced(order=i).dispatch().id for i in range(int(args[0]))]}
    if action == "rollback":
        return rollback()
    if action in ("flaky", "fails_once", "slow"):
        name = {"flaky": "tasktest::flaky::one"}.get(action, f"tasktest::{action}")
        return {"id": dispatch(name, {"n": 1}).id}
    if action == "traced":
        return traced()
    if action == "tasks":
        return tasks()
    raise SystemExit(f"unknown action {action!r}")


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))

"""The Django task a Tasks worker runs for every task listener call: ``run_listener``.

Its dotted path (``channels_events._worker.run_listener``) is what the
backend stores with each task, so it stays put.
"""

from __future__ import annotations

from typing import Any

from ._events import Event
from ._tasks import find_task_listener, tasks_framework

__all__ = ["run_listener"]


def run_listener(
    listener: str, envelope: dict[str, Any], attempt: int = 1, traceparent: str | None = None
) -> None:
    """Run task listener ``listener`` on the event of ``envelope``: its ``attempt``-th try.

    ``traceparent``, given when a span was active at ``dispatch()``, is the
    trace the call continues.
    """
    target = find_task_listener(listener)
    target.run(Event.from_dict(envelope), attempt, traceparent)


# The backend stores the function's module and name, and expects the Task
# there: the decorated function takes its name.
run_listener = tasks_framework().task()(run_listener)

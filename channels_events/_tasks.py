"""Task listeners: each matching event is enqueued as a Django task and run by a worker.

A listener declared with ``task=True`` (or a :class:`TaskOptions`) becomes a
:class:`TaskListener`, known by a path (``"module:qualname"``) that a worker
process finds again by importing the module. Dispatching enqueues the
:data:`run_listener` task with that path and the event's envelope, through
the project's Tasks backend (``django.tasks`` where Django has it, the
``django-tasks`` backport otherwise: the imports below are the one place
that chooses); the worker rebuilds the event (the same class, the same id)
and calls the listener.

Transactions: an event dispatched inside an atomic block is enqueued when
the block commits, never if it rolls back. When the backend keeps its tasks
in the same database (the ``django-tasks-db`` backend), the task row is
written inside the transaction instead, so it commits, or vanishes, with
the data.

Retries: the backends do not retry by themselves. A listener that raises is
enqueued again, as a new task whose ``attempt`` is one more, ``run_after``
``backoff * 2 ** (attempt - 1)`` seconds (when the backend supports
``run_after``), up to ``retries`` times; then ``failed(event, exception)``
runs and the failure is logged with the event's name and id. Every failed
attempt also raises, so the backend records it as a failed task result, and
is counted (``_metrics.py``): as a listener failure, and as a retry or a
final failure.

Traces: when a span is active at ``dispatch()``, its ``traceparent`` is
passed to the task as an argument of its own (``traceparent=``), beside
the envelope and never inside it; the worker runs the listener inside a
``channels_events task`` span that continues that trace, retries included.
"""

from __future__ import annotations

import datetime
import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction
from django.db import DEFAULT_DB_ALIAS, router, transaction
from django.utils import timezone

from ._events import Event
from ._metrics import metrics
from ._tracing import run_in as run_traced
from ._tracing import traceparent as current_traceparent
from .exceptions import TaskListenerError

__all__ = ["TaskListener", "TaskOptions", "find_task_listener", "task_listener", "tasks_framework"]

logger = logging.getLogger("channels_events")

FailedHook = Callable[[Event, BaseException], Any]


def tasks_framework() -> Any:
    """Return Django's Tasks module: ``django.tasks`` (Django 6+), else the backport.

    The one place that chooses. Both offer ``task`` and ``task_backends``.
    """
    try:
        return importlib.import_module("django.tasks")
    except ImportError:
        pass
    try:
        return importlib.import_module("django_tasks")
    except ImportError:
        raise TaskListenerError(
            "Task listeners need Django's Tasks framework: Django 6, or the django-tasks "
            "backport (pip install 'channels-events[tasks]')."
        ) from None


@dataclass(frozen=True)
class TaskOptions:
    """How a task listener is enqueued and retried.

    ``queue``, ``priority`` and ``backend`` choose the Tasks queue, priority
    and backend alias (None: the backend's defaults). A listener that raises
    is tried again up to ``retries`` times, the n-th retry ``backoff * 2 **
    (n - 1)`` seconds after the failure; after the last, ``failed(event,
    exception)`` runs in the worker.
    """

    queue: str | None = None
    priority: int | None = None
    backend: str | None = None
    retries: int = 0
    backoff: float = 1.0
    failed: FailedHook | None = None

    def __post_init__(self) -> None:
        if self.queue is not None and not isinstance(self.queue, str):
            raise TaskListenerError(f"queue must be a str or None, got {self.queue!r}.")
        if self.backend is not None and not isinstance(self.backend, str):
            raise TaskListenerError(f"backend must be a str or None, got {self.backend!r}.")
        if self.priority is not None and (
            isinstance(self.priority, bool) or not isinstance(self.priority, int)
        ):
            raise TaskListenerError(f"priority must be an int or None, got {self.priority!r}.")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise TaskListenerError(f"retries must be an int, 0 or more, got {self.retries!r}.")
        if (
            isinstance(self.backoff, bool)
            or not isinstance(self.backoff, (int, float))
            or self.backoff < 0
        ):
            raise TaskListenerError(
                f"backoff must be a number of seconds, 0 or more, got {self.backoff!r}."
            )
        if self.failed is not None and not callable(self.failed):
            raise TaskListenerError(
                f"failed must be callable(event, exception) or None, got {self.failed!r}."
            )

    def delay(self, attempt: int) -> float:
        """Return the seconds to wait before trying again after failed ``attempt``."""
        return float(self.backoff * 2 ** (attempt - 1))


class TaskListener:
    """One listener that runs as a Django task; found again in a worker by its path."""

    def __init__(self, callback: Callable[..., Any], options: TaskOptions, path: str) -> None:
        self.callback = callback
        self.options = options
        self.path = path
        self.is_async = iscoroutinefunction(callback)
        changes: dict[str, Any] = {}
        if options.queue is not None:
            changes["queue_name"] = options.queue
        if options.priority is not None:
            changes["priority"] = options.priority
        if options.backend is not None:
            changes["backend"] = options.backend
        try:
            # Imported here, as the first task listener is declared: making
            # the task asks the project's Tasks backend, which must be set up.
            from ._worker import run_listener

            runner: Any = run_listener  # a Task, typed by whichever framework provides it
            # using() validates the options against the backend: a queue it
            # does not have fails here, where the listener is declared.
            #: The Django Task enqueued for each event, with this listener's options.
            self.task: Any = runner.using(**changes) if changes else runner
        except TaskListenerError:
            raise
        except Exception as exc:
            raise TaskListenerError(
                f"Task listener {path!r} cannot be enqueued with {options!r}: {exc}"
            ) from None

    def __repr__(self) -> str:
        return f"<TaskListener {self.path!r} {self.options!r}>"

    # -- the dispatching process -------------------------------------------

    def enqueue(self, event: Event) -> None:
        """Enqueue one run for ``event``: now, inside its transaction, or when it commits."""
        envelope = event.envelope  # an event that cannot travel fails here, in dispatch()
        # Taken now: at commit another span, or none, may be active.
        traceparent = current_traceparent()
        using = getattr(event, "using", None)
        connection = transaction.get_connection(using)
        if not connection.in_atomic_block or self._commits_with(using):
            self._enqueue(envelope, 1, None, traceparent)
            return

        def when_committed() -> None:
            # Raising inside on_commit would abort the remaining commit hooks.
            try:
                self._enqueue(envelope, 1, None, traceparent)
            except Exception:
                logger.exception(
                    "Task listener %s could not be enqueued for event %r (id %s).",
                    self.path,
                    envelope["name"],
                    envelope["id"],
                )

        transaction.on_commit(when_committed, using=using)

    def _commits_with(self, using: str | None) -> bool:
        """Return whether the backend writes its tasks to the transaction's database."""
        backend = tasks_framework().task_backends[self.task.backend]
        if type(backend).__module__.partition(".")[0] != "django_tasks_db":
            return False
        from django_tasks_db.models import DBTaskResult

        return (router.db_for_write(DBTaskResult) or DEFAULT_DB_ALIAS) == (
            using or DEFAULT_DB_ALIAS
        )

    def _enqueue(
        self,
        envelope: dict[str, Any],
        attempt: int,
        delay: float | None,
        traceparent: str | None,
    ) -> None:
        queued = self.task
        if delay and tasks_framework().task_backends[queued.backend].supports_defer:
            queued = queued.using(run_after=timezone.now() + datetime.timedelta(seconds=delay))
        if traceparent is None:
            # The arguments of an untraced task stay as they were.
            queued.enqueue(self.path, envelope, attempt)
        else:
            queued.enqueue(self.path, envelope, attempt, traceparent=traceparent)

    # -- the worker --------------------------------------------------------

    def run(self, event: Event, attempt: int, traceparent: str | None = None) -> None:
        """Call the listener; on failure enqueue a retry, or run ``failed`` after the last.

        ``traceparent``, the dispatching span's, makes the call a span of
        that trace; its retries carry it on.
        """
        try:
            run_traced(
                traceparent, "task", self.path, event, lambda: self._call(event), attempt=attempt
            )
        except Exception as exc:
            options = self.options
            metrics.listener_failed(event)
            if attempt <= options.retries:
                metrics.task_retried(event)
                delay = options.delay(attempt)
                logger.warning(
                    "Task listener %s failed on event %r (id %s), attempt %d of %d; "
                    "trying again in %ss.",
                    self.path,
                    event.name,
                    event.id,
                    attempt,
                    options.retries + 1,
                    delay,
                )
                self._enqueue(event.envelope, attempt + 1, delay, traceparent)
            else:
                metrics.task_failed(event)
                logger.error(
                    "Task listener %s failed on event %r (id %s) after %d attempt(s).",
                    self.path,
                    event.name,
                    event.id,
                    attempt,
                    exc_info=exc,
                )
                if options.failed is not None:
                    try:
                        options.failed(event, exc)
                    except Exception:
                        logger.exception(
                            "The failed hook of task listener %s raised on event %r (id %s).",
                            self.path,
                            event.name,
                            event.id,
                        )
            raise

    def _call(self, event: Event) -> None:
        if self.is_async:
            async_to_sync(self.callback)(event)
        else:
            self.callback(event)


_lock = threading.Lock()
#: Path -> the task listener declared under it in this process.
_task_listeners: dict[str, TaskListener] = {}


def listener_path(callback: Callable[..., Any], path: str | None = None) -> str:
    """Return ``"module:qualname"`` for a listener a worker can import, or raise."""
    if path is None:
        if getattr(callback, "__self__", None) is not None:
            raise TaskListenerError(
                f"Task listener {callback!r} is a bound method; a worker could not find its "
                "object. Use a module-level function or a Listener class."
            )
        module = getattr(callback, "__module__", None)
        qualname = getattr(callback, "__qualname__", None)
        if not module or not qualname:
            raise TaskListenerError(
                f"Task listener {callback!r} has no module and name a worker could import."
            )
        path = f"{module}:{qualname}"
    module, _, qualname = path.partition(":")
    if "<" in qualname:
        raise TaskListenerError(
            f"Task listener {path!r} is a lambda or is defined inside a function; a worker "
            "finds task listeners by import path, so define it at module level."
        )
    if module == "__main__":
        raise TaskListenerError(
            f"Task listener {path!r} is defined in __main__, which a worker cannot import; "
            "define it in a module."
        )
    return path


def task_listener(
    callback: Callable[..., Any], options: TaskOptions, path: str | None = None
) -> TaskListener:
    """Build the task listener for ``callback`` and make it findable by its path."""
    if not isinstance(options, TaskOptions):
        raise TaskListenerError(f"task must be True or a TaskOptions, got {options!r}.")
    target = TaskListener(callback, options, listener_path(callback, path))
    with _lock:
        # A module reloaded (or a class declared again) replaces its listener.
        _task_listeners[target.path] = target
    return target


def find_task_listener(path: str) -> TaskListener:
    """Return the task listener declared under ``path``, importing its module if needed."""
    target = _task_listeners.get(path)
    if target is None:
        module = path.partition(":")[0]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise TaskListenerError(
                f"Task listener {path!r}: its module cannot be imported ({exc})."
            ) from exc
        target = _task_listeners.get(path)
    if target is None:
        raise TaskListenerError(
            f"No task listener {path!r}: importing {path.partition(':')[0]!r} declared none "
            "under that name."
        )
    return target

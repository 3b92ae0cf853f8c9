"""Observing a model: ``observe()``, ``unobserve()`` and ``Observer`` classes.

Observing connects the Django signals of a model to its
:class:`~channels_events._model_events.Observation`, which turns each change
into an event (model_events.py); ``Observer`` classes observe their model and
connect their methods to its events.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from django.db import models
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

from ._dispatcher import Dispatcher, get_dispatcher
from ._events import claim_name, release_name
from ._listeners import task_options
from ._loaded_values import track_loaded_values, untrack_loaded_values
from ._m2m import connect_m2m, disconnect_m2m
from ._model_events import (
    ACTIONS,
    HOOKS,
    LOCAL_ACTIONS,
    ModelEvent,
    Observation,
    PayloadFunction,
    _observations,
    default_namespace,
    get_observation,
    muted_model_events,
    on_post_delete,
    on_post_save,
    on_pre_delete,
    on_pre_save,
)
from ._names import validate_namespace
from .exceptions import ObserverError

if TYPE_CHECKING:
    from ._tasks import TaskOptions

__all__ = [
    "ACTIONS",
    "LOCAL_ACTIONS",
    "ModelEvent",
    "Observation",
    "Observer",
    "ObserverError",
    "get_observation",
    "muted_model_events",
    "observe",
    "unobserve",
]


def observe(
    model: type[models.Model],
    fields: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    namespace: str | None = None,
    payload: PayloadFunction | None = None,
    *,
    m2m: bool = False,
    dispatcher: Dispatcher | None = None,
) -> Observation:
    """Dispatch ``creating`` ... ``deleted`` events for every change of ``model``.

    ``fields`` and ``exclude`` choose the payload's fields (secret-looking
    names are left out unless listed in ``fields``); ``namespace`` defaults to
    the ``OBSERVER_NAMESPACE`` setting, else the app label; ``payload`` may
    replace the default payload with ``payload(instance, action) -> dict``;
    ``m2m=True`` also dispatches ``m2m_changed`` for the model's many-to-many
    fields. Observing a model again with the same options is a no-op; with
    different options it raises ObserverError.
    """
    if not (isinstance(model, type) and issubclass(model, models.Model)):
        raise ObserverError(f"observe() needs a model class, got {model!r}.")
    if model._meta.abstract:
        raise ObserverError(f"{model.__qualname__} is abstract; observe its concrete subclasses.")
    if isinstance(fields, str) or isinstance(exclude, str):
        raise ObserverError("fields and exclude must be lists of field names, not a str.")
    if payload is not None and not callable(payload):
        raise ObserverError(f"payload must be callable(instance, action), got {payload!r}.")
    ns = namespace or default_namespace(model)
    try:
        validate_namespace(ns)
    except ValueError as exc:
        raise ObserverError(f"Cannot observe {model._meta.label}: {exc}") from None
    options: dict[str, Any] = {
        "namespace": ns,
        "fields": None if fields is None else tuple(fields),
        "exclude": tuple(exclude or ()),
        "payload": payload,
        "m2m": m2m,
        "dispatcher": dispatcher,
    }
    existing = _observations.get(model)
    if existing is not None:
        if existing.options() == options:
            return existing
        raise ObserverError(
            f"{model._meta.label} is already observed in namespace {existing.namespace!r} "
            f"with fields={existing.fields!r}, exclude={existing.exclude!r}; observe it once, "
            "or call unobserve() first."
        )
    try:
        observation = Observation(model, **options)
    except ValueError as exc:
        raise ObserverError(str(exc)) from None
    _observations[model] = observation
    for name in observation.names.values():
        # A copy of these events from another process is a ModelEvent too.
        claim_name(name, ModelEvent)
    uid = _uid(model)
    track_loaded_values(model)
    post_save.connect(on_post_save, sender=model, weak=False, dispatch_uid=uid)
    post_delete.connect(on_post_delete, sender=model, weak=False, dispatch_uid=uid)
    observation.target.watch(_sync_pre_signals)
    _sync_pre_signals(observation.target)
    if m2m:
        connect_m2m(observation)
    return observation


def unobserve(model: type[models.Model]) -> bool:
    """Stop dispatching events for ``model``; return whether it was observed."""
    observation = _observations.pop(model, None)
    if observation is None:
        return False
    uid = _uid(model)
    for signal in (pre_save, post_save, pre_delete, post_delete):
        signal.disconnect(sender=model, dispatch_uid=uid)
    untrack_loaded_values(model)
    disconnect_m2m(observation)
    for name in observation.names.values():
        release_name(name, ModelEvent)
    return True


def _uid(model: type[models.Model]) -> str:
    return f"channels_events:{model._meta.label}"


def _sync_pre_signals(dispatcher: Dispatcher) -> None:
    """Hook pre_save / pre_delete only while something would hear the -ing events.

    Each connected Django receiver costs every save a few microseconds, even
    when no listener wants ``creating``, ``updating`` or ``deleting``.
    """
    for model, observation in list(_observations.items()):
        if observation.target is not dispatcher:
            continue
        names = observation.names
        uid = _uid(model)
        wants_save = dispatcher.would_receive(names["creating"]) or dispatcher.would_receive(
            names["updating"]
        )
        if wants_save:
            pre_save.connect(on_pre_save, sender=model, weak=False, dispatch_uid=uid)
        else:
            pre_save.disconnect(sender=model, dispatch_uid=uid)
        if dispatcher.would_receive(names["deleting"]):
            pre_delete.connect(on_pre_delete, sender=model, weak=False, dispatch_uid=uid)
        else:
            pre_delete.disconnect(sender=model, dispatch_uid=uid)


class Observer:
    """Subclass with ``model = Order`` and any of the methods ``creating`` ... ``deleted``.

    Each method receives the :class:`ModelEvent`. The class is registered when
    it is defined: put observers in an ``observers`` module of an installed
    app, which channels-events imports when Django starts. Class attributes
    ``namespace``, ``fields``, ``exclude`` and ``m2m`` are passed to
    :func:`observe`; define ``payload(self, instance, action)`` to build the
    payload yourself. ``after_commit = True`` runs ``created``, ``updated``,
    ``deleted`` and ``m2m_changed`` only once the transaction commits.

    The methods run only in the process where the change happened: every
    process that defines the observer runs its own for its own saves, and
    none runs it again for a change another process published. (Listeners
    connected with :func:`~channels_events.listen` hear those too.)
    Defining the class again (a module reloaded) replaces its methods.
    """

    model: ClassVar[type[models.Model]]
    namespace: ClassVar[str | None] = None
    fields: ClassVar[Sequence[str] | None] = None
    exclude: ClassVar[Sequence[str]] = ()
    m2m: ClassVar[bool] = False
    after_commit: ClassVar[bool] = False
    priority: ClassVar[int] = 0
    background: ClassVar[bool] = False
    task: ClassVar[bool | TaskOptions] = False
    dispatcher: ClassVar[Dispatcher | None] = None
    observation: ClassVar[Observation]

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        model = cls.__dict__.get("model") or getattr(cls, "model", None)
        if model is None:
            raise ObserverError(f"{cls.__qualname__} must set model = <a model class>.")
        hooks = [action for action in HOOKS if callable(getattr(cls, action, None))]
        if not hooks:
            raise ObserverError(
                f"{cls.__qualname__} defines none of the methods {', '.join(HOOKS)}."
            )
        if "m2m_changed" in hooks and not cls.m2m:
            raise ObserverError(f"{cls.__qualname__} defines m2m_changed; set m2m = True.")
        instance = cls()
        custom = getattr(cls, "payload", None)
        observation = observe(
            model,
            fields=cls.fields,
            exclude=cls.exclude,
            namespace=cls.namespace,
            payload=getattr(instance, "payload", None) if custom else None,
            m2m=cls.m2m,
            dispatcher=cls.dispatcher,
        )
        cls.observation = observation
        dispatcher = cls.dispatcher or get_dispatcher()
        for action in hooks:
            uid = f"{cls.__module__}.{cls.__qualname__}.{action}"
            # Connecting with a dispatch_uid in use keeps the first
            # registration: the class defined again must replace its own.
            dispatcher.disconnect(dispatch_uid=uid)
            dispatcher.connect(
                getattr(instance, action),
                re.escape(observation.names[action]),
                priority=cls.priority,
                after_commit=cls.after_commit and action not in LOCAL_ACTIONS,
                remote=False,
                dispatch_uid=uid,
                background=cls.background,
                task=task_options(cls.task, getattr(instance, "failed", None)),
                task_path=f"{cls.__module__}:{cls.__qualname__}.{action}",
            )

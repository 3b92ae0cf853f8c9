"""Model events: what an observed model's saves and deletes become, and who dispatches them.

:class:`ModelEvent` is the event. :class:`Observation` holds how one model is
observed (its event names, its payload builder, the dispatcher its events go
to) and turns a change into an event; the Django signal receivers here find
the observation of the model that sent the signal. Registering observations
and connecting the receivers is _observers.py's part; payloads are built by
_payloads.py.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any

from django.db import models

from ._conf import events_settings, on_change
from ._dispatcher import Dispatcher, get_dispatcher
from ._events import Event
from ._names import SEPARATOR
from ._payloads import PayloadBuilder

__all__ = [
    "ACTIONS",
    "BULK_ACTIONS",
    "HOOKS",
    "LOCAL_ACTIONS",
    "ModelEvent",
    "Observation",
    "PayloadFunction",
    "default_namespace",
    "event_name",
    "get_observation",
    "is_muted",
    "muted_model_events",
    "on_post_delete",
    "on_post_save",
    "on_pre_delete",
    "on_pre_save",
]

#: The lifecycle actions of one instance, in the order they happen.
ACTIONS = ("creating", "created", "updating", "updated", "deleting", "deleted")
#: Actions that happen before the database write; they never leave the process.
LOCAL_ACTIONS = frozenset({"creating", "updating", "deleting"})
#: What an Observer may define a method for.
HOOKS = (*ACTIONS, "m2m_changed")
#: Actions of the batched events, one per bulk operation.
BULK_ACTIONS = ("bulk_created", "bulk_updated", "bulk_deleted")

PayloadFunction = Callable[[models.Model, str], dict[str, Any]]

_muted: contextvars.ContextVar[bool | frozenset[type[models.Model]]] = contextvars.ContextVar(
    "channels_events_muted_models", default=frozenset()
)


class ModelEvent(Event):
    """An event about one model instance: ``<namespace>::<Model>::<action>``.

    ``instance`` is the model instance (in-process listeners only), ``action``
    the lifecycle action and ``using`` the database alias. Publication to
    other processes waits for the transaction to commit.
    """

    publish_on_commit = True
    # Set by whoever makes the event. Not annotated in the class body, where
    # an annotation declares a payload field; a copy received from another
    # process has no database alias.
    if TYPE_CHECKING:
        using: str | None
    else:
        using = None

    @property
    def action(self) -> str:
        """Return the action: the last segment of the name (``created``, ``bulk_deleted``)."""
        return self.name.rpartition(SEPARATOR)[2]


@contextlib.contextmanager
def muted_model_events(*models_: type[models.Model]) -> Iterator[None]:
    """Dispatch no model events inside the block, for the given models or all of them.

    Meant for data migrations, fixtures and bulk imports. The setting is
    context-local: other threads and tasks keep their events.
    """
    current = _muted.get()
    if not models_ or current is True:
        token = _muted.set(True)
    else:
        token = _muted.set(frozenset(current) | frozenset(models_))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _muted.reset(token)


def is_muted(model: type[models.Model]) -> bool:
    """Return whether :func:`muted_model_events` silences ``model`` here."""
    muted = _muted.get()
    return muted is True or (bool(muted) and model in muted)  # type: ignore[operator]


def default_namespace(model: type[models.Model]) -> str:
    """Return the namespace of ``model``'s events when none is given: the setting, or its app."""
    return events_settings.OBSERVER_NAMESPACE or model._meta.app_label


def event_name(namespace: str, model: type[models.Model], action: str) -> str:
    """Return the name of ``model``'s ``action`` events: ``<namespace>::<Model>::<action>``."""
    return f"{namespace}{SEPARATOR}{model.__name__}{SEPARATOR}{action}"


class Observation:
    """Turn one model's changes into events: their names, their payloads, their dispatcher.

    ``namespace``, ``fields``, ``exclude``, ``payload``, ``m2m`` and
    ``dispatcher`` are the options of :func:`~channels_events.observe`. The
    payload builder is made here, so a field name that does not exist raises
    ValueError at once, and made again after a settings change (the
    ``SENSITIVE_FIELDS`` setting decides which fields it reads).
    """

    def __init__(
        self,
        model: type[models.Model],
        *,
        namespace: str,
        fields: tuple[str, ...] | None,
        exclude: tuple[str, ...],
        payload: PayloadFunction | None,
        m2m: bool,
        dispatcher: Dispatcher | None,
    ) -> None:
        self.model = model
        self.namespace = namespace
        self.fields = fields
        self.exclude = exclude
        #: ``payload(instance, action)``, which replaces the built payload, or None.
        self.payload = payload
        self.m2m = m2m
        self.dispatcher = dispatcher
        #: The dispatcher the events go to.
        self.target = dispatcher or get_dispatcher()
        #: The event name of each action.
        self.names = {
            action: event_name(namespace, model, action) for action in (*HOOKS, *BULK_ACTIONS)
        }
        self._builder: PayloadBuilder | None = None
        self.builder  # noqa: B018 - a field name that does not exist fails now, not at a save
        on_change(self._settings_changed)

    def options(self) -> dict[str, Any]:
        """Return the options this observation was made with, as keyword arguments."""
        return {
            "namespace": self.namespace,
            "fields": self.fields,
            "exclude": self.exclude,
            "payload": self.payload,
            "m2m": self.m2m,
            "dispatcher": self.dispatcher,
        }

    @property
    def builder(self) -> PayloadBuilder:
        """Return the builder of this model's payloads."""
        builder = self._builder
        if builder is None:
            builder = self._builder = PayloadBuilder.for_model(
                self.model, self.fields, self.exclude
            )
        return builder

    def _settings_changed(self) -> None:
        # The next event selects the fields again, under the new settings; not
        # now, inside setting_changed, where a bad setting must not raise.
        self._builder = None

    @property
    def selected(self) -> tuple[tuple[str, str], ...]:
        """Return ``(name, attname)`` of the fields payloads carry."""
        return self.builder.selected

    def remember(self, instance: models.Model, names: Collection[str] | None = None) -> None:
        """Keep an instance's values as just loaded (only ``names``, if given) for ``changed``."""
        if self.payload is None:
            self.builder.remember(instance, names)

    def emit(
        self,
        action: str,
        instance: models.Model | None,
        using: str | None,
        payload: dict[str, Any] | None = None,
        update_fields: Collection[str] | None = None,
    ) -> ModelEvent | None:
        """Dispatch the event of ``action``, unless it is an ``-ing`` event nobody would hear.

        Without ``payload``, it is built from ``instance`` (a save's with
        ``changed`` and ``previous``, given the ``update_fields`` it wrote).
        """
        target = self.target
        name = self.names[action]
        local = action in LOCAL_ACTIONS
        if local and not target.has_receivers(name):
            return None
        if payload is None:
            assert instance is not None
            if self.payload is not None:
                payload = self.payload(instance, action)
            elif action == "created" or action == "updated":
                payload = self.builder.saved(instance, action == "created", update_fields)
            else:
                payload = self.builder.payload(instance)
        event = ModelEvent(name, payload)
        event.instance = instance
        event.using = using
        if local:
            event.local = True
        target.dispatch(event)
        return event


_observations: dict[type[models.Model], Observation] = {}


def get_observation(model: type[models.Model]) -> Observation | None:
    """Return how ``model`` is observed, or None."""
    return _observations.get(model)


def on_pre_save(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    """Dispatch ``creating`` or ``updating`` (pre_save receiver of observed models)."""
    observation = _observations.get(sender)
    if observation is None or is_muted(sender):
        return
    # _state.adding, not a missing pk: models with preset keys are new too.
    observation.emit("creating" if instance._state.adding else "updating", instance, using)


def on_post_save(
    sender: type[models.Model],
    instance: models.Model,
    created: bool,
    using: str,
    update_fields: frozenset[str] | None = None,
    **kwargs: Any,
) -> None:
    """Dispatch ``created`` or ``updated`` (post_save receiver of observed models)."""
    observation = _observations.get(sender)
    if observation is None or is_muted(sender):
        return
    # Django's created flag says what the database did (INSERT or UPDATE):
    # right for preset primary keys too, which a missing pk test is not.
    action = "created" if created else "updated"
    observation.emit(action, instance, using, update_fields=update_fields)


def on_pre_delete(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    """Dispatch ``deleting`` (pre_delete receiver of observed models)."""
    observation = _observations.get(sender)
    if observation is not None and not is_muted(sender):
        observation.emit("deleting", instance, using)


def on_post_delete(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    """Dispatch ``deleted`` (post_delete receiver of observed models)."""
    observation = _observations.get(sender)
    if observation is not None and not is_muted(sender):
        observation.emit("deleted", instance, using)

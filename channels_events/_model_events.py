"""What an observed model's saves and deletes turn into: ModelEvent and its payload.

:class:`Observation` holds how one model is observed (namespace, fields,
payload); the Django signal receivers here build and dispatch the events, and
keep each instance's values as last saved, so that ``changed`` and
``previous`` need no query (loaded_values.py keeps them as loaded).
Registering observations is observers.py's part.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from time import time as _now
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from django.db import models

from ._conf import events_settings
from ._dispatcher import Dispatcher, get_dispatcher
from ._events import Event
from ._payloads import VERBATIM_TYPES, ModelPayloads, json_safe, model_label, select_fields

__all__ = [
    "ACTIONS",
    "LOCAL_ACTIONS",
    "ModelEvent",
    "Observation",
    "get_observation",
    "muted_model_events",
]

ACTIONS = ("creating", "created", "updating", "updated", "deleting", "deleted")
#: Actions that happen before the database write; they never leave the process.
LOCAL_ACTIONS = frozenset({"creating", "updating", "deleting"})
_HOOKS = (*ACTIONS, "m2m_changed")

PayloadFunction = Callable[[models.Model, str], dict[str, Any]]

# Values as loaded or last saved, kept on the instance to compute ``changed``
# without a query per save.
_LOADED = "_channels_events_loaded"
_MISSING = object()
# What an instance with no kept values compares with (read-only).
_NOTHING_LOADED: Mapping[str, Any] = MappingProxyType({})
_new_event = object.__new__

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
    if TYPE_CHECKING:  # per-instance attributes, not payload fields
        action: str
        using: str | None
    else:
        action = ""
        using = None


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


def _is_muted(model: type[models.Model]) -> bool:
    muted = _muted.get()
    return muted is True or (bool(muted) and model in muted)  # type: ignore[operator]


def _model_event(
    name: str,
    payload: dict[str, Any],
    action: str,
    instance: models.Model | None,
    using: str | None,
) -> ModelEvent:
    # Not through __init__: this runs on every save. Attributes are set one
    # by one, always in this order, so instances share one key table (about
    # half the cost of assigning a fresh __dict__).
    event: ModelEvent = _new_event(ModelEvent)
    event.name = name
    event.payload = payload
    event._time = _now()
    event.action = action
    event.instance = instance
    event.using = using
    return event


@dataclass(eq=False)
class Observation:
    """How one model's changes become events: namespace, fields and payload."""

    model: type[models.Model]
    namespace: str
    fields: tuple[str, ...] | None
    exclude: tuple[str, ...]
    payload: PayloadFunction | None
    m2m: bool
    dispatcher: Dispatcher | None
    names: dict[str, str] = field(init=False)
    #: ``app_label.model_name``, the ``model`` key of payloads.
    label: str = field(init=False)
    _payloads: ModelPayloads = field(init=False)
    _version: int = field(init=False, default=-1)
    _pk_attname: str = field(init=False)
    target: Dispatcher = field(init=False)

    def __post_init__(self) -> None:
        #: The dispatcher the events go to.
        self.target = self.dispatcher or get_dispatcher()
        prefix = f"{self.namespace}::{self.model.__name__}::"
        self.names = {action: prefix + action for action in _HOOKS}
        self.label = model_label(self.model)
        pk = self.model._meta.pk
        assert pk is not None
        self._pk_attname = pk.attname
        self.payloads  # noqa: B018 - validate field names now, not at the first save

    @property
    def payloads(self) -> ModelPayloads:
        """Return the builder of this model's save payloads (follows settings)."""
        if self._version != events_settings.version:
            self._payloads = ModelPayloads(
                select_fields(self.model, self.fields, self.exclude),
                label=self.label,
                pk_attname=self._pk_attname,
                loaded_key=_LOADED,
            )
            self._version = events_settings.version
        return self._payloads

    @property
    def selected(self) -> tuple[tuple[str, str], ...]:
        """Return ``(name, attname)`` of the fields payloads carry (follows settings)."""
        return self.payloads.selected

    def same_as(self, other: Observation) -> bool:
        """Return whether two observations of a model would produce the same events."""
        return (
            self.namespace,
            self.fields,
            self.exclude,
            self.payload,
            self.m2m,
            self.dispatcher,
        ) == (
            other.namespace,
            other.fields,
            other.exclude,
            other.payload,
            other.m2m,
            other.dispatcher,
        )

    def json_fields(self, instance: models.Model) -> dict[str, Any]:
        """Return the payload's ``fields``: loaded values of the selected fields, JSON-safe.

        Deferred fields that were never loaded are left out.
        """
        values = instance.__dict__
        payloads = self.payloads
        try:
            return payloads.fields(values)
        except KeyError:  # a deferred field
            return {
                name: json_safe(values[attname])
                for name, attname in payloads.selected
                if attname in values
            }

    def json_pk(self, instance: models.Model) -> Any:
        """Return the instance's primary key, JSON-safe."""
        pk = instance.__dict__.get(self._pk_attname)
        return pk if type(pk) in VERBATIM_TYPES else json_safe(pk)

    def build_payload(self, instance: models.Model, action: str) -> dict[str, Any]:
        """Return the payload for ``action`` on ``instance`` (``changed`` is added by saves)."""
        if self.payload is not None:
            return self.payload(instance, action)
        return {
            "model": self.label,
            "pk": self.json_pk(instance),
            "fields": self.json_fields(instance),
        }

    def emit(
        self,
        action: str,
        instance: models.Model | None,
        using: str | None,
        payload: dict[str, Any] | None = None,
    ) -> ModelEvent | None:
        """Build and dispatch the event for ``action``, unless nothing would see it."""
        dispatcher = self.target
        name = self.names.get(action) or f"{self.namespace}::{self.model.__name__}::{action}"
        local = action in LOCAL_ACTIONS
        if local and not dispatcher.has_receivers(name):
            return None
        if payload is None:
            assert instance is not None
            payload = self.build_payload(instance, action)
        event = _model_event(name, payload, action, instance, using)
        if local:
            event.local = True
        dispatcher.dispatch(event)
        return event


_observations: dict[type[models.Model], Observation] = {}


def get_observation(model: type[models.Model]) -> Observation | None:
    """Return how ``model`` is observed, or None."""
    return _observations.get(model)


def _pre_save(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    observation = _observations.get(sender)
    if observation is None or _is_muted(sender):
        return
    # _state.adding, not a missing pk: models with preset keys are new too.
    observation.emit("creating" if instance._state.adding else "updating", instance, using)


def _save_payload(
    observation: Observation,
    instance: models.Model,
    created: bool,
    update_fields: Iterable[str] | None,
) -> dict[str, Any]:
    """Build a save payload the general way: with deferred fields, or for update_fields.

    Does what :class:`~channels_events._payloads.ModelPayloads` does on the
    common path, and keeps the saved values on the instance the same way.
    """
    values = instance.__dict__
    fields = observation.json_fields(instance)
    payload: dict[str, Any] = {
        "model": observation.label,
        "pk": observation.json_pk(instance),
        "fields": fields,
    }
    if created:
        values[_LOADED] = fields
        return payload
    loaded: Mapping[str, Any] = values.get(_LOADED, _NOTHING_LOADED)
    if update_fields is None:
        changed = [name for name, value in fields.items() if loaded.get(name, value) != value]
        values[_LOADED] = fields
    else:
        # Django accepts attnames ("customer_id") as well as names.
        names = frozenset(observation.model._meta.get_field(f).name for f in update_fields)
        saved = {name: value for name, value in fields.items() if name in names}
        changed = [name for name, value in saved.items() if loaded.get(name, _MISSING) != value]
        values[_LOADED] = {**loaded, **saved}
    payload["changed"] = changed
    payload["previous"] = {name: loaded[name] for name in changed if name in loaded}
    return payload


def _post_save(
    sender: type[models.Model],
    instance: models.Model,
    created: bool,
    using: str,
    update_fields: frozenset[str] | None = None,
    **kwargs: Any,
) -> None:
    observation = _observations.get(sender)
    # Nothing muted (the usual case) is an empty frozenset: one test, no call.
    if observation is None or (_muted.get() and _is_muted(sender)):
        return
    if observation.payload is not None:
        # A custom payload has no fields/changed to compute or track.
        observation.emit("created" if created else "updated", instance, using)
        return
    payloads = (
        observation._payloads
        if observation._version == events_settings.version
        else observation.payloads
    )
    # Django's created flag says what the database did (INSERT or UPDATE):
    # right for preset primary keys too, which a missing pk test is not.
    # The payload's fields are kept on the instance before listeners run, so
    # a save inside one compares with this one; listeners must treat the
    # payload as read-only, since the two share them.
    if created:
        action = "created"
        try:
            payload = payloads.created(instance.__dict__)
        except KeyError:  # a deferred field
            payload = _save_payload(observation, instance, True, None)
    elif update_fields is None:
        action = "updated"
        try:
            payload = payloads.updated(instance.__dict__)
        except KeyError:  # a deferred field
            payload = _save_payload(observation, instance, False, None)
    else:
        action = "updated"
        payload = _save_payload(observation, instance, False, update_fields)
    # _model_event(), inlined: one call less on every save.
    event: ModelEvent = _new_event(ModelEvent)
    event.name = observation.names[action]
    event.payload = payload
    event._time = _now()
    event.action = action
    event.instance = instance
    event.using = using
    observation.target.dispatch(event)


def _pre_delete(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    observation = _observations.get(sender)
    if observation is not None and not _is_muted(sender):
        observation.emit("deleting", instance, using)


def _post_delete(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    observation = _observations.get(sender)
    if observation is not None and not _is_muted(sender):
        observation.emit("deleted", instance, using)

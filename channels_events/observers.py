"""Model observers: every save and delete of an observed model becomes an event."""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from time import time as _now
from typing import TYPE_CHECKING, Any, ClassVar

from django.db import models
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save

from .conf import events_settings
from .dispatch import Dispatcher, get_dispatcher
from .events import Event
from .exceptions import ChannelsEventsError
from .names import validate_namespace
from .payloads import VERBATIM_TYPES, json_safe, model_label, select_fields

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

#: The six lifecycle actions, in the order they happen.
ACTIONS = ("creating", "created", "updating", "updated", "deleting", "deleted")
#: Actions that happen before the database write; they never leave the process.
LOCAL_ACTIONS = frozenset({"creating", "updating", "deleting"})
_HOOKS = (*ACTIONS, "m2m_changed")

PayloadFunction = Callable[[models.Model, str], dict[str, Any]]

# Values as loaded or last saved, kept on the instance to compute ``changed``
# without a query per save.
_LOADED = "_channels_events_loaded"
_CLEARED = "_channels_events_cleared"
# Set on a model class whose from_db we wrapped, holding what to restore.
_FROM_DB = "_channels_events_from_db"
_MISSING = object()
_new_event = object.__new__

_muted: contextvars.ContextVar[bool | frozenset[type[models.Model]]] = contextvars.ContextVar(
    "channels_events_muted_models", default=frozenset()
)


class ObserverError(ChannelsEventsError, TypeError):
    """Raised when a model is observed in a way that cannot work."""


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
    _selected: tuple[tuple[str, str], ...] = field(init=False, default=())
    _version: int = field(init=False, default=-1)
    _pk_attname: str = field(init=False)

    def __post_init__(self) -> None:
        prefix = f"{self.namespace}::{self.model.__name__}::"
        self.names = {action: prefix + action for action in _HOOKS}
        self.label = model_label(self.model)
        pk = self.model._meta.pk
        assert pk is not None
        self._pk_attname = pk.attname
        self.selected  # noqa: B018 - validate field names now, not at the first save

    @property
    def selected(self) -> tuple[tuple[str, str], ...]:
        """Return ``(name, attname)`` of the fields payloads carry (follows settings)."""
        if self._version != events_settings.version:
            self._selected = select_fields(self.model, self.fields, self.exclude)
            self._version = events_settings.version
        return self._selected

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
        selected = self._selected if self._version == events_settings.version else self.selected
        # Runs on every save: the inline type test spares a call per field.
        try:
            return {
                name: value
                if type(value := values[attname]) in VERBATIM_TYPES
                else json_safe(value)
                for name, attname in selected
            }
        except KeyError:  # a deferred field
            return {
                name: json_safe(values[attname]) for name, attname in selected if attname in values
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
        dispatcher = self.dispatcher or get_dispatcher()
        name = self.names.get(action) or f"{self.namespace}::{self.model.__name__}::{action}"
        local = action in LOCAL_ACTIONS
        if local and not dispatcher.has_receivers(name):
            return None
        if payload is None:
            assert instance is not None
            payload = self.build_payload(instance, action)
        # Built in one go, not through __init__: this runs on every save.
        event = _new_event(ModelEvent)
        event.__dict__ = {
            "name": name,
            "_payload": payload,
            "_time": _now(),
            "action": action,
            "instance": instance,
            "using": using,
        }
        if local:
            event.local = True
        dispatcher.dispatch(event)
        return event


_observations: dict[type[models.Model], Observation] = {}
_m2m_fields: dict[type[models.Model], tuple[Observation, models.ManyToManyField[Any, Any]]] = {}


def get_observation(model: type[models.Model]) -> Observation | None:
    """Return how ``model`` is observed, or None."""
    return _observations.get(model)


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
    ns = namespace or events_settings.OBSERVER_NAMESPACE or model._meta.app_label
    try:
        validate_namespace(ns)
    except ValueError as exc:
        raise ObserverError(f"Cannot observe {model._meta.label}: {exc}") from None
    try:
        observation = Observation(
            model=model,
            namespace=ns,
            fields=None if fields is None else tuple(fields),
            exclude=tuple(exclude or ()),
            payload=payload,
            m2m=m2m,
            dispatcher=dispatcher,
        )
    except ValueError as exc:
        raise ObserverError(str(exc)) from None
    existing = _observations.get(model)
    if existing is not None:
        if existing.same_as(observation):
            return existing
        raise ObserverError(
            f"{model._meta.label} is already observed in namespace {existing.namespace!r} "
            f"with fields={existing.fields!r}, exclude={existing.exclude!r}; observe it once, "
            "or call unobserve() first."
        )
    _observations[model] = observation
    uid = _uid(model)
    _track_loaded_values(model)
    post_save.connect(_post_save, sender=model, weak=False, dispatch_uid=uid)
    post_delete.connect(_post_delete, sender=model, weak=False, dispatch_uid=uid)
    target = dispatcher or get_dispatcher()
    target.watch(_sync_pre_signals)
    _sync_pre_signals(target)
    if m2m:
        for m2m_field in model._meta.local_many_to_many:
            through = m2m_field.remote_field.through
            assert through is not None
            _m2m_fields[through] = (observation, m2m_field)
            m2m_changed.connect(_m2m_changed, sender=through, weak=False, dispatch_uid=uid)
    return observation


def unobserve(model: type[models.Model]) -> bool:
    """Stop dispatching events for ``model``; return whether it was observed."""
    observation = _observations.pop(model, None)
    if observation is None:
        return False
    uid = _uid(model)
    for signal in (pre_save, post_save, pre_delete, post_delete):
        signal.disconnect(sender=model, dispatch_uid=uid)
    originals = model.__dict__.get(_FROM_DB, _MISSING)
    if originals is not _MISSING:
        delattr(model, _FROM_DB)
        for attribute, original in zip(("from_db", "refresh_from_db"), originals, strict=True):
            if original is None:
                delattr(model, attribute)
            else:
                setattr(model, attribute, original)
    for through, (obs, _field) in list(_m2m_fields.items()):
        if obs is observation:
            del _m2m_fields[through]
            m2m_changed.disconnect(sender=through, dispatch_uid=uid)
    return True


def _sorted_pks(pks: Any) -> list[Any]:
    values = [json_safe(pk) for pk in pks]
    try:
        return sorted(values)
    except TypeError:  # mixed types cannot happen for one model, but stay safe
        return sorted(values, key=str)


def _uid(model: type[models.Model]) -> str:
    return f"channels_events:{model._meta.label}"


def _remember(observation: Observation, instance: models.Model) -> None:
    if observation.payload is None:
        instance.__dict__[_LOADED] = observation.json_fields(instance)


def _track_loaded_values(model: type[models.Model]) -> None:
    """Wrap ``model.from_db`` to keep each loaded row's values on the instance.

    This is the hook Django documents for tracking loaded values; unlike a
    ``post_init`` receiver it costs nothing for instances built in Python.
    """
    if _FROM_DB in model.__dict__:
        return
    inherited = model.from_db.__func__  # type: ignore[attr-defined]

    def from_db(
        cls: type[models.Model], db: str | None, field_names: Any, values: Any
    ) -> models.Model:
        instance: models.Model = inherited(cls, db, field_names, values)
        observation = _observations.get(cls)
        if observation is not None:
            _remember(observation, instance)
        return instance

    inherited_refresh = model.refresh_from_db

    def refresh_from_db(self: models.Model, *args: Any, **kwargs: Any) -> None:
        inherited_refresh(self, *args, **kwargs)
        observation = _observations.get(type(self))
        if observation is None or observation.payload is not None:
            return
        fresh = observation.json_fields(self)
        wanted = kwargs.get("fields", args[1] if len(args) > 1 else None)
        if wanted is not None:
            names = {self._meta.get_field(f).name for f in wanted}
            fresh = {name: value for name, value in fresh.items() if name in names}
        self.__dict__[_LOADED] = {**self.__dict__.get(_LOADED, {}), **fresh}

    setattr(
        model,
        _FROM_DB,
        (model.__dict__.get("from_db"), model.__dict__.get("refresh_from_db")),
    )
    model.from_db = classmethod(from_db)  # type: ignore[assignment,method-assign]
    model.refresh_from_db = refresh_from_db  # type: ignore[method-assign]


def _sync_pre_signals(dispatcher: Dispatcher) -> None:
    """Hook pre_save / pre_delete only while something would hear the -ing events.

    Each connected Django receiver costs every save a few microseconds, even
    when no listener wants ``creating``, ``updating`` or ``deleting``.
    """
    for model, observation in list(_observations.items()):
        if (observation.dispatcher or get_dispatcher()) is not dispatcher:
            continue
        names = observation.names
        uid = _uid(model)
        wants_save = dispatcher.would_receive(names["creating"]) or dispatcher.would_receive(
            names["updating"]
        )
        if wants_save:
            pre_save.connect(_pre_save, sender=model, weak=False, dispatch_uid=uid)
        else:
            pre_save.disconnect(sender=model, dispatch_uid=uid)
        if dispatcher.would_receive(names["deleting"]):
            pre_delete.connect(_pre_delete, sender=model, weak=False, dispatch_uid=uid)
        else:
            pre_delete.disconnect(sender=model, dispatch_uid=uid)


def _pre_save(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    observation = _observations.get(sender)
    if observation is None or _is_muted(sender):
        return
    # _state.adding, not a missing pk: models with preset keys are new too.
    observation.emit("creating" if instance._state.adding else "updating", instance, using)


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
    payload = observation.build_payload(instance, "created" if created else "updated")
    fields = payload["fields"]
    values = instance.__dict__
    # Django's created flag says what the database did (INSERT or UPDATE):
    # right for preset primary keys too, which a missing pk test is not.
    if created:
        # Kept before listeners run, so a save inside one compares with this
        # one. Shared with the payload, which listeners must treat as read-only.
        values[_LOADED] = fields
        observation.emit("created", instance, using, payload=payload)
        return
    loaded: dict[str, Any] = values.get(_LOADED, {})
    if update_fields is None:
        changed = [name for name, value in fields.items() if loaded.get(name, value) != value]
        values[_LOADED] = fields
    else:
        # Django accepts attnames ("customer_id") as well as names.
        update_fields = frozenset(sender._meta.get_field(f).name for f in update_fields)
        saved = {name: value for name, value in fields.items() if name in update_fields}
        changed = [name for name, value in saved.items() if loaded.get(name, _MISSING) != value]
        values[_LOADED] = {**loaded, **saved}
    payload["changed"] = changed
    payload["previous"] = {name: loaded[name] for name in changed if name in loaded}
    observation.emit("updated", instance, using, payload=payload)


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


def _m2m_changed(
    sender: type[models.Model],
    instance: models.Model,
    action: str,
    reverse: bool,
    model: type[models.Model],
    pk_set: set[Any] | None,
    using: str,
    **kwargs: Any,
) -> None:
    entry = _m2m_fields.get(sender)
    if entry is None:
        return
    observation, m2m_field = entry
    if _is_muted(observation.model):
        return
    if action == "pre_clear":
        # post_clear carries no pks; read them while they still exist.
        source = m2m_field.m2m_field_name()
        target = m2m_field.m2m_reverse_field_name()
        mine, theirs = (target, source) if reverse else (source, target)
        instance.__dict__[_CLEARED] = list(
            sender._default_manager.using(using)
            .filter(**{mine: instance.pk})
            .values_list(theirs, flat=True)
        )
        return
    if not action.startswith("post_"):
        return
    pks = instance.__dict__.pop(_CLEARED, []) if action == "post_clear" else list(pk_set or ())
    payload = {
        "model": model_label(type(instance)),
        "pk": json_safe(instance.pk),
        "field": m2m_field.name,
        "action": action[len("post_") :],
        "reverse": reverse,
        "related_model": model_label(model),
        "pks": _sorted_pks(pks),
    }
    observation.emit("m2m_changed", instance, using, payload=payload)


class Observer:
    """Subclass with ``model = Order`` and any of the methods ``creating`` ... ``deleted``.

    Each method receives the :class:`ModelEvent`. The class is registered when
    it is defined: put observers in an ``observers`` module of an installed
    app, which channels-events imports when Django starts. Class attributes
    ``namespace``, ``fields``, ``exclude`` and ``m2m`` are passed to
    :func:`observe`; define ``payload(self, instance, action)`` to build the
    payload yourself. ``after_commit = True`` runs ``created``, ``updated``,
    ``deleted`` and ``m2m_changed`` only once the transaction commits.
    """

    model: ClassVar[type[models.Model]]
    namespace: ClassVar[str | None] = None
    fields: ClassVar[Sequence[str] | None] = None
    exclude: ClassVar[Sequence[str]] = ()
    m2m: ClassVar[bool] = False
    after_commit: ClassVar[bool] = False
    priority: ClassVar[int] = 0
    dispatcher: ClassVar[Dispatcher | None] = None
    observation: ClassVar[Observation]

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        model = cls.__dict__.get("model") or getattr(cls, "model", None)
        if model is None:
            raise ObserverError(f"{cls.__qualname__} must set model = <a model class>.")
        hooks = [action for action in _HOOKS if callable(getattr(cls, action, None))]
        if not hooks:
            raise ObserverError(
                f"{cls.__qualname__} defines none of the methods {', '.join(_HOOKS)}."
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
            dispatcher.connect(
                getattr(instance, action),
                re.escape(observation.names[action]),
                priority=cls.priority,
                after_commit=cls.after_commit and action not in LOCAL_ACTIONS,
                dispatch_uid=f"{cls.__module__}.{cls.__qualname__}.{action}",
            )

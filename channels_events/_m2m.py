"""Many-to-many changes of observed models: one ``m2m_changed`` event per change.

Opt-in with ``observe(..., m2m=True)`` or ``m2m = True`` on an Observer; the
payload names the field, the action and the affected primary keys. The keys
of a model whose primary key looks secret are sent as ``null``, unless the
many-to-many field (or, for the observed model, its primary key) is listed
in the observer's ``fields``.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.signals import m2m_changed

from ._json import json_safe
from ._model_events import Observation, is_muted
from ._payloads import hides_pk, model_label

__all__ = ["connect_m2m", "disconnect_m2m"]

# The pks a clear() removes, read at pre_clear and kept on the instance until
# post_clear, which carries none.
_CLEARED = "_channels_events_cleared"

#: through model -> (its observation, the many-to-many field).
_m2m_fields: dict[type[models.Model], tuple[Observation, models.ManyToManyField[Any, Any]]] = {}


def _uid(through: type[models.Model]) -> str:
    return f"channels_events.m2m:{through._meta.label}"


def connect_m2m(observation: Observation) -> None:
    """Dispatch ``m2m_changed`` for every many-to-many field the observed model declares."""
    for m2m_field in observation.model._meta.local_many_to_many:
        through = m2m_field.remote_field.through
        assert through is not None
        _m2m_fields[through] = (observation, m2m_field)
        m2m_changed.connect(_m2m_changed, sender=through, weak=False, dispatch_uid=_uid(through))


def disconnect_m2m(observation: Observation) -> None:
    """Stop what :func:`connect_m2m` started for this observation."""
    for through, (owner, _field) in list(_m2m_fields.items()):
        if owner is observation:
            del _m2m_fields[through]
            m2m_changed.disconnect(sender=through, dispatch_uid=_uid(through))


def _sorted_pks(pks: Any) -> list[Any]:
    values = [json_safe(pk) for pk in pks]
    try:
        return sorted(values)
    except TypeError:  # mixed types cannot happen for one model, but stay safe
        return sorted(values, key=str)


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
    if is_muted(observation.model):
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
    shown = observation.fields or ()
    if m2m_field.name in shown:
        hide_pk = hide_pks = False
    else:
        hide_pk = hides_pk(type(instance), shown if type(instance) is observation.model else ())
        hide_pks = hides_pk(model, shown if model is observation.model else ())
    payload = {
        "model": model_label(type(instance)),
        "pk": None if hide_pk else json_safe(instance.pk),
        "field": m2m_field.name,
        "action": action[len("post_") :],
        "reverse": reverse,
        "related_model": model_label(model),
        "pks": None if hide_pks else _sorted_pks(pks),
    }
    observation.emit("m2m_changed", instance, using, payload=payload)

"""Batched events for bulk operations, which send no per-row Django signals."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from django.db import models, transaction

from ._dispatcher import get_dispatcher
from ._json import json_safe
from ._model_events import (
    BULK_ACTIONS,
    ModelEvent,
    default_namespace,
    event_name,
    get_observation,
    is_muted,
    muted_model_events,
)
from ._payloads import hides_pk, model_label

__all__ = ["EventManager", "EventQuerySet", "emit_bulk_event"]

M = TypeVar("M", bound=models.Model)


def emit_bulk_event(
    model: type[models.Model],
    action: str,
    pks: Iterable[Any],
    using: str | None = None,
    changed: Sequence[str] | None = None,
) -> None:
    """Dispatch one ``<namespace>::<Model>::<action>`` event carrying the affected pks.

    ``action`` is one of ``bulk_created``, ``bulk_updated``, ``bulk_deleted``.
    Use it after bulk work done outside :class:`EventQuerySet` (raw SQL, say).
    ``pks`` is ``null`` when the model's primary key looks secret (unless
    its observer lists it in ``fields``).
    A model that is not observed gets names in its app label's namespace
    (or ``OBSERVER_NAMESPACE``). Nothing is dispatched when ``pks`` is empty.
    """
    if action not in BULK_ACTIONS:
        raise ValueError(f"Bulk action must be one of {BULK_ACTIONS}, got {action!r}.")
    pks = list(pks)
    if is_muted(model) or not pks:
        return
    observation = get_observation(model)
    hidden = observation.builder.hide_pk if observation is not None else hides_pk(model)
    payload: dict[str, Any] = {
        "model": model_label(model),
        "pks": None if hidden else [json_safe(pk) for pk in pks],
    }
    if changed is not None:
        payload["changed"] = list(changed)
    if observation is not None:
        observation.emit(action, None, using, payload=payload)
        return
    # An unobserved model gets its batched events under the default names,
    # without turning on its per-row events (and without a payload builder,
    # which a batched event does not use).
    name = event_name(default_namespace(model), model, action)
    event = ModelEvent(name, payload)
    event.using = using
    get_dispatcher().dispatch(event)


class EventQuerySet(models.QuerySet[M]):
    """A queryset whose bulk operations each dispatch one batched event.

    ``bulk_create`` dispatches ``bulk_created``; ``bulk_update`` and
    ``update()`` dispatch ``bulk_updated`` with ``changed`` (the field names);
    ``delete()`` dispatches ``bulk_deleted`` in place of the per-row
    ``deleting``/``deleted`` events of this model (rows of other models that
    the delete cascades to keep their own events). ``update()`` and
    ``delete()`` read the affected pks first, in the same transaction.
    """

    def bulk_create(self, objs: Iterable[M], *args: Any, **kwargs: Any) -> list[M]:
        """Insert ``objs`` as Django does, then dispatch ``bulk_created``."""
        created = super().bulk_create(objs, *args, **kwargs)
        pks = [obj.pk for obj in created if obj.pk is not None]
        emit_bulk_event(self.model, "bulk_created", pks, self.db)
        return created

    def bulk_update(
        self, objs: Iterable[M], fields: Iterable[str], batch_size: int | None = None
    ) -> int:
        """Update ``fields`` of ``objs`` as Django does, then dispatch ``bulk_updated``."""
        objs = list(objs)
        fields = list(fields)
        # Django runs one QuerySet.update() per batch: keep those silent.
        with muted_model_events(self.model):
            rows = super().bulk_update(objs, fields, batch_size=batch_size)
        pks = [obj.pk for obj in objs]
        emit_bulk_event(self.model, "bulk_updated", pks, self.db, changed=fields)
        return rows

    def update(self, **kwargs: Any) -> int:
        """Run the UPDATE as Django does, then dispatch ``bulk_updated`` with the rows' pks."""
        with transaction.atomic(using=self.db, savepoint=False):
            pks = list(self.values_list("pk", flat=True))
            rows = super().update(**kwargs)
        emit_bulk_event(self.model, "bulk_updated", pks, self.db, changed=list(kwargs))
        return rows

    def delete(self) -> tuple[int, dict[str, int]]:
        """Delete as Django does, then dispatch one ``bulk_deleted`` for this model's rows."""
        with transaction.atomic(using=self.db, savepoint=False):
            pks = list(self.values_list("pk", flat=True))
            with muted_model_events(self.model):
                result = super().delete()
        emit_bulk_event(self.model, "bulk_deleted", pks, self.db)
        return result

    delete.alters_data = True  # type: ignore[attr-defined]
    delete.queryset_only = True  # type: ignore[attr-defined]


class EventManager(models.Manager.from_queryset(EventQuerySet)):  # type: ignore[misc]
    """A manager whose querysets are :class:`EventQuerySet`: ``objects = EventManager()``."""

"""Keep each observed instance's values as loaded, so that ``changed`` needs no query.

An observed model's ``from_db`` and ``refresh_from_db`` are wrapped while it is
observed; the payload builder (_payloads.py) keeps the values they loaded on
the instance, as it keeps the values each save writes.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from ._model_events import get_observation

__all__ = ["track_loaded_values", "untrack_loaded_values"]

# Set on a model class whose methods we wrapped, holding what to restore.
_ORIGINALS = "_channels_events_from_db"


def track_loaded_values(model: type[models.Model]) -> None:
    """Wrap ``model.from_db`` and ``refresh_from_db`` to keep the values they load.

    ``from_db`` is the hook Django documents for tracking loaded values;
    unlike a ``post_init`` receiver it costs nothing for instances built in
    Python.
    """
    if _ORIGINALS in model.__dict__:
        return
    inherited = model.from_db.__func__  # type: ignore[attr-defined]

    def from_db(
        cls: type[models.Model], db: str | None, field_names: Any, values: Any
    ) -> models.Model:
        instance: models.Model = inherited(cls, db, field_names, values)
        observation = get_observation(cls)
        if observation is not None:
            observation.remember(instance)
        return instance

    inherited_refresh = model.refresh_from_db

    def refresh_from_db(self: models.Model, *args: Any, **kwargs: Any) -> None:
        inherited_refresh(self, *args, **kwargs)
        observation = get_observation(type(self))
        if observation is not None:
            # refresh_from_db(using=None, fields=None, ...)
            fields = kwargs.get("fields", args[1] if len(args) > 1 else None)
            observation.remember(self, fields)

    setattr(
        model,
        _ORIGINALS,
        (model.__dict__.get("from_db"), model.__dict__.get("refresh_from_db")),
    )
    model.from_db = classmethod(from_db)  # type: ignore[assignment,method-assign]
    model.refresh_from_db = refresh_from_db  # type: ignore[method-assign]


def untrack_loaded_values(model: type[models.Model]) -> None:
    """Undo :func:`track_loaded_values`."""
    originals = model.__dict__.get(_ORIGINALS)
    if originals is None:
        return
    delattr(model, _ORIGINALS)
    for attribute, original in zip(("from_db", "refresh_from_db"), originals, strict=True):
        if original is None:
            delattr(model, attribute)
        else:
            setattr(model, attribute, original)

"""Keep each observed instance's values as loaded, so ``changed`` needs no query.

An observed model's ``from_db`` and ``refresh_from_db`` are wrapped while it is
observed; saves keep the values they wrote (model_events.py).
"""

from __future__ import annotations

from typing import Any

from django.db import models

from ._model_events import _LOADED, _MISSING, Observation, _observations

__all__ = ["track_loaded_values", "untrack_loaded_values"]

# Set on a model class whose from_db we wrapped, holding what to restore.
_FROM_DB = "_channels_events_from_db"


def _remember(observation: Observation, instance: models.Model) -> None:
    if observation.payload is None:
        instance.__dict__[_LOADED] = observation.json_fields(instance)


def track_loaded_values(model: type[models.Model]) -> None:
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


def untrack_loaded_values(model: type[models.Model]) -> None:
    """Undo :func:`track_loaded_values`."""
    originals = model.__dict__.get(_FROM_DB, _MISSING)
    if originals is _MISSING:
        return
    delattr(model, _FROM_DB)
    for attribute, original in zip(("from_db", "refresh_from_db"), originals, strict=True):
        if original is None:
            delattr(model, attribute)
        else:
            setattr(model, attribute, original)

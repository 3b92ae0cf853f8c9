"""Build the payload of a model event from an instance: fields, pk, ``changed``, ``previous``.

PROTOCOL.md section 2 describes the payloads. :class:`PayloadBuilder` is the
one place that reads a model instance's values for an event: every save,
delete and ``-ing`` event of an observed model, whether fields are deferred or
``update_fields`` was given, goes through it. It keeps the values an instance
had when loaded or last saved on the instance itself, so that ``changed`` and
``previous`` need no query. Which fields a payload carries is decided once per
builder by :func:`select_fields`, which leaves out names that look secret.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from django.db import models

from ._conf import events_settings
from ._json import VERBATIM_TYPES, json_safe

__all__ = ["KEPT", "PayloadBuilder", "model_label", "select_fields", "sensitive_regex"]

#: The key, in an instance's ``__dict__``, of its values as loaded or last
#: saved (JSON-safe, by field name): what the next save compares with.
KEPT = "_channels_events_kept"
# What an instance with no kept values compares with (read-only).
_NOTHING_KEPT: Any = MappingProxyType({})
_UNKNOWN = object()


def model_label(model: type[models.Model]) -> str:
    """Return ``app_label.model_name``, the ``model`` key of model event payloads."""
    return model._meta.label_lower


@lru_cache(maxsize=64)
def _compile_sensitive(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


def sensitive_regex() -> re.Pattern[str] | None:
    """Return the regex (searched, case-insensitive) that marks a field name as secret."""
    patterns = tuple(events_settings.SENSITIVE_FIELDS)
    return _compile_sensitive(patterns) if patterns else None


def _is_user_model(model: type[models.Model]) -> bool:
    from django.contrib.auth.base_user import AbstractBaseUser

    return issubclass(model, AbstractBaseUser)


def select_fields(
    model: type[models.Model],
    fields: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
) -> tuple[tuple[str, str], ...]:
    """Return ``(name, attname)`` for each concrete field a payload includes.

    With ``fields`` given, exactly those (secret-looking names included, since
    they were asked for by name). Otherwise every concrete, non-m2m field less
    ``exclude`` and less any name matching the ``SENSITIVE_FIELDS`` setting.
    Raise ValueError naming the model if a field does not exist.
    """
    concrete = {f.name: f for f in model._meta.concrete_fields}
    label = model._meta.label
    excluded = set(exclude)
    if _is_user_model(model) and "password" in (fields or ()):
        raise ValueError(
            f"{label}.password is a password hash and is never put in a payload; "
            "remove it from fields."
        )
    if _is_user_model(model):
        excluded.add("password")
    for name in [*(fields or ()), *excluded]:
        if name not in concrete:
            raise ValueError(f"{label} has no concrete field {name!r}; fields: {sorted(concrete)}.")
    if fields is not None:
        # Names from the fields themselves (plain str), each once, in order.
        chosen = dict.fromkeys(concrete[name] for name in fields if name not in excluded)
        return tuple((f.name, f.attname) for f in chosen)
    secret = sensitive_regex()
    return tuple(
        (f.name, f.attname)
        for f in model._meta.concrete_fields
        if f.name not in excluded and not (secret and secret.search(f.name))
    )


class PayloadBuilder:
    """Build one model's event payloads from its instances, and keep what a save wrote.

    ``selected`` holds ``(name, attname)`` of each field a payload carries, in
    order (see :func:`select_fields`); ``label`` is the payload's ``model``.
    Values are read from the instance's ``__dict__``: a deferred field, which
    is not there, is left out rather than loaded with a query.
    """

    def __init__(self, selected: Sequence[tuple[str, str]], *, label: str, pk_attname: str) -> None:
        #: ``(name, attname)`` of each field a payload carries, in order.
        self.selected = tuple(selected)
        #: The payload's ``model``.
        self.label = label
        self._pk_attname = pk_attname
        # Django takes a field's attname ("customer_id") wherever it takes its
        # name, in update_fields and refresh_from_db(fields=...) alike.
        self._names = {attname: name for name, attname in self.selected}
        self._names.update((name, name) for name, _attname in self.selected)

    @classmethod
    def for_model(
        cls,
        model: type[models.Model],
        fields: Sequence[str] | None = None,
        exclude: Iterable[str] = (),
    ) -> PayloadBuilder:
        """Return a builder of ``model``'s payloads, carrying what :func:`select_fields` picks."""
        pk = model._meta.pk
        assert pk is not None
        selected = select_fields(model, fields, exclude)
        return cls(selected, label=model_label(model), pk_attname=pk.attname)

    def fields(self, instance: models.Model) -> dict[str, Any]:
        """Return the payload's ``fields``: the selected fields' values, JSON-safe.

        Deferred fields that were never loaded are left out.
        """
        values = instance.__dict__
        fields = {}
        for name, attname in self.selected:
            if attname in values:
                value = values[attname]
                fields[name] = value if type(value) in VERBATIM_TYPES else json_safe(value)
        return fields

    def payload(self, instance: models.Model) -> dict[str, Any]:
        """Return ``{model, pk, fields}``: the payload of every event but ``updated``."""
        pk = instance.__dict__.get(self._pk_attname)
        return {
            "model": self.label,
            "pk": pk if type(pk) in VERBATIM_TYPES else json_safe(pk),
            "fields": self.fields(instance),
        }

    def saved(
        self,
        instance: models.Model,
        created: bool,
        update_fields: Collection[str] | None = None,
    ) -> dict[str, Any]:
        """Return the payload of a save and keep the values it wrote for the next one.

        An update's payload adds ``changed``, the names of the fields written
        (all of them, or ``update_fields``) whose value differs from the kept
        one, and ``previous``, their kept values. A field whose kept value is
        unknown (never loaded, or an instance built in Python) is not reported
        changed: nothing says it was different.

        The kept values are shared with the payload's ``fields``, so listeners
        must treat the payload as read-only; they are kept before listeners
        run, so that a save inside a listener compares with this one.
        """
        payload = self.payload(instance)
        fields: dict[str, Any] = payload["fields"]
        values = instance.__dict__
        if created:
            values[KEPT] = fields
            return payload
        kept = values.get(KEPT, _NOTHING_KEPT)
        written = fields if update_fields is None else self._only(fields, update_fields)
        changed = []
        previous = {}
        for name, value in written.items():
            old = kept.get(name, _UNKNOWN)
            if old is not _UNKNOWN and old != value:
                changed.append(name)
                previous[name] = old
        # Fields that were not written (deferred, or not in update_fields)
        # keep their kept values.
        values[KEPT] = written if len(written) == len(self.selected) else {**kept, **written}
        payload["changed"] = changed
        payload["previous"] = previous
        return payload

    def remember(self, instance: models.Model, names: Iterable[str] | None = None) -> None:
        """Keep the instance's values as just loaded: all of them, or only ``names``."""
        fresh = self.fields(instance)
        values = instance.__dict__
        if names is None:
            values[KEPT] = fresh
        else:
            values[KEPT] = {**values.get(KEPT, _NOTHING_KEPT), **self._only(fresh, names)}

    def _only(self, fields: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
        """Return the part of ``fields`` that ``names`` (names or attnames) name."""
        wanted = {self._names.get(name) for name in names}
        return {name: value for name, value in fields.items() if name in wanted}

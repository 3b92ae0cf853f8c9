"""Turn model instances into the JSON-safe payloads of PROTOCOL.md section 2."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from django.db import models

from ._conf import events_settings
from ._json import PRIMITIVE_TYPES, VERBATIM_TYPES, is_flat_json, json_safe

__all__ = [
    "PRIMITIVE_TYPES",
    "VERBATIM_TYPES",
    "ModelPayloads",
    "is_flat_json",
    "json_safe",
    "model_label",
    "select_fields",
    "sensitive_regex",
]


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


_Values = dict[str, Any]


class ModelPayloads:
    """Build a model's save payloads (PROTOCOL.md section 2) from an instance's ``__dict__``.

    - ``fields(values)``: the payload's ``fields``, JSON-safe.
    - ``created(values)``: the ``created`` payload (``model``, ``pk``,
      ``fields``); keeps its fields in ``values[loaded_key]``.
    - ``updated(values)``: the ``updated`` payload, with ``changed`` (names
      whose value differs from ``values[loaded_key]``; a name missing there
      counts as unchanged) and ``previous`` (their values there), then keeps
      the new fields in ``values[loaded_key]``.

    Each raises KeyError, having changed nothing, when a field is missing from
    ``values`` (a deferred field); callers fall back to a general path.

    The three are generated as straight-line code for the given fields, as
    dataclasses generates ``__init__``: they run on every save of an observed
    model, and unrolled code with no inner calls costs about half what loops
    over the fields do. Names, attnames, the label and the key only ever
    appear in the code as ``repr()`` literals.
    """

    def __init__(
        self,
        selected: Sequence[tuple[str, str]],
        *,
        label: str,
        pk_attname: str,
        loaded_key: str,
    ) -> None:
        #: ``(name, attname)`` of each field a payload carries, in order.
        self.selected = tuple(selected)
        reads = []
        for i, (_name, attname) in enumerate(self.selected):
            reads.append(f"    v{i} = values[{attname!r}]")
            reads.append(f"    if type(v{i}) not in VERBATIM_TYPES: v{i} = json_safe(v{i})")
        attnames = [attname for _name, attname in self.selected]
        read_pk = []
        if pk_attname in attnames:
            pk = f"v{attnames.index(pk_attname)}"
        else:
            pk = "pk"
            read_pk.append(f"    pk = values.get({pk_attname!r})")
            read_pk.append("    if type(pk) not in VERBATIM_TYPES: pk = json_safe(pk)")
        fields = (
            "{" + ", ".join(f"{name!r}: v{i}" for i, (name, _) in enumerate(self.selected)) + "}"
        )
        compares = []
        for i, (name, _attname) in enumerate(self.selected):
            compares.append(f"    old = loaded.get({name!r}, v{i})")
            compares.append(f"    if old != v{i}:")
            compares.append(f"        changed.append({name!r})")
            compares.append(f"        previous[{name!r}] = old")
        head = f"{{'model': {label!r}, 'pk': {pk}, 'fields': fields"
        source = "\n".join(
            [
                "def fields(values):",
                *reads,
                f"    return {fields}",
                "def created(values):",
                *reads,
                *read_pk,
                f"    fields = values[{loaded_key!r}] = {fields}",
                f"    return {head}}}",
                "def updated(values):",
                *reads,
                *read_pk,
                f"    loaded = values.get({loaded_key!r}, NOTHING)",
                "    changed = []",
                "    previous = {}",
                *compares,
                f"    fields = values[{loaded_key!r}] = {fields}",
                f"    return {head}, 'changed': changed, 'previous': previous}}",
            ]
        )
        namespace: dict[str, Any] = {
            "VERBATIM_TYPES": VERBATIM_TYPES,
            "json_safe": json_safe,
            "NOTHING": MappingProxyType({}),
        }
        exec(compile(source, f"<channels_events payloads of {label}>", "exec"), namespace)
        self.fields: Callable[[_Values], dict[str, Any]] = namespace["fields"]
        self.created: Callable[[_Values], dict[str, Any]] = namespace["created"]
        self.updated: Callable[[_Values], dict[str, Any]] = namespace["updated"]

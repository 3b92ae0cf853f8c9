"""Build the payload of a model event from an instance: fields, pk, ``changed``, ``previous``.

PROTOCOL.md section 2 describes the payloads. :class:`PayloadBuilder` is the
one place that reads a model instance's values for an event: every save,
delete and ``-ing`` event of an observed model, whether fields are deferred or
``update_fields`` was given, goes through it. It keeps the values an instance
had when loaded or last saved on the instance itself, so that ``changed`` and
``previous`` need no query. Which fields a payload carries is decided once per
builder by :func:`select_fields`, which leaves out fields that look secret.

A name looks secret when a ``SENSITIVE_FIELDS`` pattern matches whole words
of it (:class:`SecretNames`); a value is secret when the field holding it, or
the field it points to (a foreign key to a primary key named ``token``),
looks secret. Unless the observer lists them in ``fields``, such fields are
left out, a secret primary key is sent as ``null``, and keys that look secret
are taken out of the JSON values that remain (a ``JSONField``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from django.db import models

from ._conf import events_settings
from ._json import MAX_DEPTH, VERBATIM_TYPES, json_safe

__all__ = [
    "KEPT",
    "PayloadBuilder",
    "SecretNames",
    "hides_pk",
    "model_label",
    "name_words",
    "reveals_secret",
    "secret_names",
    "select_fields",
    "without_secrets",
]

#: The key, in an instance's ``__dict__``, of its values as loaded or last
#: saved (JSON-safe, by field name): what the next save compares with.
KEPT = "_channels_events_kept"
# What an instance with no kept values compares with (read-only).
_NOTHING_KEPT: Any = MappingProxyType({})
_UNKNOWN = object()


def model_label(model: type[models.Model]) -> str:
    """Return ``app_label.model_name``, the ``model`` key of model event payloads."""
    return model._meta.label_lower


# The words of a name: an acronym, a word (capitalised or not), digits, other letters.
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[^\W\d_]+")
# Names remembered per SecretNames; JSON keys come from a small vocabulary.
_SEEN_LIMIT = 4096


def name_words(name: str) -> str:
    """Return the snake_case and camelCase words of ``name``, lower-cased, joined by ``_``.

    ``apiKey``, ``APIKey``, ``api_key`` and ``api-key`` are all ``api_key``;
    ``password1`` is ``password_1``.
    """
    return "_".join(_WORDS.findall(name)).lower()


class SecretNames:
    """Tell whether a name looks secret under one list of ``SENSITIVE_FIELDS`` patterns.

    A pattern must match whole words of the name (see :func:`name_words`),
    from the start of a word to the end of one: ``pin`` matches ``pin``,
    ``user_pin`` and ``pinCode``, not ``shipping`` or ``spinner``; ``\\w*``
    reaches inside words (``\\w*token\\w*`` matches ``csrftoken``).
    Matching ignores case.
    """

    def __init__(self, patterns: tuple[str, ...]) -> None:
        either = "|".join(f"(?:{pattern})" for pattern in patterns)
        self._regex = re.compile(f"(?:^|_)(?:{either})(?=_|$)", re.IGNORECASE) if patterns else None
        self._seen: dict[str, bool] = {}

    def __call__(self, name: str) -> bool:
        """Return whether ``name`` looks secret."""
        seen = self._seen.get(name)
        if seen is None:
            regex = self._regex
            seen = regex is not None and regex.search(name_words(name)) is not None
            if len(self._seen) >= _SEEN_LIMIT:
                self._seen.clear()
            self._seen[name] = seen
        return seen


@lru_cache(maxsize=64)
def _secret_names(patterns: tuple[str, ...]) -> SecretNames:
    return SecretNames(patterns)


def secret_names() -> SecretNames:
    """Return what tells secret-looking names under the ``SENSITIVE_FIELDS`` setting."""
    return _secret_names(tuple(events_settings.SENSITIVE_FIELDS))


def reveals_secret(field: models.Field[Any, Any], secret: SecretNames | None = None) -> bool:
    """Return whether ``field`` holds a secret: its name looks secret, or so does its target.

    A foreign key (or one-to-one field) holds the value of the field it
    points to: a key to a model whose primary key is ``token`` holds tokens.
    """
    secret = secret or secret_names()
    seen: set[models.Field[Any, Any]] = set()
    current: models.Field[Any, Any] | None = field
    while current is not None and current not in seen:
        if secret(current.name):
            return True
        seen.add(current)
        # ForeignKey and OneToOneField: the value is that of the field they point to.
        current = current.target_field if isinstance(current, models.ForeignKey) else None
    return False


def hides_pk(model: type[models.Model], shown: Collection[str] = ()) -> bool:
    """Return whether ``model``'s primary key looks secret and is not listed in ``shown``."""
    pk = model._meta.pk
    assert pk is not None
    return pk.name not in shown and reveals_secret(pk)


def without_secrets(value: Any, secret: SecretNames, depth: int = 0) -> Any:
    """Return JSON-safe ``value`` less the entries, in its objects at any depth, of secret keys."""
    if depth > MAX_DEPTH:
        return value  # too deep to travel anyway: wire_payload refuses it
    if isinstance(value, dict):
        return {
            key: without_secrets(item, secret, depth + 1)
            for key, item in value.items()
            if not secret(str(key))
        }
    if isinstance(value, list):
        return [without_secrets(item, secret, depth + 1) for item in value]
    return value


def _is_user_model(model: type[models.Model]) -> bool:
    from django.contrib.auth.base_user import AbstractBaseUser

    return issubclass(model, AbstractBaseUser)


def select_fields(
    model: type[models.Model],
    fields: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
) -> tuple[tuple[str, str], ...]:
    """Return ``(name, attname)`` for each concrete field a payload includes.

    With ``fields`` given, exactly those (secret-looking ones included, since
    they were asked for by name; a many-to-many field named there is not a
    payload field, see ``_m2m.py``). Otherwise every concrete, non-m2m field
    less ``exclude`` and less any that :func:`reveals_secret`. Raise
    ValueError naming the model if a field does not exist.
    """
    concrete = {f.name: f for f in model._meta.concrete_fields}
    many = {f.name for f in model._meta.local_many_to_many}
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
        if name not in concrete and not (name in many and name not in excluded):
            raise ValueError(f"{label} has no concrete field {name!r}; fields: {sorted(concrete)}.")
    if fields is not None:
        # Names from the fields themselves (plain str), each once, in order.
        chosen = dict.fromkeys(
            concrete[name] for name in fields if name in concrete and name not in excluded
        )
        return tuple((f.name, f.attname) for f in chosen)
    secret = secret_names()
    return tuple(
        (f.name, f.attname)
        for f in model._meta.concrete_fields
        if f.name not in excluded and not reveals_secret(f, secret)
    )


class PayloadBuilder:
    """Build one model's event payloads from its instances, and keep what a save wrote.

    ``selected`` holds ``(name, attname)`` of each field a payload carries, in
    order (see :func:`select_fields`); ``label`` is the payload's ``model``.
    Values are read from the instance's ``__dict__``: a deferred field, which
    is not there, is left out rather than loaded with a query. With
    ``hide_pk`` the payload's ``pk`` is ``None``; with ``secret``, keys it
    says look secret are taken out of the JSON values of fields.
    """

    def __init__(
        self,
        selected: Sequence[tuple[str, str]],
        *,
        label: str,
        pk_attname: str,
        hide_pk: bool = False,
        secret: SecretNames | None = None,
    ) -> None:
        #: ``(name, attname)`` of each field a payload carries, in order.
        self.selected = tuple(selected)
        #: The payload's ``model``.
        self.label = label
        #: Whether the primary key looks secret and stays out (``pk`` is None).
        self.hide_pk = hide_pk
        self._pk_attname = pk_attname
        self._secret = secret
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
        """Return a builder of ``model``'s payloads, carrying what :func:`select_fields` picks.

        Fields listed in ``fields`` are sent as they are: the primary key
        too, and JSON values with their keys.
        """
        pk = model._meta.pk
        assert pk is not None
        selected = select_fields(model, fields, exclude)
        return cls(
            selected,
            label=model_label(model),
            pk_attname=pk.attname,
            hide_pk=hides_pk(model, fields or ()),
            secret=secret_names() if fields is None else None,
        )

    def fields(self, instance: models.Model) -> dict[str, Any]:
        """Return the payload's ``fields``: the selected fields' values, JSON-safe.

        Deferred fields that were never loaded are left out.
        """
        values = instance.__dict__
        secret = self._secret
        fields = {}
        for name, attname in self.selected:
            if attname in values:
                value = values[attname]
                if type(value) not in VERBATIM_TYPES:
                    value = json_safe(value)
                    if secret is not None and isinstance(value, (dict, list)):
                        value = without_secrets(value, secret)
                fields[name] = value
        return fields

    def payload(self, instance: models.Model) -> dict[str, Any]:
        """Return ``{model, pk, fields}``: the payload of every event but ``updated``."""
        pk = None if self.hide_pk else instance.__dict__.get(self._pk_attname)
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

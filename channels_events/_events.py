"""The event envelope of PROTOCOL.md section 2 as a Python class."""

from __future__ import annotations

import inspect
import random
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ._conf import events_settings
from ._json import encode, wire_payload
from ._names import namespace_of, validate_name
from .exceptions import EventClassError, EventTooLarge, InvalidPayload

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher

__all__ = [
    "Event",
    "claim_name",
    "event_class_for",
    "event_classes",
    "new_event_id",
    "release_name",
]

E = TypeVar("E", bound="Event")

_RESERVED = frozenset(
    {
        "id",
        "name",
        "namespace",
        "payload",
        "timestamp",
        "instance",
        "local",
        "dispatch",
        "adispatch",
        "to_dict",
        "from_dict",
        "publish_on_commit",
        "is_remote",
        "envelope",
        "encoded",
        "wire_payload",
        "skip_connections",
    }
)
_ENVELOPE_KEYS = ("id", "name", "namespace", "payload", "timestamp")
# What an envelope's JSON adds to its payload's, besides the name and
# namespace (valid names need no escapes): keys, quotes, commas.
_ENVELOPE_BYTES = len('{"id":,"name":"","namespace":"","payload":,"timestamp":}')
# The JSON widths of this process's ids and timestamps: always the same.
_ID_BYTES = 28
_TIME_BYTES = 34
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [first + second for first in _CROCKFORD for second in _CROCKFORD]

_id_lock = threading.Lock()
_last_ms = -1
_last_random = 0


def new_event_id(when: float | None = None) -> str:
    """Return a new 26-character event id, sortable by creation time.

    The first 48 bits are the millisecond timestamp and the rest are random;
    ids made in the same millisecond by one process increase by one, so they
    stay unique and ordered (the ULID layout).
    """
    with _id_lock:
        return _new_event_id_locked(when)


def _new_event_id_locked(when: float | None) -> str:
    global _last_ms, _last_random
    ms = int((time.time() if when is None else when) * 1000)
    if ms <= _last_ms:
        ms = _last_ms
        _last_random = (_last_random + 1) & ((1 << 80) - 1)
    else:
        _last_ms = ms
        _last_random = random.getrandbits(79)
    value = (ms << 80) | _last_random
    # 26 characters of 5 bits, two at a time from a table of all pairs.
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(120, -1, -10)])


def _format_timestamp(when: float) -> str:
    seconds = int(when)
    micros = round((when - seconds) * 1_000_000)
    if micros == 1_000_000:
        seconds, micros = seconds + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}+00:00"


_event_classes: dict[str, type[Event]] = {}
#: Event name -> the class that declares or claims it (read-only for others).
event_classes: Mapping[str, type[Event]] = _event_classes


def _fields_payload(self: Event) -> dict[str, Any]:
    """Return the JSON-safe payload: the event's declared fields and their values."""
    return {field: getattr(self, field) for field in self._fields}


def event_class_for(name: str) -> type[Event]:
    """Return the Event subclass that declares or claims this name, or Event itself."""
    return _event_classes.get(name, Event)


def claim_name(name: str, cls: type[Event]) -> None:
    """Build events named ``name`` as ``cls``, a subclass without a fixed name.

    Observers claim their models' event names for ``ModelEvent``, so that a
    model event made anywhere (another process's envelope included) is one.
    A name a class already declares or claims stays with it.
    """
    if cls._fixed_name is not None:
        raise EventClassError(f"{cls.__qualname__} has a fixed name; it declares its name.")
    _event_classes.setdefault(validate_name(name), cls)


def release_name(name: str, cls: type[Event]) -> None:
    """Undo :func:`claim_name`, if ``cls`` holds ``name``."""
    if _event_classes.get(name) is cls:
        del _event_classes[name]


class _EventType(type):
    """Build the subclass a name declares, whoever constructs the event.

    ``Event("billing::invoice::paid", {...})`` returns an ``InvoicePaid`` when
    that class declares the name, so that a ``dispatch()`` with a dict, a
    browser ``emit`` and an envelope from another process all make the same
    event; a payload that does not fit the class raises InvalidPayload.
    """

    def __call__(cls, name: Any = None, payload: Any = None, **fields: Any) -> Any:
        if type(name) is str and not fields and cls.__dict__.get("_fixed_name") is None:
            declared = _event_classes.get(name)
            if declared is not None and declared is not cls and issubclass(declared, cls):
                if declared._fixed_name is None:  # a name claimed by an ad-hoc class
                    return type.__call__(declared, name, payload)
                return declared._from_payload(payload)
        return super().__call__(name, payload, **fields)


class Event(metaclass=_EventType):
    """Describe something that happened: a name, a JSON-safe payload, an id and a time.

    Ad-hoc events are built as ``Event("billing::invoice::paid", {"invoice": 7})``.
    Subclasses fix the name and declare typed fields, dataclass-style::

        class InvoicePaid(Event):
            name = "billing::invoice::paid"
            invoice: int
            amount: str = "0.00"

        InvoicePaid(invoice=7).dispatch()

    Field values make up the payload. A payload that cannot travel (an
    integer outside 64 bits, text with a lone surrogate: see
    ``_json.wire_payload``) raises InvalidPayload, naming the bad value's
    place, when the envelope is made, and an envelope over
    ``MAX_EVENT_BYTES`` raises EventTooLarge when it is encoded:
    ``dispatch()`` encodes it before any listener runs for an event that
    will leave the process. ``instance``
    carries a Python object (a model instance) to in-process listeners
    only; it is never serialized.
    """

    name: str
    #: The JSON-safe payload. A plain attribute of ad-hoc events (reading it
    #: costs no call on the hot path); computed from the fields of subclasses
    #: that declare them.
    payload: dict[str, Any]
    #: Whether publication to other processes waits for the transaction to commit.
    publish_on_commit: ClassVar[bool] = False
    #: A Python object for in-process listeners only (model events set it).
    instance: Any = None
    #: When true, the event is delivered in this process only and never published.
    local: bool = False
    #: True for an event that another process published and this one received.
    is_remote: bool = False
    #: Ids of websocket connections that must not receive the event (``to_others``):
    #: they travel with it between processes, never in its envelope.
    skip_connections: frozenset[str] = frozenset()

    _fields: ClassVar[tuple[str, ...]] = ()
    _required: ClassVar[frozenset[str]] = frozenset()
    _defaults: ClassVar[dict[str, Any]] = {}
    _fixed_name: ClassVar[str | None] = None
    _id: str | None = None
    _timestamp: str | None = None
    _wire: dict[str, Any] | None = None
    _envelope: dict[str, Any] | None = None
    _encoded: str | None = None
    _payload_text: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = inspect.get_annotations(cls)
        fields = list(cls._fields)
        defaults = dict(cls._defaults)
        for field, annotation in own.items():
            if "ClassVar" in str(annotation):
                continue
            if field == "name":
                continue
            if field in _RESERVED or field.startswith("_"):
                raise EventClassError(
                    f"{cls.__qualname__} declares field {field!r}, which is reserved; "
                    f"field names may not start with '_' or be one of {sorted(_RESERVED)}."
                )
            if field in cls.__dict__:
                default = cls.__dict__[field]
                if isinstance(default, (list, dict, set)):
                    raise EventClassError(
                        f"{cls.__qualname__}.{field} has a mutable default {default!r}; "
                        "use an immutable value (a tuple, a frozenset, None)."
                    )
                defaults[field] = default
            if field not in fields:
                fields.append(field)
        cls._fields = tuple(fields)
        cls._defaults = defaults
        cls._required = frozenset(f for f in fields if f not in defaults)

        # A payload the class (or a base below Event) defines itself, which
        # typed events may do; ad-hoc events store the dict they are given.
        own_payload = any("payload" in k.__dict__ for k in cls.__mro__[: cls.__mro__.index(Event)])
        fixed = cls.__dict__.get("name")
        if fixed is None:
            if own_payload and cls._fixed_name is None and not cls._fields:
                raise EventClassError(
                    f"{cls.__qualname__} defines payload, but its events are ad-hoc (no "
                    "fixed name): their payload is the dict they are built with. Declare "
                    "name = '...' and fields to compute a payload."
                )
            return
        if not isinstance(fixed, str):
            raise EventClassError(
                f"{cls.__qualname__}.name must be a str event name, got {fixed!r}."
            )
        validate_name(fixed)
        cls._fixed_name = fixed
        if not own_payload:
            # A property here, where the fields are; ad-hoc events store theirs.
            cls.payload = property(_fields_payload)  # type: ignore[assignment]
        existing = _event_classes.get(fixed)
        # A class that declares a name takes it from one that only claimed it.
        if (
            existing is not None
            and existing._fixed_name is not None
            and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__)
        ):
            raise EventClassError(
                f"Event name {fixed!r} is already declared by "
                f"{existing.__module__}.{existing.__qualname__}; "
                f"{cls.__module__}.{cls.__qualname__} must use another name."
            )
        # A re-declaration from the same module (a reload) replaces the old class.
        _event_classes[fixed] = cls

    @classmethod
    def _adhoc(cls: type[E], name: str, payload: dict[str, Any]) -> E:
        """Build an ad-hoc event from a name known to be valid and a dict.

        ``dispatch(name, payload)`` builds its event here: the checks of
        ``__init__`` (and the look-up of a declared class, which the caller
        has made) cost about a third of a whole dispatch (bench/dispatch.py).
        """
        event = object.__new__(cls)
        event.name = name
        event.payload = payload
        event._time = time.time()
        return event

    @classmethod
    def _from_payload(cls: type[E], payload: Any) -> E:
        """Build a typed event from a payload dict, refusing one that does not fit."""
        if payload is None:
            payload = {}
        if not isinstance(payload, Mapping):
            raise InvalidPayload(
                f"Payload of event {cls._fixed_name!r} must be a dict, got "
                f"{type(payload).__name__} {payload!r}."
            )
        missing = cls._required.difference(payload)
        if missing:
            raise InvalidPayload(
                f"Payload of event {cls._fixed_name!r} lacks field(s) {sorted(missing)!r} "
                f"that {cls.__qualname__} requires; got {dict(payload)!r}."
            )
        unknown = [key for key in payload if key not in cls._fields]
        if unknown:
            raise InvalidPayload(
                f"Payload of event {cls._fixed_name!r} has key(s) {sorted(map(str, unknown))!r} "
                f"that {cls.__qualname__} does not declare; its fields are {list(cls._fields)!r}."
            )
        return cls(**payload)

    def __init__(
        self, name: str | None = None, payload: Mapping[str, Any] | None = None, **fields: Any
    ) -> None:
        cls = type(self)
        self._time = time.time()
        fixed = cls._fixed_name
        if fixed is None:
            if cls._fields:
                raise EventClassError(
                    f"{cls.__qualname__} declares fields but no name; subclass it with "
                    "name = '...' to make an event you can construct."
                )
            if fields:
                raise EventClassError(
                    f"{cls.__qualname__}() takes a name and a payload dict, not keyword "
                    f"fields {sorted(fields)!r}; declare a subclass to use typed fields."
                )
            if name is None:
                raise EventClassError(f"{cls.__qualname__}() needs an event name.")
            self.name = validate_name(name)
            if payload is None:
                payload = {}
            elif not isinstance(payload, dict):
                if not isinstance(payload, Mapping):
                    raise InvalidPayload(
                        f"Payload of event {name!r} must be a dict, got "
                        f"{type(payload).__name__} {payload!r}."
                    )
                payload = dict(payload)
            self.payload = payload
            return
        if name is not None and name != fixed:
            raise EventClassError(
                f"{cls.__qualname__} is always named {fixed!r}; got name {name!r}."
            )
        if payload is not None:
            raise EventClassError(
                f"{cls.__qualname__} takes its fields as keyword arguments, "
                f"not a payload dict: {cls.__qualname__}(**payload)."
            )
        missing = cls._required.difference(fields)
        if missing:
            raise EventClassError(
                f"{cls.__qualname__}() is missing required field(s) {sorted(missing)!r}."
            )
        unknown = fields.keys() - set(cls._fields)
        if unknown:
            raise EventClassError(
                f"{cls.__qualname__}() got unknown field(s) {sorted(unknown)!r}; "
                f"its fields are {list(cls._fields)!r}."
            )
        for field, default in cls._defaults.items():
            if field not in fields:
                setattr(self, field, default)
        for field, value in fields.items():
            setattr(self, field, value)

    @property
    def namespace(self) -> str:
        """Return the first segment of the name."""
        return namespace_of(self.name)

    @property
    def id(self) -> str:
        """Return the event's unique id, made on first use."""
        if self._id is None:
            # The hub may read the id on its own thread: both must get one id.
            with _id_lock:
                if self._id is None:
                    self._id = _new_event_id_locked(self._time)
        return self._id

    @property
    def timestamp(self) -> str:
        """Return when the event was created, in ISO 8601 with a UTC offset."""
        if self._timestamp is None:
            self._timestamp = _format_timestamp(self._time)
        return self._timestamp

    def to_dict(self) -> dict[str, Any]:
        """Return the envelope as a dict: id, name, namespace, payload, timestamp."""
        return {
            "id": self.id,
            "name": self.name,
            "namespace": self.namespace,
            "payload": self.payload,
            "timestamp": self.timestamp,
        }

    @property
    def envelope(self) -> dict[str, Any]:
        """Return the envelope as it travels: built once, its payload checked once.

        The payload is made JSON-safe, and refused with InvalidPayload if it
        cannot travel (``_json.wire_payload``). An event received from
        another process keeps the envelope it came in. The payload must not
        change once the event is dispatched.
        """
        envelope = self._envelope
        if envelope is None:
            envelope = self._envelope = {
                "id": self.id,
                "name": self.name,
                "namespace": self.namespace,
                "payload": self.wire_payload,
                "timestamp": self.timestamp,
            }
        return envelope

    @property
    def wire_payload(self) -> dict[str, Any]:
        """Return the payload as it travels: checked and made JSON-safe once.

        Raise InvalidPayload, naming the bad value's place, for a payload that
        cannot travel (``_json.wire_payload``).
        """
        wire = self._wire
        if wire is None:
            wire = self._wire = wire_payload(self.payload, self.name)
        return wire

    @property
    def encoded(self) -> str:
        """Return the envelope as JSON text, encoded once per event per process.

        The text is made from the payload's JSON (:meth:`_payload_json`,
        which decides whether the event may travel) and the envelope's other
        fields, in the envelope's key order.
        """
        encoded = self._encoded
        if encoded is None:
            payload = self._payload_json()
            encoded = self._encoded = (
                '{"id":'
                + encode(self.id)
                + ',"name":'
                + encode(self.name)
                + ',"namespace":'
                + encode(self.namespace)
                + ',"payload":'
                + payload
                + ',"timestamp":'
                + encode(self.timestamp)
                + "}"
            )
        return encoded

    def _payload_json(self) -> str:
        """Return the payload as JSON text, made once: the step that decides whether it travels.

        A payload that cannot travel raises InvalidPayload (see
        :attr:`wire_payload`); an event whose envelope would be larger than
        ``MAX_EVENT_BYTES`` as JSON raises EventTooLarge. ``dispatch()``
        takes this step before any listener runs for an event that will
        leave the process; it needs neither the id nor the time, whose
        widths are fixed (an envelope from another process has its own).
        """
        text = self._payload_text
        if text is None:
            text = encode(self.wire_payload)
            # ASCII only (``_json.encode``): one character is one byte.
            size = (
                len(text)
                + _ENVELOPE_BYTES
                + len(self.name)
                + len(self.namespace)
                + (len(encode(self._id)) if self._id is not None else _ID_BYTES)
                + (len(encode(self._timestamp)) if self._timestamp is not None else _TIME_BYTES)
            )
            limit = events_settings.MAX_EVENT_BYTES
            if size > limit:
                raise EventTooLarge(
                    f"Event {self.name!r} is {size!r} bytes as JSON; MAX_EVENT_BYTES "
                    f"allows {limit!r}. Send a reference to the data (a URL, a primary key) "
                    "instead of the data."
                )
            self._payload_text = text
        return text

    @classmethod
    def from_dict(cls: type[E], data: Mapping[str, Any]) -> E:
        """Rebuild an event from its envelope, as the subclass declared for its name.

        The event keeps the envelope it came in (so it travels on unchanged,
        to browsers too). Payload keys the subclass does not declare are not
        set as fields, so that a process running an older version of an event
        class still accepts the event; a missing required field raises
        InvalidPayload.
        """
        if not isinstance(data, Mapping):
            raise InvalidPayload(f"An event envelope must be a dict, got {data!r}.")
        missing = [key for key in _ENVELOPE_KEYS if key not in data]
        if missing:
            raise InvalidPayload(f"Event envelope {data!r} is missing key(s) {missing!r}.")
        name = validate_name(data["name"])
        payload = data["payload"]
        if not isinstance(payload, dict):
            raise InvalidPayload(f"Payload of event {name!r} must be a dict, got {payload!r}.")
        for key in ("id", "timestamp"):
            if not isinstance(data[key], str):
                raise InvalidPayload(f"Envelope {key!r} must be a str, got {data[key]!r}.")
        klass = event_class_for(name) if cls._fixed_name is None else cls
        if klass._fixed_name is not None and klass._fixed_name != name:
            raise InvalidPayload(
                f"{klass.__qualname__} is named {klass._fixed_name!r}, not {name!r}."
            )
        if not issubclass(klass, cls):
            klass = cls
        event: Event
        if klass._fixed_name is None:
            event = Event.__new__(klass)
            Event.__init__(event, name, payload)
        else:
            missing_fields = klass._required.difference(payload)
            if missing_fields:
                raise InvalidPayload(
                    f"Payload of {name!r} lacks field(s) {sorted(missing_fields)!r} "
                    f"that {klass.__qualname__} requires."
                )
            event = klass(**{f: payload[f] for f in klass._fields if f in payload})
        event._id = data["id"]
        event._timestamp = data["timestamp"]
        event._envelope = {
            "id": data["id"],
            "name": name,
            "namespace": namespace_of(name),
            "payload": payload,
            "timestamp": data["timestamp"],
        }
        return event

    def dispatch(self, dispatcher: Dispatcher | None = None) -> Event:
        """Dispatch this event through ``dispatcher`` (default: the default dispatcher)."""
        from ._dispatcher import get_dispatcher

        return (dispatcher or get_dispatcher()).dispatch(self)

    async def adispatch(self, dispatcher: Dispatcher | None = None) -> Event:
        """Dispatch this event from async code; see :meth:`Dispatcher.adispatch`."""
        from ._dispatcher import get_dispatcher

        return await (dispatcher or get_dispatcher()).adispatch(self)

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {self.name!r} {self.payload!r}>"

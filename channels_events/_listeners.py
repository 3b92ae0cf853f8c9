"""Ways to declare listeners: ``@listen``, ``Listener`` classes and ``Namespace`` emitters."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ._dispatcher import Dispatcher, get_dispatcher
from ._events import Event
from ._names import SEPARATOR, compile_pattern, validate_name, validate_namespace
from ._registry import PatternLike, Registration, _as_list, pattern_text
from .exceptions import UnknownEventKey

if TYPE_CHECKING:
    from ._tasks import TaskOptions

__all__ = ["Listener", "Namespace", "listen"]

F = TypeVar("F", bound=Callable[..., Any])


def listen(
    pattern: PatternLike | Iterable[PatternLike],
    *,
    priority: int = 0,
    once: bool = False,
    filter: Callable[[Event], bool] | None = None,
    after_commit: bool = False,
    remote: bool = True,
    namespaces: Iterable[str] | None = None,
    dispatcher: Dispatcher | None = None,
    background: bool = False,
    task: bool | TaskOptions = False,
) -> Callable[[F], F]:
    """Connect the decorated function (sync or async) to events matching ``pattern``.

    The pattern is validated and compiled here, so a mistake fails at import
    time. The function is returned unchanged. ``remote=False`` keeps it to
    events dispatched in this process; ``background=True`` runs it on the
    process's background pool; ``task=True`` or a
    :class:`~channels_events.TaskOptions` runs it as a Django task (it must
    then be a module-level function); the other options are those of
    :meth:`Dispatcher.connect`.
    """
    target = dispatcher or get_dispatcher()
    sources = _as_list(pattern)
    # Compile before decorating, so a bad pattern fails where it is written.
    for source in sources:
        compile_pattern(pattern_text(source))

    def decorator(func: F) -> F:
        target.connect(
            func,
            sources,
            priority=priority,
            once=once,
            filter=filter,
            after_commit=after_commit,
            remote=remote,
            namespaces=namespaces,
            background=background,
            task=task,
        )
        return func

    return decorator


def task_options(task: bool | TaskOptions, failed: Callable[..., Any] | None) -> Any:
    """Return a class's ``task`` option with its ``failed`` method as the hook, if it has one."""
    if task is False or task is None or failed is None:
        return task
    from ._tasks import TaskOptions

    options = TaskOptions() if task is True else task
    if isinstance(options, TaskOptions) and options.failed is None:
        return dataclasses.replace(options, failed=failed)
    return options


class Listener:
    """Subclass with ``listens_for`` and ``handle(event)`` to get a registered listener.

    The class is instantiated once, with no arguments, when it is defined, and
    its ``handle`` method is connected to every pattern in ``listens_for``
    (regex strings or Event subclasses). ``handle`` may be async. Subclasses
    declared with ``abstract=True`` are not registered. Declaring the class
    again (a module reload) replaces the earlier one. Class attributes
    ``priority``, ``once``, ``after_commit``, ``remote``, ``namespaces``,
    ``background`` and ``task`` are the options of :meth:`Dispatcher.connect`.
    A task listener class (declared at module level) may define
    ``failed(self, event, exception)``, run in the worker once the last retry
    has failed.
    """

    listens_for: ClassVar[Iterable[PatternLike]] = ()
    priority: ClassVar[int] = 0
    once: ClassVar[bool] = False
    after_commit: ClassVar[bool] = False
    remote: ClassVar[bool] = True
    namespaces: ClassVar[Iterable[str] | None] = None
    background: ClassVar[bool] = False
    task: ClassVar[bool | TaskOptions] = False
    dispatcher: ClassVar[Dispatcher | None] = None
    _registrations: ClassVar[list[Registration]] = []

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._registrations = []
        if abstract:
            return
        patterns = cls.listens_for
        if isinstance(patterns, (str, type)):
            raise TypeError(
                f"{cls.__qualname__}.listens_for must be a list of patterns, "
                f"not a single {patterns!r}."
            )
        patterns = list(patterns)
        if not patterns:
            raise TypeError(
                f"{cls.__qualname__} has an empty listens_for; list at least one pattern or "
                "declare the class with abstract=True."
            )
        if cls.handle is Listener.handle:
            raise TypeError(f"{cls.__qualname__} must define handle(self, event).")
        instance = cls()
        dispatcher = cls.dispatcher or get_dispatcher()
        uid = f"{cls.__module__}.{cls.__qualname__}"
        # A uid in use keeps its first registration: a re-declared class
        # (a reload) lets go of its predecessor first.
        dispatcher.disconnect(dispatch_uid=uid)
        cls._registrations = dispatcher.connect(
            instance.handle,
            patterns,
            priority=cls.priority,
            once=cls.once,
            after_commit=cls.after_commit,
            remote=cls.remote,
            namespaces=cls.namespaces,
            dispatch_uid=uid,
            background=cls.background,
            task=task_options(cls.task, getattr(instance, "failed", None)),
            task_path=f"{cls.__module__}:{cls.__qualname__}",
        )

    def handle(self, event: Event) -> Any:
        """Handle one event; override in subclasses (it may be ``async def``)."""
        raise NotImplementedError

    @classmethod
    def disconnect(cls) -> bool:
        """Disconnect this listener class from its dispatcher."""
        return (cls.dispatcher or get_dispatcher()).disconnect(
            dispatch_uid=f"{cls.__module__}.{cls.__qualname__}"
        )


class Namespace:
    """Give a module its own emitter: names declared once, dispatched and listened to by key.

    ::

        user = Namespace("user", {"ACCOUNT_CREATED": "account::created"})
        user.ACCOUNT_CREATED            # "user::account::created"
        user.dispatch(user.ACCOUNT_CREATED, {"id": 7})
        user.dispatch("account::created", {"id": 7})   # relative names work too

        @user.listen("account::.*")
        def on_account(event): ...

    A name or pattern that already starts with ``"<namespace>::"`` is used as
    is; anything else is taken relative to the namespace.
    """

    def __init__(
        self,
        namespace: str,
        events: Mapping[str, str] | None = None,
        *,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.namespace = validate_namespace(namespace)
        self._dispatcher = dispatcher
        self._prefix = namespace + SEPARATOR
        names: dict[str, str] = {}
        for key, relative in (events or {}).items():
            if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
                raise TypeError(
                    f"Namespace {namespace!r}: event key {key!r} must be a public identifier."
                )
            if hasattr(type(self), key) or key in ("namespace",):
                raise TypeError(
                    f"Namespace {namespace!r}: event key {key!r} is the name of a Namespace "
                    "attribute; choose another (keys are usually UPPER_CASE)."
                )
            names[key] = validate_name(self.qualify(relative))
        self._names = names

    @property
    def dispatcher(self) -> Dispatcher:
        """Return the dispatcher this namespace dispatches through."""
        return self._dispatcher or get_dispatcher()

    @property
    def names(self) -> dict[str, str]:
        """Return the declared keys and their full event names."""
        return dict(self._names)

    def qualify(self, name: str) -> str:
        """Return ``name`` with this namespace in front, unless it already has it."""
        if not isinstance(name, str):
            raise TypeError(f"Event name must be a str, got {name!r}.")
        return name if name.startswith(self._prefix) else self._prefix + name

    def __getattr__(self, key: str) -> str:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._names[key]
        except KeyError:
            raise UnknownEventKey(
                f"Namespace {self.namespace!r} declares no event {key!r}; "
                f"declared: {sorted(self._names)}."
            ) from None

    def dispatch(self, name: str, payload: Mapping[str, Any] | None = None) -> Event:
        """Dispatch ``name`` (full or relative to this namespace) with ``payload``."""
        return self.dispatcher.dispatch(Event(self.qualify(name), payload))

    async def adispatch(self, name: str, payload: Mapping[str, Any] | None = None) -> Event:
        """Dispatch from async code; see :meth:`Dispatcher.adispatch`."""
        return await self.dispatcher.adispatch(Event(self.qualify(name), payload))

    def listen(self, pattern: str | Iterable[str] = ".*", **options: Any) -> Callable[[F], F]:
        """Decorate a listener for ``pattern`` (relative to this namespace; default all)."""
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        qualified = [
            p if p.startswith(self._prefix) else f"{re.escape(self._prefix)}(?:{p})"
            for p in patterns
        ]
        options.setdefault("dispatcher", self._dispatcher)
        return listen(qualified, **options)

    def __repr__(self) -> str:
        return f"<Namespace {self.namespace!r} {self._names!r}>"

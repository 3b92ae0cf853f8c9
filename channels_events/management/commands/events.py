"""``manage.py events``: tail, emit, list and check events from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

from django.core.checks import ERROR, INFO, WARNING, CheckMessage
from django.core.management.base import BaseCommand, CommandError, CommandParser

from channels_events._checks import run_checks
from channels_events._conf import DEFAULTS, events_settings
from channels_events._dispatcher import Dispatcher, get_dispatcher
from channels_events._events import Event
from channels_events._hub import Hub, get_hub
from channels_events._layer import redis_hosts
from channels_events._loss import Loss, events_lost
from channels_events._model_events import _observations
from channels_events._names import compile_pattern, literal_namespace, validate_namespace
from channels_events._registry import Registration
from channels_events.exceptions import ChannelsEventsError


class Command(BaseCommand):
    help = "Tail live events, emit one, list listeners and observers, or check the setup."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        listen = actions.add_parser(
            "listen", help="Print each event matching PATTERN, from any process, as a JSON line."
        )
        listen.add_argument("pattern", help="a regex matched with fullmatch, e.g. 'shop::.*'")
        listen.add_argument(
            "--namespace",
            action="append",
            default=[],
            help="namespace to join when PATTERN does not start with one (repeatable)",
        )
        listen.add_argument("--pretty", action="store_true", help="indented, for people")
        listen.add_argument("--count", type=int, default=0, help="exit after this many events")
        listen.add_argument("--timeout", type=float, default=0, help="exit after this many seconds")
        emit = actions.add_parser("emit", help="Dispatch one event (and publish it).")
        emit.add_argument("name", help="event name, e.g. 'billing::invoice::paid'")
        emit.add_argument("--payload", default="{}", help="a JSON object (default: {})")
        actions.add_parser("list", help="Show listeners, observers and the namespaces joined.")
        actions.add_parser("check", help="Report settings and whether the channel layer answers.")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        getattr(self, f"handle_{action}")(**options)

    # -- listen ------------------------------------------------------------

    def handle_listen(
        self,
        pattern: str,
        namespace: list[str],
        pretty: bool,
        count: int,
        timeout: float,
        **options: Any,
    ) -> None:
        try:
            compile_pattern(pattern)
            namespaces = [validate_namespace(ns) for ns in namespace]
        except ChannelsEventsError as exc:
            raise CommandError(str(exc)) from None
        if literal_namespace(pattern) is None and not namespaces:
            raise CommandError(
                f"Pattern {pattern!r} does not start with a literal namespace; "
                "say which to join with --namespace (e.g. --namespace shop)."
            )
        if get_hub().layer is None:
            raise CommandError("No channel layer: set CHANNEL_LAYERS (and CHANNELS_EVENTS).")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self._listen(pattern, namespaces, pretty, count, timeout))

    async def _listen(
        self, pattern: str, namespaces: list[str], pretty: bool, count: int, timeout: float
    ) -> None:
        # An isolated dispatcher: the project's own listeners must not run
        # again in this process for events that other processes dispatched.
        dispatcher = Dispatcher()
        hub = Hub(dispatcher=dispatcher)
        done = asyncio.Event()
        seen = 0

        async def show(event: Event) -> None:
            nonlocal seen
            envelope = event.to_dict()
            text = json.dumps(envelope, indent=2 if pretty else None, sort_keys=pretty)
            self.stdout.write(text)
            self.stdout.flush()
            seen += 1
            if count and seen >= count:
                done.set()

        def report_loss(
            sender: Any,
            namespace: str,
            reason: str,
            missed: int | None,
            origin: str | None,
            **kw: Any,
        ) -> None:
            loss = Loss(namespace, reason, missed, origin)
            self.stderr.write(f"Lost events: {loss.describe()}.")
            self.stderr.flush()

        dispatcher.connect(show, pattern, namespaces=namespaces or None)
        events_lost.connect(report_loss, sender=hub, weak=False)
        await hub.attach()
        if sys.stderr.isatty():
            self.stderr.write(f"Listening for {pattern!r}; Ctrl-C to stop.")
        try:
            await asyncio.wait_for(done.wait(), timeout or None)
        except asyncio.TimeoutError:
            pass
        finally:
            events_lost.disconnect(report_loss, sender=hub)
            await hub.stop()

    # -- emit --------------------------------------------------------------

    def handle_emit(self, name: str, payload: str, **options: Any) -> None:
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--payload is not valid JSON: {exc}.") from None
        if not isinstance(data, dict):
            raise CommandError(f"--payload must be a JSON object, got {payload!r}.")
        try:
            event = get_dispatcher().dispatch(Event(name, data))
        except ChannelsEventsError as exc:
            raise CommandError(str(exc)) from None
        hub = get_hub()
        if hub.layer is not None and not hub.flush():
            raise CommandError(f"Event {event.id} was dispatched but could not be published.")
        self.stdout.write(event.id)

    # -- list --------------------------------------------------------------

    def handle_list(self, **options: Any) -> None:
        dispatcher = get_dispatcher()
        self.stdout.write("Listeners (in delivery order per event):")
        registrations = dispatcher.registrations
        if not registrations:
            self.stdout.write("  (none)")
        for r in registrations:
            flags = [
                flag
                for flag, on in (
                    (f"runs={_where(r)}", True),
                    (f"priority={r.priority}", r.priority),
                    ("once", r.once),
                    ("after_commit", r.after_commit),
                    ("async", r.is_async),
                )
                if on
            ]
            suffix = f"  [{', '.join(flags)}]" if flags else ""
            self.stdout.write(f"  {r.pattern}  ->  {r.description}{suffix}")
        self.stdout.write("Observed models:")
        if not _observations:
            self.stdout.write("  (none)")
        for model, observation in sorted(_observations.items(), key=lambda i: i[0]._meta.label):
            fields = ", ".join(name for name, _ in observation.selected)
            self.stdout.write(
                f"  {model._meta.label}  ->  {observation.namespace}::{model.__name__}::*"
                f"  fields: {fields}"
            )
        wanted = sorted(get_hub().wanted_namespaces())
        self.stdout.write("Namespaces joined by the hub: " + (", ".join(wanted) or "(none)"))

    # -- check -------------------------------------------------------------

    def handle_check(self, **options: Any) -> None:
        problems = run_checks()
        self.stdout.write("CHANNELS_EVENTS:")
        for key in sorted(DEFAULTS):
            self.stdout.write(f"  {key} = {getattr(events_settings, key)!r}")
        for problem in problems:
            self.stdout.write(self._styled(problem))
        hub = get_hub()
        layer = hub.layer
        if layer is None:
            self.stdout.write("Channel layer: none; events stay in this process.")
        else:
            alias = hub.link.alias
            name = f"{type(layer).__module__}.{type(layer).__qualname__}"
            try:
                asyncio.run(asyncio.wait_for(_probe(layer), _PROBE_TIMEOUT))
            except Exception as exc:
                raise CommandError(_unreachable(alias, name, exc)) from None
            self.stdout.write(self.style.SUCCESS(f"Channel layer: {name} answers."))
        if any(problem.level >= ERROR for problem in problems):
            raise CommandError("CHANNELS_EVENTS has errors; see above.")

    def _styled(self, problem: CheckMessage) -> str:
        text = f"  {problem.id}: {problem.msg}"
        if problem.hint:
            text += f"\n    HINT: {problem.hint}"
        if problem.level >= ERROR:
            return str(self.style.ERROR(text))
        if problem.level >= WARNING:
            return str(self.style.WARNING(text))
        return str(self.style.NOTICE(text)) if problem.level >= INFO else text


def _where(registration: Registration) -> str:
    """Say where a listener runs: inline, background, or task with its queue and retries."""
    task = registration.task
    if task is None:
        return registration.runs
    options = task.options
    return (
        f"task(queue={task.task.queue_name}, backend={task.task.backend}, "
        f"retries={options.retries})"
    )


# Seconds the channel layer has to answer ``events check``.
_PROBE_TIMEOUT = 5


def _unreachable(alias: str | None, name: str, exc: BaseException) -> str:
    """Say that the layer did not answer, where it was looked for, and what to do."""
    hosts = redis_hosts(alias) if alias else None
    where = f" at {', '.join(host.address for host in hosts)}" if hosts else ""
    if isinstance(exc, asyncio.TimeoutError):
        reason = f"no answer within {_PROBE_TIMEOUT} s"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    fix = (
        f"Start Redis there, or correct CHANNEL_LAYERS[{alias!r}]['CONFIG']['hosts']."
        if hosts
        else f"Check CHANNEL_LAYERS[{alias!r}]."
    )
    return f"Channel layer {alias!r} ({name}){where} is not reachable ({reason}). {fix}"


async def _probe(layer: Any) -> None:
    channel = await layer.new_channel("channels_events.check.")
    await layer.send(channel, {"type": "channels_events.ping"})
    message = await layer.receive(channel)
    if message.get("type") != "channels_events.ping":  # pragma: no cover - defensive
        raise RuntimeError(f"unexpected reply {message!r}")

"""Run channels-events in separate OS processes, for tests of the hub across processes.

The child side is a small command line, ``python -m tests.hubproc <role> ...``,
run with ``DJANGO_SETTINGS_MODULE=tests.hubproc_settings``. Every child prints
one JSON object per line on stdout, each with a ``kind``:

``listen``
    Connects a listener for each ``--pattern``, calls ``start_hub()``, prints
    ``ready`` once the hub has joined its groups, then ``event`` for every
    event it receives, and ``done`` when ``--count`` events arrived, an event
    matching ``--until`` arrived, an event with ``"last": true`` in its payload
    arrived (``--stop-on-last``), or ``--timeout`` passed.
``send``
    Dispatches ``--count`` events named ``--name`` (or saves a model inside a
    transaction with ``--save commit|rollback``), prints ``sent``, optionally
    dispatches a ``--marker`` event, prints ``done`` and exits, leaving the
    hub's exit-time flush to publish what is still queued. With ``--pattern``
    it also listens (and waits for ``ready``) like ``listen``. The last line,
    ``exit``, is printed after that flush and counts the messages the hub
    handed to the channel layer.

The parent side is :class:`HubProcess`, which starts a child and collects its
lines from a reader thread, and :func:`hub_env`, which builds its environment.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_MODULE = "tests.hubproc_settings"
ORDER_PAID = "shop::order::paid"

Record = dict[str, Any]

# --------------------------------------------------------------------------- parent side


def hub_env(
    redis_url: str, prefix: str, layer: str = "core", **extra: str | float | None
) -> dict[str, str]:
    """Return the environment of a child: settings module, layer, Redis URL and prefix.

    ``extra`` keys are upper-cased and prefixed with ``CE_HUB_`` (``db=...``
    sets ``CE_HUB_DB``); None values are left out.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    env["PYTHONUNBUFFERED"] = "1"
    env["CE_HUB_LAYER"] = layer
    env["CE_HUB_REDIS_URL"] = redis_url
    env["CE_HUB_PREFIX"] = prefix
    for key, value in extra.items():
        if value is not None:
            env[f"CE_HUB_{key.upper()}"] = str(value)
    return env


class HubProcess:
    """A child process running ``python -m tests.hubproc``, with its output collected."""

    def __init__(self, name: str, role: str, args: Iterable[str], env: dict[str, str]) -> None:
        self.name = name
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.hubproc", role, *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.records: list[Record] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                record = {"kind": "text", "text": line.rstrip("\n")}
            if not isinstance(record, dict):
                record = {"kind": "text", "text": line.rstrip("\n")}
            with self._changed:
                self.records.append(record)
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.stderr.append(line.rstrip("\n"))
                self._changed.notify_all()

    def of_kind(self, kind: str) -> list[Record]:
        """Return the records of one kind received so far, in order."""
        with self._changed:
            return [record for record in self.records if record.get("kind") == kind]

    @property
    def events(self) -> list[Record]:
        """Return the ``event`` records received so far, in order."""
        return self.of_kind("event")

    def wait_until(
        self, condition: Callable[[list[Record]], Any], timeout: float, what: str
    ) -> Any:
        """Wait until ``condition(records)`` is truthy and return it; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = condition(self.records)
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    break
                self._changed.wait(min(remaining, 0.5))
        state = "exited" if self._eof else f"still running after {timeout:.0f}s"
        raise AssertionError(f"{self.name}: {what} never happened ({state}).\n{self.describe()}")

    def wait_for(self, kind: str, timeout: float) -> Record:
        """Wait for the first record of ``kind`` and return it."""

        def first(records: list[Record]) -> Record | None:
            return next((r for r in records if r.get("kind") == kind), None)

        result: Record = self.wait_until(first, timeout, f"a {kind!r} line")
        return result

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit and its output to be read; return its exit code."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout:.0f}s.\n{self.describe()}"
            ) from None
        for reader in self._readers:
            reader.join(5)
        return code

    def tell(self, line: str) -> None:
        """Write one line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """Kill the child if it still runs, and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        for reader in self._readers:
            reader.join(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                # Closing stdin of a dead child can raise BrokenPipeError.
                with contextlib.suppress(OSError):
                    stream.close()

    def describe(self) -> str:
        """Return the child's command, exit code, stdout records and stderr, for failures."""
        with self._changed:
            records = list(self.records)
            stderr = list(self.stderr)
        lines = [
            f"--- {self.name}: {' '.join(map(str, self.proc.args))} (exit code {self.proc.poll()})",
            f"stdout ({len(records)} line(s)):",
            *(json.dumps(record) for record in records[-40:]),
            f"stderr ({len(stderr)} line(s)):",
            *stderr[-40:],
        ]
        return "\n".join(lines)


# --------------------------------------------------------------------------- child side

_print_lock = threading.Lock()


def emit(kind: str, **data: Any) -> None:
    """Print one JSON line for the parent."""
    line = json.dumps({"kind": kind, **data}, default=str)
    with _print_lock:
        print(line, flush=True)


def declare_order_paid() -> type[Any]:
    """Declare the Event subclass of ``shop::order::paid`` in this process."""
    from channels_events import Event

    class OrderPaid(Event):
        name = ORDER_PAID
        order: int
        amount: str = "0.00"

    return OrderPaid


class Recorder:
    """A listener that prints every event it gets and notices when to stop."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.count = 0
        self.limit = args.count if args.role == "listen" else 0
        self.until = re.compile(args.until) if args.until else None
        self.stop_on_last = args.stop_on_last
        self.done = threading.Event()
        self.reason = "timeout"
        self._lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        from channels_events import Event

        fields = {field: getattr(event, field) for field in type(event)._fields}
        emit(
            "event",
            name=event.name,
            cls=type(event).__qualname__,
            base=type(event) is Event,
            fields=fields,
            payload=event.payload,
            id=event.id,
            timestamp=event.timestamp,
            instance_none=event.instance is None,
            main_thread=threading.current_thread() is threading.main_thread(),
            at=time.time(),
        )
        with self._lock:
            self.count += 1
            if self.limit and self.count >= self.limit:
                self.reason = "count"
            elif self.until is not None and self.until.fullmatch(event.name):
                self.reason = "until"
            elif self.stop_on_last and event.payload.get("last"):
                self.reason = "last"
            else:
                return
        self.done.set()


def _setup() -> None:
    import logging

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    django.setup()


def _listen_and_wait_ready(args: argparse.Namespace, recorder: Recorder) -> Any:
    from channels_events import connect
    from channels_events._hub import group_name, start_hub

    for pattern in args.pattern:
        connect(recorder, pattern)
    hub = start_hub()
    deadline = time.monotonic() + args.ready_timeout
    while True:
        wanted = {group_name(ns) for ns in hub.wanted_namespaces()}
        if hub.receiving and wanted and wanted <= hub.joined_groups:
            break
        if time.monotonic() > deadline:
            emit("error", message=f"groups {sorted(wanted)} not joined; joined {hub.joined_groups}")
            sys.exit(3)
        time.sleep(0.02)
    emit("ready", groups=sorted(hub.joined_groups), origin=hub.origin, pid=os.getpid())
    return hub


def run_listen(args: argparse.Namespace) -> None:
    """Print the events that other processes publish, then ``done``."""
    _setup()
    if args.declare:
        declare_order_paid()
    recorder = Recorder(args)
    hub = _listen_and_wait_ready(args, recorder)
    finished = recorder.done.wait(args.timeout)
    if finished and args.linger:
        time.sleep(args.linger)
    emit("done", events=recorder.count, reason=recorder.reason, hub_received=hub.received)


def _count_sends(hub: Any, counts: dict[str, Any]) -> None:
    """Wrap the layer's ``group_send`` to count, in ``counts``, what the hub handed over."""
    counts.update(messages=0, single=0, batch=0, events=0, groups={})
    layer = hub.layer
    original = layer.group_send

    async def counting_group_send(group: str, message: dict[str, Any]) -> None:
        await original(group, message)
        counts["messages"] += 1
        if "events" in message:
            counts["batch"] += 1
            counts["events"] += len(message["events"])
        else:
            counts["single"] += 1
            counts["events"] += 1
        counts["groups"][group] = counts["groups"].get(group, 0) + 1

    layer.group_send = counting_group_send


def _save_order(args: argparse.Namespace) -> None:
    from django.core.management import call_command
    from django.db import transaction

    from channels_events import observe
    from tests.testapp.models import Order

    call_command("migrate", verbosity=0, interactive=False)
    observe(Order)
    with transaction.atomic():
        order = Order.objects.create(number=args.number, status="paid")
        emit("saved", pk=order.pk, at=time.time())
        time.sleep(args.hold)
        if args.save == "rollback":
            transaction.set_rollback(True)
        emit("committing", at=time.time())
    emit("committed" if args.save == "commit" else "rolled_back", at=time.time())


def _unsent(hub: Any) -> int | None:
    """Return how many events the hub still holds: queued, or in a run being sent."""
    if hub is None:
        return None
    return int(hub.queued)


def run_send(args: argparse.Namespace) -> None:
    """Dispatch events (or save a model), print ``sent`` and ``done``; the hub flushes at exit."""
    counts: dict[str, Any] = {}

    def report_at_exit() -> None:
        # Registered before django.setup() creates the hub, so it runs after
        # the hub's own exit handler has flushed the outbox (atexit is LIFO).
        from channels_events._hub import _hub

        emit("exit", sends=counts, unsent=_unsent(_hub), at=time.time())

    atexit.register(report_at_exit)
    _setup()

    from channels_events import Event, dispatch
    from channels_events._hub import get_hub

    hub = get_hub()
    if args.count_sends:
        _count_sends(hub, counts)
    order_paid = declare_order_paid() if args.declare else None
    recorder = Recorder(args)
    if args.pattern:
        hub = _listen_and_wait_ready(args, recorder)
    gate = threading.Event()
    if args.pause_hub:
        # Hold the hub's loop so that the whole burst is queued before the
        # sender runs: the coalescing is then deterministic.
        hub.start_thread(receive=False)
        assert hub.loop is not None
        hub.loop.call_soon_threadsafe(gate.wait, 30)

    payload = json.loads(args.payload)
    started = time.perf_counter()
    if args.save:
        _save_order(args)
    else:
        for n in range(args.count):
            data = dict(payload)
            if args.numbered:
                data.update(n=n, last=n == args.count - 1)
            if order_paid is not None and args.name == ORDER_PAID:
                dispatch(order_paid(**data))
            else:
                dispatch(Event(args.name, data))
            if args.interval:
                time.sleep(args.interval)
    elapsed = time.perf_counter() - started
    emit("sent", count=args.count, elapsed=elapsed, at=time.time())
    if args.marker:
        time.sleep(args.marker_delay)
        dispatch(Event(args.marker, {}))
        emit("marker", at=time.time())
    gate.set()
    if args.wait_stdin:
        sys.stdin.readline()
    if args.linger:
        time.sleep(args.linger)
    emit("done", local=recorder.count, hub_received=hub.received, dropped=hub.dropped)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the child's command line."""
    parser = argparse.ArgumentParser(prog="python -m tests.hubproc")
    roles = parser.add_subparsers(dest="role", required=True)
    for role in ("listen", "send"):
        sub = roles.add_parser(role)
        sub.add_argument("--pattern", action="append", default=[], help="listen for this")
        sub.add_argument("--declare", action="store_true", help="declare OrderPaid here")
        sub.add_argument("--until", help="stop after an event whose name matches this")
        sub.add_argument("--stop-on-last", action="store_true")
        sub.add_argument("--ready-timeout", type=float, default=30.0)
        sub.add_argument("--linger", type=float, default=0.0, help="seconds to wait at the end")
    listen = roles.choices["listen"]
    listen.add_argument("--count", type=int, default=0, help="stop after this many events")
    listen.add_argument("--timeout", type=float, default=30.0)
    send = roles.choices["send"]
    send.add_argument("--name", default="shop::tick")
    send.add_argument("--count", type=int, default=1)
    send.add_argument("--payload", default="{}", help="a JSON object")
    send.add_argument("--numbered", action="store_true", help='add "n" and "last"')
    send.add_argument("--interval", type=float, default=0.0)
    send.add_argument("--marker", help="dispatch an event with this name at the end")
    send.add_argument("--marker-delay", type=float, default=0.0)
    send.add_argument("--save", choices=["commit", "rollback"])
    send.add_argument("--number", default="A-1", help="Order.number with --save")
    send.add_argument("--hold", type=float, default=0.0, help="seconds inside the transaction")
    send.add_argument("--pause-hub", action="store_true")
    send.add_argument("--count-sends", action="store_true")
    send.add_argument("--wait-stdin", action="store_true", help="wait for a line before done")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run one role."""
    args = parse_args(argv)
    if args.role == "listen":
        run_listen(args)
    else:
        run_send(args)


if __name__ == "__main__":
    main()

"""What observing a model costs a save: no observer, an Observer, a post_save receiver.

Run from the repository root:

    .venv/bin/python bench/observers.py

Uses the test suite's settings (SQLite in memory) and the ``Plain`` test
model. For each setup it times ``Plain.objects.create()`` and ``save()`` of an
existing row whose ``status`` changed, in microseconds per call:

- ``no observer``: plain Django;
- ``Observer``: an Observer class with ``created`` and ``updated`` methods
  that keep the event (channels-events builds the payload, ``changed`` and
  ``previous``, and dispatches ``created`` or ``updated``), with no channel
  layer, so nothing is published;
- ``Observer + publish``: the same, publishing every event through the hub to
  the in-memory channel layer (the caller's share of publishing: queueing the
  event; the hub's thread does the sending);
- ``post_save receiver``: plain Django signals doing the same work by hand:
  a ``post_init`` receiver keeps each instance's JSON-safe field values, and
  a ``post_save`` receiver builds the same ``{model, pk, fields}`` payload
  (plus ``changed`` and ``previous`` on updates) and keeps it.

A second part times ``save()`` of an observed row with one listener on its
``updated`` event that takes 10 ms (``bench/slow_listener.py``), connected
three ways: ``inline`` (it runs inside ``save()``), ``background`` (queued
for the process's background pool) and ``task`` (enqueued as a Django task
through the ``django-tasks-db`` database backend, in the same database; no
worker runs it here). The figure is the caller's time per ``save()``,
median of ``--slow-rounds`` rounds of ``--slow-count`` saves; the pool is
drained, and the task rows deleted, between setups, untimed.

Each figure is the best of several rounds; a second table gives each setup's
extra time over plain Django, measured within each round, as the median over
rounds (the machine drifts between rounds by more than the setups differ).
Setups alternate within a round,
and each round starts one setup later than the one before; all of them run
under the same settings override (the hub's thread is left idle between
setups), so none pays for another's settings or publishing.
``--signal-time`` also reports how much of each ``save()`` is spent in
Django's ``post_save.send`` (the receivers' share), timed around that call.
``CHANNELS_EVENTS_TEST_DB=postgres`` runs it on PostgreSQL (127.0.0.1, user
postgres, database ``channels_events``, which must exist).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.setdefault("CHANNELS_EVENTS_TEST_DB", "sqlite")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models.signals import post_init, post_save  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from bench.slow_listener import take_10ms  # noqa: E402
from channels_events import drain, get_dispatcher  # noqa: E402
from channels_events._json import json_safe  # noqa: E402
from channels_events._observers import Observer, observe, unobserve  # noqa: E402
from tests.testapp.models import Plain  # noqa: E402

FIELDS = [(f.name, f.attname) for f in Plain._meta.concrete_fields]
kept: list[Any] = []


def remember(sender: type[Plain], instance: Plain, **kwargs: Any) -> None:
    values = instance.__dict__
    instance._loaded = {name: json_safe(values[attname]) for name, attname in FIELDS}


def receiver(sender: type[Plain], instance: Plain, created: bool, **kwargs: Any) -> None:
    values = instance.__dict__
    fields = {name: json_safe(values[attname]) for name, attname in FIELDS}
    payload: dict[str, Any] = {"model": Plain._meta.label_lower, "pk": instance.pk}
    payload["fields"] = fields
    if not created:
        loaded = instance._loaded
        changed = [name for name, value in fields.items() if loaded.get(name) != value]
        payload["changed"] = changed
        payload["previous"] = {name: loaded[name] for name in changed}
    instance._loaded = fields
    kept.append(payload)


def connect_receivers() -> None:
    post_init.connect(remember, sender=Plain)
    post_save.connect(receiver, sender=Plain)


def disconnect_receivers() -> None:
    post_init.disconnect(remember, sender=Plain)
    post_save.disconnect(receiver, sender=Plain)


def observe_with_class() -> None:
    class PlainObserver(Observer):
        model = Plain

        def created(self, event: Any) -> None:
            kept.append(event.payload)

        def updated(self, event: Any) -> None:
            kept.append(event.payload)


# Every setup runs under the same overridden settings (Django reads settings
# on each save, and an override makes that slower); only "Observer + publish"
# turns the channel layer back on.
no_layer = override_settings(CHANNELS_EVENTS={"CHANNEL_LAYER": None})
with_layer = override_settings(CHANNELS_EVENTS={})


def observe_with_layer() -> None:
    with_layer.enable()
    observe_with_class()


def stop_observing_with_layer() -> None:
    stop_observing()
    with_layer.disable()


def stop_observing() -> None:
    from channels_events import get_dispatcher
    from channels_events._hub import get_hub

    unobserve(Plain)
    get_dispatcher().clear()
    # The hub's thread publishes what was queued: let it finish before the
    # next setup's timing starts, or that setup pays for it.
    get_hub().flush()


class SignalTimer:
    """Time the calls of ``post_save.send`` while installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._send = post_save.send

    def send(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self._send(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1

    def install(self) -> None:
        post_save.send = self.send  # type: ignore[method-assign]

    def per_call_us(self) -> float:
        per_call = self.seconds / self.calls * 1e6 if self.calls else 0.0
        self.seconds, self.calls = 0.0, 0
        return per_call


timer: SignalTimer | None = None


def run(count: int) -> tuple[float, float]:
    """Return microseconds per create and per save."""
    Plain.objects.all().delete()
    start = time.perf_counter()
    objs = [Plain.objects.create(number=f"A-{i}", total="19.90") for i in range(count)]
    created = time.perf_counter() - start
    for obj in objs:
        obj.status = "paid"
    start = time.perf_counter()
    if timer is not None:
        timer.per_call_us()  # count the saves only
    for obj in objs:
        obj.save()
    saved = time.perf_counter() - start
    kept.clear()
    return created / count * 1e6, saved / count * 1e6


# The Tasks backend of the "task" setup: rows in the database the saves use.
with_tasks = override_settings(
    TASKS={"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}},
    CHANNELS_EVENTS={"CHANNEL_LAYER": None},
)


def run_slow(mode: str, count: int) -> float:
    """Return the caller's microseconds per save() with a 10 ms listener run as ``mode``."""
    from django_tasks_db.models import DBTaskResult

    observation = observe(Plain)
    options: dict[str, Any] = {"background": mode == "background", "task": mode == "task"}
    get_dispatcher().connect(take_10ms, re.escape(observation.names["updated"]), **options)
    try:
        objs = [Plain.objects.create(number=f"S-{i}", total="1.00") for i in range(count)]
        for obj in objs:
            obj.status = "paid"
        start = time.perf_counter()
        for obj in objs:
            obj.save()
        elapsed = time.perf_counter() - start
    finally:
        get_dispatcher().disconnect(take_10ms)
        unobserve(Plain)
    drain()
    DBTaskResult.objects.all().delete()
    Plain.objects.all().delete()
    return elapsed / count * 1e6


def slow_listener_table(count: int, rounds: int) -> None:
    """Print the caller's time per save() with a 10 ms listener, inline, background, task."""
    modes = ["inline", "background", "task"]
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    with_tasks.enable()
    try:
        run_slow("task", 5)  # warm up: the backend, the pool's thread
        run_slow("background", 5)
        for round_ in range(rounds):
            for mode in modes[round_ % 3 :] + modes[: round_ % 3]:
                times[mode].append(run_slow(mode, count))
    finally:
        with_tasks.disable()
    inline = statistics.median(times["inline"])
    print(
        f"\nObserved save() with a listener that takes 10 ms (median of {rounds} rounds x "
        f"{count} saves; the caller's time):\n"
    )
    print("| listener runs | save() | vs inline |")
    print("| --- | ---: | ---: |")
    for mode in modes:
        median = statistics.median(times[mode])
        print(f"| {mode} | {median:.1f} us | {median / inline:.3f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--signal-time",
        action="store_true",
        help="also report the time per save spent in post_save.send",
    )
    parser.add_argument("--slow-count", type=int, default=40)
    parser.add_argument("--slow-rounds", type=int, default=5)
    args = parser.parse_args()
    global timer
    if args.signal_time:
        timer = SignalTimer()
        timer.install()
    call_command("migrate", verbosity=0)
    setups = {
        "no observer": (lambda: None, lambda: None),
        "Observer": (observe_with_class, stop_observing),
        "Observer + publish": (observe_with_layer, stop_observing_with_layer),
        "post_save receiver": (connect_receivers, disconnect_receivers),
    }
    # Per setup, the (create, save) times of each round.
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
    in_signal: dict[str, float] = {}
    no_layer.enable()
    observe_with_layer()
    run(args.count)  # warm up, and start the hub's thread outside the timings
    stop_observing_with_layer()
    names = list(setups)
    for round_ in range(args.rounds):
        # Each round starts one setup later, so that each follows every other.
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start, stop = setups[name]
            start()
            try:
                create_us, save_us = run(args.count)
            finally:
                stop()
            if timer is not None:
                per_call = timer.per_call_us()
                in_signal[name] = min(in_signal.get(name, per_call), per_call)
            rounds[name].append((create_us, save_us))
    best = {
        name: [min(column) for column in zip(*times, strict=True)] for name, times in rounds.items()
    }
    base_create, base_save = best["no observer"]
    database = connection.vendor + (" in memory" if connection.vendor == "sqlite" else "")
    print(f"{database}, best of {args.rounds} rounds x {args.count} rows\n")
    print("| setup | create() | vs plain | save() | vs plain |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (create_us, save_us) in best.items():
        print(
            f"| {name} | {create_us:.1f} us | {create_us / base_create:.2f}x "
            f"| {save_us:.1f} us | {save_us / base_save:.2f}x |"
        )
    # The machine drifts from round to round by more than the setups differ;
    # a setup's extra cost over plain Django within the same round does not.
    print("\nExtra time per call over no observer in the same round (median of rounds):\n")
    print("| setup | create() | save() |")
    print("| --- | ---: | ---: |")
    for name, times in rounds.items():
        if name == "no observer":
            continue
        extra = [
            (create_us - plain[0], save_us - plain[1])
            for (create_us, save_us), plain in zip(times, rounds["no observer"], strict=True)
        ]
        create_extra, save_extra = (
            statistics.median(column) for column in zip(*extra, strict=True)
        )
        print(f"| {name} | {create_extra:+.1f} us | {save_extra:+.1f} us |")
    if in_signal:
        print("\nTime per save() in post_save.send (best round):\n")
        for name, per_call in in_signal.items():
            print(f"- {name}: {per_call:.2f} us")
    no_layer.disable()
    if args.slow_rounds:
        slow_listener_table(args.slow_count, args.slow_rounds)


if __name__ == "__main__":
    main()
